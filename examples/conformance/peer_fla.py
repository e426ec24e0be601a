"""fla's plain PyTorch retention, `naive_retention(q, k, v)` (fla-core 0.6.0,
flash-linear-attention).

Its conventions, declared below: layout (B, H, T, d); the default schedule γ_h = 1 - 2^(-5-h), built
inside from the number of heads; q·k scaled by 1/√d_k; the parallel form only; no state in or out.

    pip install --no-deps fla-core==0.6.0
    python -m retnet_ref verify --impl examples/conformance/peer_fla.py:naive --long

What the report finds: float64 rows at float32's rounding level (it computes in float32 whatever the
input), and NaN at the long length (γ^(n-m) as exp2 of a positive exponent above the diagonal, then
masked by multiplication: inf · 0).
"""
from fla.ops.retention.naive import naive_retention

from retnet_ref.conformance import RSQRT_DK, Conventions, Implementation


def parallel(q, k, v, gamma, form, chunk_size=None, state=None):
    """γ is its own: the report passes the same default schedule, which it ignores."""
    return naive_retention(q, k, v)


naive = Implementation(parallel, Conventions(gamma="default", scale=RSQRT_DK, forms=("parallel",),
                                             initial_state=False, final_state=False),
                       "fla naive_retention")
