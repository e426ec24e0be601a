"""The exercise checks: a placeholder is "not attempted", a wrong answer fails with its hint.

The reference solutions run in notebooks/solutions.ipynb (executed by nbval like every notebook);
here each check meets the placeholder and the mistakes a learner is likely to make.
"""
import numpy as np
import pytest

from retnet_ref import exercises, rotation
from retnet_ref.checking import CheckFailed


def unanswered(*args):
    raise NotImplementedError


VALUE_EXERCISES = {"ex01_1": 1, "ex01_2": 1, "ex02_1": 1, "ex02_2": 1, "ex04_1": 2, "ex05_2": 2,
                   "ex06_1": 1,
                   "ex06_3": 1, "ex07_1": 1, "ex08_1": 1, "ex08_2": 1, "ex09_1": 1, "ex09_2": 1,
                   "ex10_1": 1, "ex10_2": 2, "ex10_3": 2, "ex11_2": 2, "ex11_4": 3,
                   "ex11_5": 3}
FUNCTION_EXERCISES = ["ex01_3", "ex02_3", "ex02_4", "ex03_1", "ex03_2", "ex03_3", "ex04_2",
                      "ex04_3", "ex05_1",
                      "ex05_3", "ex05_4", "ex06_2", "ex06_4", "ex07_2", "ex11_1", "ex11_3"]


def test_every_exercise_is_listed():
    checks = {name for name in dir(exercises) if name.startswith("ex") and name[2:4].isdigit()}
    assert checks == set(VALUE_EXERCISES) | set(FUNCTION_EXERCISES)


@pytest.mark.parametrize("name", sorted(VALUE_EXERCISES) + FUNCTION_EXERCISES)
def test_placeholder_is_not_attempted(name, capsys):
    args = [...] * VALUE_EXERCISES[name] if name in VALUE_EXERCISES else [unanswered]
    getattr(exercises, name)(*args)
    assert "not attempted yet" in capsys.readouterr().out


def flipped_phase(q, k, distance, theta):
    z = rotation.to_complex(q) * np.conj(rotation.to_complex(k))
    return float(np.real(np.sum(z * np.exp(-1j * distance * theta))))


@pytest.mark.parametrize("check, answer, hint", [
    (exercises.ex01_2, (2,), "count how often"),
    (exercises.ex02_2, (6,), "halfway rounds to even"),
    (exercises.ex02_3, (flipped_phase,), "Re Σ_j z_q conj"),
    (exercises.ex04_1, (2048 * 2048 * 24 * 8 * 2, 24 * 8 * 256 * 512 * 8 * 2), "K and V"),  # K only
    # ζ of a full chunk
    (exercises.ex05_2, (0.8 ** (3 - np.arange(4)), 0.8 ** 2), "own length L = 2"),
    (exercises.ex05_3, (lambda d_k, d_v: 64,), "derivative"),
    (exercises.ex06_1, (8,), "numbered from 0"),
    (exercises.ex08_1, (256,), "divide and round up"),                             # a bf16 state
    (exercises.ex08_2, (47.77 / 17.71,), "batch 16"),                              # batch 8's bound
    (exercises.ex09_1, (0.9080,), "divide the loss in nats by ln 2"),              # nats, not bits
    (exercises.ex09_2, (1 / 1.368,), "batch × context × steps"),                   # upside down
    (exercises.ex10_2, (1e-3, 10 * 2.0 ** -11), "smallest whole multiple"),        # no measurement
    (exercises.ex11_4, (768, 512, 1 / 3), "segments' own sums"),                   # one read only
    (exercises.ex11_5, (512, 768, 0.43), "q and k are read twice"),                # q, k once
])
def test_wrong_answers_fail_with_the_hint(check, answer, hint):
    with pytest.raises(CheckFailed, match=f"(?s)Exercise.*{hint}"):
        check(*answer)


def test_a_wrong_chunkwise_loop_fails_with_its_hint():
    def no_zeta(q, k, v, gamma, C):
        R, out = np.zeros((q.shape[1], v.shape[1])), []
        for start in range(0, q.shape[0], C):
            qc, kc, vc = q[start:start + C], k[start:start + C], v[start:start + C]
            r = np.arange(qc.shape[0])
            D = np.tril(gamma ** np.maximum(r[:, None] - r[None, :], 0))
            out.append((qc @ kc.T * D) @ vc + gamma ** (r + 1)[:, None] * (qc @ R))
            R = kc.T @ vc + gamma ** len(r) * R                     # the pseudocode's update: no ζ
        return np.concatenate(out)

    with pytest.raises(CheckFailed, match="C = 7, vs the parallel form(.|\n)*hint: per chunk"):
        exercises.ex05_4(no_zeta)


def test_a_reverse_recursion_with_the_forward_weights_fails_with_its_hint():
    def with_zeta(q, do, dR, gamma, C):                     # ζ (the forward's weights) instead of ξ
        N = -(-len(q) // C)
        dS, states = dR.copy(), [None] * N
        for i in reversed(range(N)):
            states[i] = dS
            qc, doc = q[i * C:(i + 1) * C], do[i * C:(i + 1) * C]
            zeta = gamma ** (len(qc) - 1 - np.arange(len(qc)))
            dS = gamma ** len(qc) * dS + qc.T @ (doc * zeta[:, None])
        return np.stack(states), dS

    with pytest.raises(CheckFailed, match="(?s)dS_0 vs autograd.*hint: start from dS = dR"):
        exercises.ex11_1(with_zeta)


def test_states_bytes_of_float32_states_fail():
    with pytest.raises(CheckFailed, match="(?s)states_bytes.*bfloat16 has 2 bytes"):
        exercises.ex11_2(4 * 8 * 256 * 128 * 128 * 4, 0.25)


def test_a_group_state_decayed_by_whole_distances_fails_with_its_hint():
    def without_zeta(k, v, R, gamma, C, m):                 # chunk a decayed by (m - a) C, no ζ
        return gamma ** (m * C) * R + sum(
            gamma ** ((m - a) * C) * k[a * C:(a + 1) * C].T @ v[a * C:(a + 1) * C]
            for a in range(m))

    with pytest.raises(CheckFailed, match="(?s)chunk 1 of the group.*hint: unroll"):
        exercises.ex11_3(without_zeta)
