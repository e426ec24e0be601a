"""retnet_ref: a derivation and reference implementation of the Retentive Network (Sun et al. 2023).

Modules, one concept each:
    reference    float64 NumPy equations, one head (the ground truth)
    rotation     θ schedule, complex and real-pair rotation
    decay        γ schedules, D, ζ, ξ and the closed-form decay sums
    retention    batched PyTorch forms: parallel, recurrent, chunkwise
    state        what a layer and the model carry between calls (RetentionState, RetNetState), the
                 modes
    normalisation  the paper's three score normalisations, exact in every form
    torchscale   the official code's per-mode row scales and the conversion of its RetNetDecoder
    layers       MultiScaleRetention, FeedForward, RetNetBlock
    presets      the model sizes both language models share (tiny and the paper's 1.3B, 2.7B, 6.7B)
    model        RetNetConfig, the RetNet language model
    generation   sampling and the prefill-then-step decoding loop shared by the models
    transformer  the Transformer baseline of the same budget, with a KV cache
    cost         analytic flop and memory models of the forms and of decoding
    numerics     rounding error against length (behind the tolerances)
    proofs       SymPy proofs used by the notebooks and the tests, one module per chapter
    checking     the numeric-check kit (error measure, seeded inputs, tolerances) and the notebooks'
                 check line; exercises: the checks behind every exercise
    diagrams     the structure pictures (chunk split, recurrent update, MSR layer, block)
    verify       the numeric equivalence report (python -m retnet_ref verify)
    plots        figure style and saving
"""
__version__ = "0.1.0"
