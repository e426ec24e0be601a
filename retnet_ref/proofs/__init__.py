"""The SymPy proofs behind the notebooks, one module per chapter; tests/ runs every one of them.

    common               an identity checker and symbolic retention (Q, K, V, D, Θ; parallel,
                         recurrence)
    ch01_recurrence      the recurrence unrolled, causal scores, the rotation-scaling block
                         diagonalised
    ch02_rotation_decay  decay × rotation, effective memory, relative positions
    ch03_parallel        Eq. 5 = the unrolled recurrence
    ch04_recurrent       Eq. 6: the state's closed form, the state hand-off
    ch05_chunkwise       Eq. 7: the exponents, every small case, the published variants
    ch06_multiscale      GroupNorm and scale, row sums, running key sum, the normalisations, swish
    ch07_model           the parameter budget

Each proof returns the objects its notebook displays.
"""
