"""torch.compile(fullgraph=True) traces every retention form and the model's decode step without a
graph break.

A graph break means that some Python code reads a tensor's value or calls something dynamo cannot
trace: on a GPU that is a host synchronisation or a host copy in the middle of a step, and it stops
CUDA graphs. The "eager" backend runs the traced graph with ordinary kernels, so these tests cost
seconds on a CPU, and each compiled result is compared with the uncompiled one (they must be the
same numbers).
"""
from __future__ import annotations

import pytest
import torch

from retnet_ref.decay import gamma_schedule
from retnet_ref.model import RetNet, RetNetConfig
from retnet_ref.retention import chunkwise_retention, parallel_retention, recurrent_retention

B, H, T, D_K, D_V = 2, 4, 37, 8, 6
GAMMA = gamma_schedule(H).tolist()


def compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend="eager")


def inputs(length=T, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, length, D_K, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, length, D_V, generator=gen, dtype=torch.float64)
    return q, k, v, torch.randn(B, H, D_K, D_V, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("gamma", [GAMMA, torch.tensor(GAMMA)], ids=["list", "tensor"])
def test_parallel_compiles_without_graph_break(gamma):
    q, k, v, _ = inputs()
    assert torch.equal(compiled(parallel_retention)(q, k, v, gamma),
                       parallel_retention(q, k, v, gamma))


@pytest.mark.parametrize("chunk_size", [8, 37, 64])    # ragged last chunk, one chunk, longer than T
def test_chunkwise_compiles_without_graph_break(chunk_size):
    q, k, v, S0 = inputs()
    o, S = compiled(chunkwise_retention)(q, k, v, GAMMA, chunk_size, state=S0)
    o_eager, S_eager = chunkwise_retention(q, k, v, GAMMA, chunk_size, state=S0)
    assert torch.equal(o, o_eager) and torch.equal(S, S_eager)


@pytest.mark.parametrize("gamma", [GAMMA, torch.tensor(GAMMA)], ids=["list", "tensor"])
def test_one_recurrent_step_compiles_without_graph_break(gamma):
    q, k, v, S0 = inputs(length=1)
    o, S = compiled(recurrent_retention)(q, k, v, gamma, state=S0)
    o_eager, S_eager = recurrent_retention(q, k, v, gamma, state=S0)
    assert torch.equal(o, o_eager) and torch.equal(S, S_eager)


def test_model_decode_step_compiles_and_equals_the_full_forward():
    torch.manual_seed(0)
    model = RetNet(RetNetConfig.preset("tiny")).double().eval()
    tokens = torch.randint(0, model.config.vocab_size, (2, 9),
                           generator=torch.Generator().manual_seed(1))
    step = compiled(model.decode_step)
    with torch.no_grad():
        full, _ = model(tokens, "parallel")
        _, state = model(tokens[:, :5], "chunkwise", 4)
        for t in range(5, 9):
            logits = step(tokens[:, t], state)
            assert (logits - full[:, t]).abs().max() <= 1e-12 * full[:, t].abs().max()
    assert state.n == 9
