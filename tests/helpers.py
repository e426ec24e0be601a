"""Small helpers several test files share (imported as `from helpers import ...`: pytest puts tests/ on
sys.path). The oracles and the error measure are fixtures in conftest.py."""
from __future__ import annotations

import torch

from retnet_ref.retention import chunkwise_retention, parallel_retention, recurrent_retention


def token_ids(batch: int = 2, length: int = 37, vocab: int = 256, seed: int = 1) -> torch.Tensor:
    """Seeded random token ids (batch, length) in [0, vocab)."""
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def run_form(form, q, k, v, gamma, state=None, chunk_size=4):
    """(o, state) for every form; the parallel form takes no state and returns None for it."""
    if form == "parallel":
        assert state is None
        return parallel_retention(q, k, v, gamma), None
    if form == "recurrent":
        return recurrent_retention(q, k, v, gamma, state=state)
    return chunkwise_retention(q, k, v, gamma, chunk_size, state=state)
