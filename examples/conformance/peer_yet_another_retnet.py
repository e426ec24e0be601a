"""yet-another-retnet 0.5.1: its three retention functions behind the conformance signature.

Its conventions, declared below: layout (B, H, T, d), state (B, H, d_k, d_v) in the input dtype; γ
from the linspace schedule 1 - exp(linspace(log 1/32, log 1/512, H)), built inside in the input's
dtype; keys divided by `scale` (1 here: plain q·k). `retention_chunkwise` is one chunk with a
carried state, so it serves as the parallel form with a state, and, called chunk by chunk, as the
chunkwise form.

    pip install --no-deps yet-another-retnet==0.5.1 einops
    python -m retnet_ref verify --impl examples/conformance/peer_yet_another_retnet.py:forms

What the report finds: float64 and float32 agree with ours; in bfloat16 its γ and positions are
rounded to 8 bits, and the error grows along the sequence.
"""
import torch
from yet_another_retnet.retention import retention_chunkwise, retention_recurrent

from retnet_ref.conformance import Conventions, Implementation


def retention(q, k, v, gamma, form, chunk_size=None, state=None):
    """(o, S_T); γ is its own (the report passes the same linspace schedule, which it ignores)."""
    if form == "parallel":
        return retention_chunkwise(q, k, v, state, scale=1.0)
    step = 1 if form == "recurrent" else chunk_size
    out = []
    for start in range(0, q.shape[2], step):
        if form == "recurrent":
            o, state = retention_recurrent(q[:, :, start], k[:, :, start], v[:, :, start], state,
                                           scale=1.0)
            o = o[:, :, None]                                                # (B, H, 1, d_v)
        else:
            o, state = retention_chunkwise(*(x[:, :, start:start + step] for x in (q, k, v)), state,
                                           scale=1.0)
        out.append(o)
    return torch.cat(out, dim=2), state                                      # (B, H, T, d_v)


forms = Implementation(retention, Conventions(gamma="linspace", state_dtype="input"),
                       "yet-another-retnet 0.5.1")
