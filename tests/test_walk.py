"""The walk experiment (retnet_ref.kernels.walk) against the float64 forms and the kept kernels'
chunk states, under the interpreter on a CPU and compiled on a GPU."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton",
                    reason="the Triton kernels need Triton (pip install 'retnet_ref[triton]')")

from retnet_ref.checking import TOLERANCE, relative_error  # noqa: E402
from retnet_ref.kernels import chunkwise  # noqa: E402
from retnet_ref.kernels.walk import walk_forward  # noqa: E402
from retnet_ref.retention import chunkwise_retention, log_gamma_per_head  # noqa: E402
from tests.test_kernels import DEVICES, GAMMAS, inputs  # noqa: E402


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("segment_chunks", [None, 1, 2, 5])
@pytest.mark.parametrize("tile", [chunkwise.Tile(32, 16), chunkwise.Tile(64, 128)])
def test_walk_is_the_same_forward(device, segment_chunks, tile):
    """70 tokens in chunks of 16 (the last ragged), d_k = 32, d_v = 80 in blocks of 16 or one:
    the float64 outputs and final state, and the states the kept pass 1 stores."""
    (q64, k64, v64, _), (q, k, v, _) = inputs(device, torch.float32, 70, seed=5)
    o_ref, R_ref = chunkwise_retention(q64, k64, v64, GAMMAS, 7)
    o, R, states = walk_forward(q, k, v, GAMMAS, 16, store_states=True,
                                segment_chunks=segment_chunks, tile=tile)
    tol = TOLERANCE[torch.float32]
    assert relative_error(o, o_ref) < tol and relative_error(R, R_ref) < tol
    kept, _ = chunkwise._chunk_states(k.reshape(8, 70, 32), v.reshape(8, 70, 80), None,
                                      log_gamma_per_head(GAMMAS, q), 16, 5, False,
                                      chunkwise.WIDE_STATES)
    assert relative_error(states, kept) < tol


def test_walk_needs_whole_rows_of_the_state():
    _, (q, k, v, _) = inputs("cpu", torch.float32, 16)
    with pytest.raises(ValueError, match="block_k must be at least d_k"):
        walk_forward(q, k, v, GAMMAS, 16, tile=chunkwise.Tile(16, 64))
