"""Analytic cost of the three retention forms, and the memory of decoding: KV cache against state.

Flops count every multiply and every add as one (a multiply-add is 2), for one head and one
sequence, exactly as retnet_ref.retention computes them (the parallel form fills the whole T×T score
matrix, the upper half included; building the decay factors, O(T²) exponentials or fewer, is left
out). Working memory counts the elements a form holds besides q, k, v and o.

    parallel   (Eq. 5)  O(T² d) time, O(T²) memory       one score matrix for the whole sequence
    recurrent  (Eq. 6)  O(T d_k d_v) time, O(d_k d_v)    one state, whatever T
    chunkwise  (Eq. 7)  O(T C d + T d_k d_v) time, O(C² + d_k d_v); C = 1 and C = T are the two ends

C is the chunk length (the paper's B; here B is the batch size, as in the shape comments).

Paper: Sun et al. 2023, Eq. (5)-(7); Table 1 (training parallel, O(1) inference per token, O(N)
memory for long sequences) and §3.4 (inference cost of the 6.7B model against a Transformer with a
KV cache).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ._checks import check_positive_int

BYTES_PER_ELEMENT = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Cost:
    """flops: multiplies + adds; memory: elements held besides q, k, v and o (one head, one
    sequence)."""
    flops: int
    memory: int


def _check_positive(**values) -> None:
    for name, value in values.items():
        check_positive_int(value, name)


def parallel_cost(length: int, d_k: int, d_v: int) -> Cost:
    """Eq. 5, O = (Q K^T ⊙ D) V:  Q K^T 2T²d_k, ⊙ D T², (·) V 2T²d_v;  memory D and the scores, 2T².

    retention.parallel_retention holds less: the scores (T² in the input dtype, float32 for float16
    inputs) and D as a view of 2T-1 numbers; it refuses scores that do not fit in the free memory.
    """
    _check_positive(length=length, d_k=d_k, d_v=d_v)
    T = length
    return Cost(flops=2 * T * T * d_k + T * T + 2 * T * T * d_v, memory=2 * T * T)


def recurrent_cost(length: int, d_k: int, d_v: int) -> Cost:
    """Eq. 6, per token: γ S, k^T v and their sum 3 d_k d_v; o = q S 2 d_k d_v;  memory the state
    d_k d_v."""
    _check_positive(length=length, d_k=d_k, d_v=d_v)
    return Cost(flops=5 * length * d_k * d_v, memory=d_k * d_v)


def _chunk_flops(L: int, d_k: int, d_v: int) -> int:
    """One chunk of length L of Eq. 7 (see chunkwise_cost)."""
    inner = 2 * L * L * d_k + L * L + 2 * L * L * d_v     # (Q K^T ⊙ D) V
    cross = 2 * L * d_k * d_v + L * d_v + L * d_v         # (Q R_{i-1}) ⊙ ξ, added to the inner term
    state = L * d_v + 2 * L * d_k * d_v + 2 * d_k * d_v   # K^T (V ⊙ ζ) + γ^L R_{i-1}
    return inner + cross + state


def chunkwise_cost(length: int, chunk_size: int, d_k: int, d_v: int) -> Cost:
    """Eq. 7 with chunks of C = chunk_size (the last one may be shorter), summed chunk by chunk.

    Per chunk of length L: inner term 2L²(d_k + d_v) + L², cross term 2L d_k d_v + 2L d_v, state
    update 2L d_k d_v + L d_v + 2 d_k d_v.  Memory: D and the scores of one chunk (2L²), ξ and ζ
    (2L), and the state d_k d_v.  C = 1 costs about 6/5 of the recurrent form, C = T the parallel
    form plus the state update (4T d_k d_v + ...): one family with those two ends.
    """
    _check_positive(length=length, chunk_size=chunk_size, d_k=d_k, d_v=d_v)
    full, last = divmod(length, chunk_size)
    flops = full * _chunk_flops(chunk_size, d_k, d_v) + (_chunk_flops(last, d_k, d_v) if last
                                                         else 0)
    L = min(chunk_size, length)
    return Cost(flops=flops, memory=2 * L * L + 2 * L + d_k * d_v)


def flop_optimal_chunk_size(d_k: int, d_v: int) -> float:
    """The C that minimises chunkwise flops per token for T ≫ C, a real number.

    Per token the chunk costs 2C(d_k + d_v) + C + 2 d_k d_v / C + (terms without C), smallest at
    C* = sqrt(2 d_k d_v / (2(d_k + d_v) + 1)).  Real hardware prefers far larger C: matrix products
    of size C run much faster per flop than the d_k × d_v updates of a small chunk.
    """
    _check_positive(d_k=d_k, d_v=d_v)
    return math.sqrt(2 * d_k * d_v / (2 * (d_k + d_v) + 1))


# ---------------------------------------------------------------- decoding memory: KV cache vs
# state


@dataclass(frozen=True)
class ModelShape:
    """The shapes that set decoding memory: width, depth, heads and head dimensions."""
    d_model: int
    layers: int
    heads: int
    head_dim_qk: int
    head_dim_v: int


# The paper's 6.7B RetNet (Sun et al. 2023, §3.1 and its table of model sizes): d_model 4096, 32
# layers, 16 heads, head dimensions 256 for queries/keys and 512 for values (W_V is d × 2d).
RETNET_6_7B = ModelShape(d_model=4096, layers=32, heads=16, head_dim_qk=256, head_dim_v=512)


def kv_cache_bytes(length: int, shape: ModelShape, batch: int = 1, dtype: str = "bfloat16") -> int:
    """A Transformer's KV cache after `length` tokens: keys and values, 2·T·d_head per head, so
    2·T·d_model per layer (same d_model as the RetNet shape), times layers and batch."""
    _check_positive(length=length, batch=batch)
    return 2 * length * shape.d_model * shape.layers * batch * BYTES_PER_ELEMENT[dtype]


def retention_state_bytes(shape: ModelShape, batch: int = 1, dtype: str = "bfloat16") -> int:
    """RetNet's recurrent state (Eq. 6): one d_k × d_v matrix per head and layer, whatever the
    length."""
    _check_positive(batch=batch)
    return (
        shape.layers
        * shape.heads
        * shape.head_dim_qk
        * shape.head_dim_v
        * batch
        * BYTES_PER_ELEMENT[dtype]
    )


def cache_exceeds_state_length(shape: ModelShape, dtype: str = "bfloat16") -> int:
    """The smallest length T at which the KV cache is at least as large as the retention state."""
    per_token = kv_cache_bytes(1, shape, dtype=dtype)
    return -(-retention_state_bytes(shape, dtype=dtype) // per_token)
