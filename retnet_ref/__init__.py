"""retnet_ref: a derivation and reference implementation of the Retentive Network (Sun et al. 2023).

Modules, one concept each:
    reference   float64 NumPy equations, one head (the ground truth)
    rotation    θ schedule, complex and real-pair rotation
    decay       γ schedules, D, ζ, ξ and the closed-form normalisers
    retention   batched PyTorch forms: parallel, recurrent, chunkwise
    verify      the numeric equivalence report (python -m retnet_ref verify)
    plots       figure style and saving
"""
__version__ = "0.1.0"
