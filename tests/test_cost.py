"""The analytic cost models: hand counts at small sizes, scaling laws, the two ends of the chunk
family."""
from __future__ import annotations

import pytest

from retnet_ref import cost


def test_parallel_hand_count():
    # T = 2, d_k = 3, d_v = 1: QK^T 2·4·3 = 24, ⊙D 4, (·)V 2·4·1 = 8
    assert cost.parallel_cost(2, 3, 1) == cost.Cost(flops=36, memory=8)


def test_recurrent_hand_count():
    assert cost.recurrent_cost(7, 2, 3) == cost.Cost(flops=5 * 7 * 6, memory=6)


def test_parallel_is_quadratic_recurrent_linear():
    p1, p2 = cost.parallel_cost(512, 64, 64), cost.parallel_cost(1024, 64, 64)
    r1, r2 = cost.recurrent_cost(512, 64, 64), cost.recurrent_cost(1024, 64, 64)
    assert p2.flops == 4 * p1.flops and p2.memory == 4 * p1.memory
    assert r2.flops == 2 * r1.flops and r2.memory == r1.memory


def test_chunkwise_single_chunk_is_parallel_plus_state_update():
    T, d_k, d_v = 64, 8, 4
    extra = 4 * T * d_k * d_v + 3 * T * d_v + 2 * d_k * d_v
    assert cost.chunkwise_cost(T, T, d_k, d_v).flops == cost.parallel_cost(T, d_k,
                                                                           d_v).flops + extra
    assert cost.chunkwise_cost(T, 10 * T, d_k, d_v) == cost.chunkwise_cost(T, T, d_k, d_v)


def test_chunkwise_one_token_chunks_near_recurrent():
    T, d = 256, 64
    ratio = cost.chunkwise_cost(T, 1, d, d).flops / cost.recurrent_cost(T, d, d).flops
    assert 1.2 < ratio < 1.25        # 6 d² + 7 d + 1 against 5 d² per token


def test_chunkwise_ragged_last_chunk_sums_chunks():
    whole = cost.chunkwise_cost(10, 4, 2, 2).flops
    assert whole == 2 * cost.chunkwise_cost(4, 4, 2,
                                            2).flops + cost.chunkwise_cost(2, 2, 2, 2).flops


def test_flop_optimal_chunk_size_is_the_minimum():
    T, d = 4096, 64
    best = min(range(1, 65), key=lambda B: cost.chunkwise_cost(T, B, d, d).flops)
    assert abs(best - cost.flop_optimal_chunk_size(d, d)) < 1


def test_kv_cache_and_state_of_the_6_7b_shape():
    shape = cost.RETNET_6_7B
    assert cost.kv_cache_bytes(8192, shape) == 2 * 8192 * 4096 * 32 * 2 == 4 * 2**30
    assert cost.retention_state_bytes(shape) == 32 * 16 * 256 * 512 * 2 == 128 * 2**20
    assert cost.retention_state_bytes(shape,
                                      dtype="float32") == 2 * cost.retention_state_bytes(shape)
    assert cost.cache_exceeds_state_length(shape) == 256
    assert (
        cost.kv_cache_bytes(256, shape)
        >= cost.retention_state_bytes(shape)
        > cost.kv_cache_bytes(255, shape)
    )


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), (2.0, TypeError),
                                        (True, TypeError)])
def test_rejects_non_positive_integer_sizes(bad, error):
    with pytest.raises(error, match="positive integer"):
        cost.parallel_cost(bad, 4, 4)
    with pytest.raises(error, match="positive integer"):
        cost.chunkwise_cost(8, bad, 4, 4)
