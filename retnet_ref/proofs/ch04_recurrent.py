"""Chapter 04's proofs: the recurrent state's closed form (Eq. 6 = Eq. 5) and the state hand-off.

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison); a failed proof raises
AssertionError naming the identity.
"""
from __future__ import annotations

import sympy as sp

from .common import is_zero_matrix, parallel_symbolic, recurrence_symbolic, retention_symbols


def prove_recurrent_equals_parallel(length: int = 4, d_k: int = 2, d_v: int = 2):
    """Eq. 6 = Eq. 5: S_{n+1} = γ S_n + k_n^T v_n from a symbolic S_0 has the closed form
    S_{n+1} = Σ_{m≤n} γ^(n-m) k_m^T v_m + γ^(n+1) S_0, so o_n = q_n S_{n+1} is row n of (Q K^T ⊙ D)
    V plus γ^(n+1) q_n S_0 (S_n: the state after the first n tokens).

    Returns {"S_3": entry (0, 0) of S_3, the state after three tokens: a small headline of the
    closed form}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    Q, K, V, S0 = retention_symbols(length, d_k, d_v, state=True)
    recurrent, states = recurrence_symbolic(Q, K, V, [gamma] * d_k, S0)
    for n, S in enumerate(states):
        # S_{n+1} = Σ_{m≤n} γ^(n-m) k_m^T v_m + γ^(n+1) S_0
        closed = sum((gamma ** (n - m) * K[m, :].T * V[m, :] for m in range(n + 1)),
                     gamma ** (n + 1) * S0)
        assert is_zero_matrix(S - closed), f"recurrent state S_{n + 1} != its closed form"
    assert is_zero_matrix(recurrent - parallel_symbolic(Q, K, V, gamma, S0)), (
        "recurrent (Eq. 6) != parallel (Eq. 5)"
    )
    return {"S_3": sp.expand(states[2][0, 0])}


def prove_state_handoff(length: int = 5, split: int = 2, d_k: int = 2, d_v: int = 1):
    """Running the recurrence over a prefix and handing its final state to the continuation gives
    the outputs and final state of one run over the whole sequence (from a symbolic S_0).

    Returns {"state": entry (0, 0) of the state handed over after the prefix}.
    """
    gamma = sp.Symbol("gamma", positive=True)
    Q, K, V, S0 = retention_symbols(length, d_k, d_v, state=True)
    whole, whole_states = recurrence_symbolic(Q, K, V, [gamma] * d_k, S0)
    head, head_states = recurrence_symbolic(Q[:split, :], K[:split, :], V[:split, :], [gamma] * d_k,
                                            S0)
    tail, tail_states = recurrence_symbolic(Q[split:, :], K[split:, :], V[split:, :], [gamma] * d_k,
                                            head_states[-1])
    assert is_zero_matrix(sp.Matrix.vstack(head,
                                           tail) - whole), "prefix + continuation != whole run"
    assert is_zero_matrix(tail_states[-1] - whole_states[-1]), (
        "final state differs after a hand-off"
    )
    return {"state": sp.expand(head_states[-1][0, 0])}
