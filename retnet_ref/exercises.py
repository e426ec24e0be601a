"""The checks behind the notebooks' exercises, one function per exercise: `ex03_2(retention_row)`.

Each check runs the learner's answer on its own seeded inputs and compares it with the package, so
the chapter notebook and the solutions notebook call the very same check. An answer that is still
the placeholder (`...` or a body `raise NotImplementedError`) prints "not attempted yet"; a wrong
one fails with a hint, never with a bare AssertionError (retnet_ref.checking.exercise).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import cost, decay, normalisation, reference, rotation
from .checking import check, claim, exercise, given, random_inputs, relative_error
from .numerics import max_rounding_error, rounded_gamma_errors, sweep, unit_roundoff, worst_error
from .results import training_summary
from .retention import chunkwise_retention


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _qkv(seed: int, T: int = 24, d_k: int = 4, d_v: int = 3):
    rng = _rng(seed)
    q, k = rng.normal(size=(2, T, d_k))                               # (T, d_k) each
    return q, k / np.sqrt(d_k), rng.normal(size=(T, d_v))             # v (T, d_v)


# ---------------------------------------------------------------- 01 · recurrence

def ex01_1(A_scalar) -> None:
    with exercise("Exercise 1",
                  "retention multiplies every state entry by the same γ: a multiple of I"):
        A = np.asarray(given(A_scalar, "A_scalar"), dtype=float)
        claim("A_scalar is a square matrix", A.ndim == 2 and A.shape[0] == A.shape[1])
        q, k, v = _qkv(10, d_k=A.shape[0])
        check("linear_recurrence(A_scalar) vs retention with γ = 0.8",
              relative_error(reference.linear_recurrence(q, k, v, A)[0],
                             reference.parallel(q, k, v, 0.8)))


def ex01_2(initial_state_power) -> None:
    with exercise("Exercise 2",
                  "count how often the state is multiplied by A up to o_2 (s_0 is there before "
                  "token 0)"):
        power = given(initial_state_power, "initial_state_power")
        rng = _rng(11)
        A = rng.normal(size=(4, 4)) / 2
        q, S0 = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
        o, _ = reference.linear_recurrence(q, np.zeros((3, 4)), np.zeros((3, 2)), A, state=S0)
        check("o_2 from s_0 alone vs q_2 A^p s_0",
              relative_error(o[2], q[2] @ np.linalg.matrix_power(A, power) @ S0))


def ex01_3(absorb) -> None:
    """absorb(blocks, W_Q, W_K) -> (eigenvalues, W_Q', W_K') for A = blockdiag of γ R(θ) blocks."""
    with exercise("Exercise 3",
                  "a block γR(θ) has eigenvalues γe^{±iθ} with eigenvectors (1, -i), (1, i): "
                  "build Λ block by block, then W_Q Λ and W_K Λ^{-T}"):
        rng = _rng(12)
        blocks = [(0.9, 0.3), (0.8, 1.1)]
        A = np.zeros((4, 4))
        for j, (g, t) in enumerate(blocks):
            A[2 * j:2 * j + 2, 2 * j:2 * j
              + 2] = g * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        X = rng.normal(size=(10, 6))
        W_Q, W_K, W_V = rng.normal(size=(3, 6, 4))
        eigenvalues, W_Q3, W_K3 = absorb(blocks, W_Q, W_K)
        expected, _ = reference.linear_recurrence(X @ W_Q, X @ W_K, X @ W_V, A)
        answer, _ = reference.diagonal_recurrence(X @ W_Q3, X @ W_K3, X @ W_V,
                                                  np.asarray(eigenvalues))
        check("diagonal recurrence with your weights vs linear_recurrence(A)",
              relative_error(rotation.from_complex(answer), rotation.from_complex(expected + 0j)))


# ---------------------------------------------------------------- 02 · rotation and decay

def ex02_1(tokens_to_one_percent) -> None:
    with exercise("Exercise 1", "solve γ^n < 0.01 for n with logarithms, and round up"):
        n = given(tokens_to_one_percent, "tokens_to_one_percent")
        log_g = decay.log_gamma_schedule(1)[0]
        claim("the weight at your distance is below 1 %", np.exp(n * log_g) < 0.01)
        claim("one token closer it is not", np.exp((n - 1) * log_g) >= 0.01)


def ex02_2(first_float16_head) -> None:
    with exercise("Exercise 2",
                  "float16's spacing just below 1 is 2^-11; a number halfway rounds to even"):
        h = given(first_float16_head, "first_float16_head")
        rounded = torch.tensor(decay.gamma_schedule(16), dtype=torch.float16) == 1
        claim("γ_h rounds to 1 in float16 at your head", bool(rounded[h]))
        claim("and at no earlier head", not bool(rounded[:h].any()))


def ex02_3(relative_score) -> None:
    with exercise("Exercise 3",
                  "pair the features as complex numbers z = x_2j + i x_2j+1; the score is "
                  "Re Σ_j z_q conj(z_k) e^{i(n-m)θ_j}"):
        theta = rotation.theta_schedule(16)
        q, k = _rng(3).normal(size=(2, 16))
        for n, m in [(0, 0), (5, 2), (2, 5), (40, 7), (300, 299)]:
            expected = float(rotation.rotate(q[None], theta,
                                             n)[0] @ rotation.rotate(k[None], theta, m)[0])
            check(f"score at n = {n}, m = {m}",
                  abs(relative_score(q, k, n - m, theta) - expected) / abs(expected))


def xpos_reference(q, k, theta, scale_base=512):
    """xPos scores (T, T) of real q, k (T, d): rotate, then query pair j times ζ_j^(n/s), key pair j
    times ζ_j^(-m/s)."""
    d = q.shape[1]
    zeta = (2 * np.arange(d // 2) + 0.4 * d) / (1.4 * d)
    n = np.arange(q.shape[0])[:, None]
    factor = np.repeat(zeta[None, :] ** (n / scale_base), 2, axis=1)          # (T, d)
    return (rotation.rotate(q, theta) * factor) @ (rotation.rotate(k, theta) / factor).T


def ex02_4(xpos_scores) -> None:
    with exercise("Exercise 4",
                  "ζ_j = (2j + 0.4 d)/(1.4 d) for pair j; multiply the rotated query pair j by "
                  "ζ_j^(n/512) and divide the rotated key pair j by ζ_j^(m/512)"):
        q, k = _rng(4).normal(size=(2, 50, 16))
        theta = rotation.theta_schedule(16)
        check(
            "your xPos scores vs the reference",
            relative_error(np.tril(xpos_scores(q, k, theta)), np.tril(xpos_reference(q, k, theta))),
        )


# ---------------------------------------------------------------- 03 · parallel form

def ex03_1(decay_matrix_loops) -> None:
    with exercise("Exercise 1", "D_nm = gamma ** (n - m) for m <= n, and 0 above the diagonal"):
        check("your D (T = 6, γ = 0.7) vs decay_matrix", relative_error(
            np.asarray(decay_matrix_loops(6, 0.7)), decay.decay_matrix(6, decay.log_gamma(0.7))),
              tol=1e-15)


def ex03_2(retention_row) -> None:
    with exercise("Exercise 2", "o_n = Σ_{m<=n} γ^(n-m) (q_n · k_m) v_m: one loop over m"):
        q, k, v = _qkv(1, T=64, d_k=8, d_v=4)
        check(
            "your row 40 vs the parallel form",
            relative_error(
                np.asarray(retention_row(q, k, v, 0.9, 40)), reference.parallel(q, k, v, 0.9)[40]
            ),
        )


def ex03_3(parallel_form) -> None:
    with exercise("Exercise 3",
                  "scores q k^T, times the decay matrix (zero above the diagonal), times v"):
        q, k, v = _qkv(2, T=37, d_k=8, d_v=5)
        check("your parallel form vs the recurrent reference",
              relative_error(np.asarray(parallel_form(q, k, v, 0.95)),
                             reference.recurrent(q, k, v, 0.95)[0]))


# ---------------------------------------------------------------- 04 · recurrent form

def ex04_1(kv_1_3b, state_1_3b) -> None:
    with exercise("Exercise 1",
                  "KV cache: K and V (2) × tokens × d_model × layers × batch × 2 bytes; "
                  "state: layers × heads × d_k × d_v × batch × 2 bytes"):
        shape = cost.ModelShape(d_model=2048, layers=24, heads=8, head_dim_qk=256, head_dim_v=512)
        claim("KV cache bytes", given(kv_1_3b,
                                      "kv_1_3b") == cost.kv_cache_bytes(2048, shape, batch=8))
        claim("state bytes", given(state_1_3b,
                                   "state_1_3b") == cost.retention_state_bytes(shape, batch=8))


def ex04_2(prefix_state) -> None:
    with exercise("Exercise 2",
                  "weight row m of V by γ^(P-1-m), then one product K^T (weighted V)"):
        q, k, v = _qkv(5, T=100, d_k=16, d_v=8)
        check("your prefix state vs reference.recurrent's", relative_error(
            np.asarray(prefix_state(k, v, 0.95)), reference.recurrent(q, k, v, 0.95)[1]))


def ex04_3(recurrent_step) -> None:
    with exercise("Exercise 3", "S_next = γ S + outer(k_n, v_n), then o_n = q_n S_next"):
        q, k, v = _qkv(6, T=30, d_k=6, d_v=4)
        S0 = _rng(7).normal(size=(6, 4))
        S, outputs = S0, []
        for n in range(30):
            o_n, S = recurrent_step(S, q[n], k[n], v[n], 0.9)
            outputs.append(o_n)
        expected, S_T = reference.recurrent(q, k, v, 0.9, state=S0)
        check("your outputs vs reference.recurrent", relative_error(np.stack(outputs), expected))
        check("your final state vs reference.recurrent", relative_error(S, S_T))


# ---------------------------------------------------------------- 05 · chunkwise form

def ex05_1(next_chunk_state) -> None:
    with exercise("Exercise 1",
                  "R_i = K^T (V ⊙ ζ) + γ^C R_{i-1}, ζ_r = γ^(C-r-1): without ζ every key "
                  "enters as if it were the chunk's last"):
        q, k, v = _qkv(8, T=128, d_k=16, d_v=8)
        _, R_prev = reference.recurrent(q[:64], k[:64], v[:64], 0.9)
        check("state after two chunks vs the recurrence", relative_error(
            np.asarray(next_chunk_state(R_prev, k[64:], v[64:],
                                        0.9)), reference.recurrent(q, k, v, 0.9)[1]))


def ex05_2(zeta_last, decay_last) -> None:
    with exercise("Exercise 2",
                  "a ragged chunk uses its own length L = 2: ζ_r = γ^(L-r-1), decay γ^L"):
        zeta_answer = np.asarray(given(zeta_last, "zeta_last"), dtype=float)
        claim("zeta_last has one weight per key of the last chunk (2)", zeta_answer.shape == (2,))
        q, k, v = _qkv(9, T=10, d_k=4, d_v=3)
        _, R_8 = reference.recurrent(q[:8], k[:8], v[:8], 0.8)
        R_10 = k[8:].T @ (v[8:] * zeta_answer[:, None]) + given(decay_last, "decay_last") * R_8
        check("the state finished with your ζ and decay",
              relative_error(R_10, reference.recurrent(q, k, v, 0.8)[1]),
              tol=1e-14)


def ex05_3(optimal_chunk) -> None:
    with exercise("Exercise 3", "per token: 2C(d_k + d_v) + C + 2 d_k d_v / C + (terms without C); "
                                "set the derivative in C to zero"):
        for d_k, d_v in ((64, 64), (32, 128), (256, 512)):
            exact = cost.flop_optimal_chunk_size(d_k, d_v)
            check(f"C* for d_k = {d_k}, d_v = {d_v}", abs(optimal_chunk(d_k, d_v) - exact) / exact)


def ex05_4(chunkwise_loop) -> None:
    with exercise("Exercise 4",
                  "per chunk: inner (Q K^T ⊙ D) V + ξ ⊙ (Q R); then R = K^T (V ⊙ ζ) + γ^L R, "
                  "with L the chunk's own length"):
        q, k, v = _qkv(10, T=50, d_k=8, d_v=4)
        for C in (1, 7, 16, 50, 64):
            check(f"your chunkwise form, C = {C}, vs the parallel form",
                  relative_error(np.asarray(chunkwise_loop(q, k, v, 0.9, C)),
                                 reference.parallel(q, k, v, 0.9)))


# ---------------------------------------------------------------- 06 · multi-scale retention

def ex06_1(heads_needed) -> None:
    with exercise("Exercise 1", "head h remembers 2^(5+h) tokens; heads are numbered from 0"):
        H = given(heads_needed, "heads_needed")
        claim("the slowest of your heads remembers at least 2048 tokens",
              decay.effective_memory(decay.gamma_schedule(H))[-1] >= 2048)
        claim("one head fewer would not", H == 1
              or decay.effective_memory(decay.gamma_schedule(H - 1))[-1] < 2048)


def ex06_2(row_sums_by_recurrence) -> None:
    with exercise("Exercise 2", "c_n = γ c_{n-1} + 1 from c_{-1} = 0"):
        c = np.asarray(row_sums_by_recurrence(0.97, 100), dtype=float)
        claim("one row sum per position (100)", c.shape == (100,))
        check("your c_n vs the closed form",
              relative_error(c, decay.decay_row_sum(100, np.log(0.97))), tol=1e-13)


def _official_outputs():
    """Section 3's inputs through the official (torchscale) divisors, parallel and recurrent."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 37, d, generator=gen, dtype=torch.float64) for d in (16, 16, 32))
    gammas = decay.gamma_schedule(4).tolist()
    return [normalisation.normalised_retention(q, k, v, gammas, mode, normalisation="torchscale")[0]
            for mode in ("parallel", "recurrent")]


def ex06_3(largest_eps) -> None:
    with exercise("Exercise 3",
                  "the gap grows linearly in ε: scale the gap measured at 1e-6 to 1e-9, "
                  "then round ε down to a power of ten"):
        eps = given(largest_eps, "largest_eps")
        parallel, recurrent = _official_outputs()

        def gap(e):
            return relative_error(torch.nn.functional.layer_norm(recurrent, (32,), eps=e),
                                  torch.nn.functional.layer_norm(parallel, (32,), eps=e))
        claim("the official modes agree to 1e-9 at your ε", gap(eps) <= 1e-9)
        claim("and not at ten times your ε", gap(10 * eps) > 1e-9)


def ex06_4(normalised_step) -> None:
    """normalised_step(S, z, count, q_n, k_n, v_n, gamma) -> (õ_n, S, z, count)."""
    with exercise("Exercise 4",
                  "update S and z like the state (z with k_n alone), count the token, then "
                  "c = (1 - γ^count)/(1 - γ), a = q_n · z, divide q_n S by max(|a|, sqrt(d_k c))"):
        q, k, v = _qkv(11, T=40, d_k=8, d_v=4)
        k = k * 4                                                      # some rows clip, some do not
        S, z, count, outputs = np.zeros((8, 4)), np.zeros(8), 0, []
        for n in range(40):
            o_n, S, z, count = normalised_step(S, z, count, q[n], k[n], v[n], 0.95)
            outputs.append(o_n)
        expected, _ = normalisation.normalised_retention(*(torch.from_numpy(x)[None, None]
                                                        for x in (q, k, v)), [0.95])
        check("your normalised recurrent form vs the package's",
              relative_error(np.stack(outputs), expected[0, 0]))


# ---------------------------------------------------------------- 07 · the model

def ex07_1(layer_weights) -> None:
    from .layers import RetNetBlock
    from .model import RetNetConfig
    from .presets import count_parameters

    with exercise("Exercise 1",
                  "W_Q, W_K d×d; W_V, W_G d×2d; W_O 2d×d; FFN d×2d and 2d×d; two LayerNorms of "
                  "2d each (weight and bias)"):
        with torch.device("meta"):
            block = RetNetBlock(RetNetConfig(d_model=1024, num_heads=4))
        claim("your count vs the block's parameters",
              given(layer_weights, "layer_weights") == count_parameters(block))


def ex07_2(greedy_continuation) -> None:
    """greedy_continuation(model, prompt, new_tokens, chunk_size) with the model's forward only."""
    from .model import RetNet, RetNetConfig

    with exercise("Exercise 2",
                  "logits, state = model(prompt, 'chunkwise', chunk_size); then take argmax of "
                  "the last logits and feed it with model(token, 'recurrent', state=state)"):
        torch.manual_seed(0)
        model = RetNet(RetNetConfig.preset("tiny")).double().eval()
        prompt = torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(7))
        for chunk_size in (1, 5, 64):
            with torch.no_grad():
                answer = greedy_continuation(model, prompt, 6, chunk_size)
            claim(f"chunk size {chunk_size}: your tokens are generate()'s",
                  torch.equal(answer, model.generate(prompt, 6, chunk_size=chunk_size)))


# ---------------------------------------------------------------- 08 · cost on a GPU

def _paper_6_7b_bytes(batch: int, length: int) -> tuple[int, int]:
    """Bytes one decode step of the 6.7B preset moves (chapter 08, section 1): RetNet,
    Transformer."""
    weights = 2 * 6_705_127_424                                 # bf16, both models' parameter count
    state = cost.retention_state_bytes(cost.RETNET_6_7B, batch, dtype="float32")
    return weights + 2 * state, weights + cost.kv_cache_bytes(length, cost.RETNET_6_7B, batch)


def ex08_1(crossover_length) -> None:
    with exercise("Exercise 1",
                  "one token adds 2·d_model·layers bf16 numbers to the cache; the state is "
                  "layers·heads·d_k·d_v float32 numbers: divide and round up"):
        L = given(crossover_length, "crossover_length")
        state = cost.retention_state_bytes(cost.RETNET_6_7B, 1, dtype="float32")
        claim("at your L the cache holds at least the state's bytes",
              cost.kv_cache_bytes(L, cost.RETNET_6_7B) >= state)
        claim("and at L - 1 it holds fewer", L == 1
              or cost.kv_cache_bytes(L - 1, cost.RETNET_6_7B) < state)


def ex08_2(bound_at_16) -> None:
    with exercise("Exercise 2",
                  "RetNet: weights + 2 × the float32 state at batch 16; Transformer: weights + "
                  "the KV cache of 16 sequences of 8192 tokens; divide"):
        retnet, transformer = _paper_6_7b_bytes(16, 8192)
        check("your bound vs the bytes model's",
              abs(given(bound_at_16, "bound_at_16") - transformer / retnet)
              / (transformer / retnet), tol=1e-3)


# ---------------------------------------------------------------- 09 · training comparison

def ex09_1(bits_per_byte) -> None:
    with exercise("Exercise 1",
                  "a nat is 1/ln 2 bits: divide the loss in nats by ln 2; the best RetNet run at "
                  "size S is the one at the learning rate the summary chose there"):
        summary = training_summary()
        lr = summary["learning_rates"]["S"]["retnet"]["lr"]
        run = next(r for r in summary["runs"].values() if r["model"] == "retnet" and r["lr"] == lr
                   and r["seed"] == 0 and r["ablation"] is None and r["size"] == "S")
        expected = run["validation_loss"]["512"] / math.log(2)
        check("your bits per byte vs the log's loss / ln 2",
              abs(given(bits_per_byte, "bits_per_byte") - expected)
              / expected, tol=1e-6)


def ex09_2(tokens_per_parameter) -> None:
    from .comparison import PLAN

    with exercise("Exercise 2",
                  "tokens = batch × context × steps of size S; parameters from the summary"):
        s = PLAN.sizes["S"]
        expected = (
            s.batch * PLAN.context * s.steps / training_summary()["parameters"]["S"]["retnet"]
        )
        check("your tokens per parameter",
              abs(given(tokens_per_parameter, "tokens_per_parameter") - expected)
              / expected, tol=1e-6)


# ---------------------------------------------------------------- 10 · numerics

def ex10_1(u_fp16) -> None:
    with exercise("Exercise 1", "u = 2^-p for p significant bits, the implicit bit included"):
        u = given(u_fp16, "u_fp16")
        claim("your u is float16's", u == unit_roundoff(torch.float16))
        # draws in [1, 2): float16's range is small, and subnormal numbers round more coarsely
        draws = 1 + torch.rand(100_000, generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)
        largest = max_rounding_error(draws, torch.float16)
        claim("the largest rounding change of 1e5 draws in [1, 2) lies in (u/2, u]",
              u / 2 < largest <= u)


def ex10_2(worst_fp16, tol_fp16) -> None:
    with exercise("Exercise 2",
                  "run sweep((64, 256), (torch.float16,), heads=4, d=32), take worst_error, "
                  "then the smallest whole multiple of u that is at least twice it"):
        measured = worst_error(sweep((64, 256), (torch.float16,), heads=4, d=32))
        u = unit_roundoff(torch.float16)
        check("your worst measured float16 error vs the sweep's",
              abs(given(worst_fp16, "worst_fp16") - measured) / measured)
        multiple = given(tol_fp16, "tol_fp16") / u
        claim("tol_fp16 is a whole multiple of u", multiple == round(multiple))
        claim("it leaves a margin of at least 2", tol_fp16 >= 2 * measured)
        claim("and is the smallest such multiple", tol_fp16 - u < 2 * measured)


def ex10_3(delta, predicted) -> None:
    with exercise("Exercise 3", "δ = |fl32(γ) - γ| / γ; the drift model is δ / (√2 (1 - γ))"):
        g = 0.9995
        rounded = torch.tensor(g, dtype=torch.float32).item()
        check("δ", abs(given(delta, "delta") - abs(rounded - g) / g) / (abs(rounded - g) / g),
              tol=1e-9)
        model = delta / (math.sqrt(2) * (1 - g))
        check("predicted", abs(given(predicted, "predicted") - model) / model, tol=1e-9)
        q, k, v, _ = random_inputs(1, 1, 4096, 32, 32, seed=4096)
        measured = rounded_gamma_errors(q, k, v, [g], torch.float32)[0]
        claim("the measured drift is within a factor 2 of your prediction",
              0.5 < measured / predicted < 2)


# ---------------------------------------------------------------- 11 · Triton kernel

def _state_gradient_after(q, k, v, do, dR, gamma, C, i):
    """∂loss/∂R_i by autograd: the outputs after chunk i see R_i only as their initial state."""
    start = (i + 1) * C
    X = torch.zeros(1, 1, q.shape[1], v.shape[1], dtype=torch.float64, requires_grad=True)
    tail = [torch.from_numpy(x[start:])[None, None] for x in (q, k, v)]
    o, R = chunkwise_retention(*tail, [gamma], C, X)
    loss = (o[0, 0] * torch.from_numpy(do[start:])).sum() + (R[0, 0] * torch.from_numpy(dR)).sum()
    return torch.autograd.grad(loss, X)[0][0, 0].numpy()


def ex11_1(reverse_chunk_states) -> None:
    with exercise("Exercise 1",
                  "start from dS = dR at the last chunk and walk back: store dS_i, then "
                  "dS_(i-1) = γ^L dS_i + Q_[i]^T (dO_[i] ⊙ ξ) with ξ_r = γ^(r+1)"):
        q, k, v = _qkv(11, T=29, d_k=4, d_v=3)
        rng = _rng(12)
        do, dR = rng.normal(size=(29, 3)), rng.normal(size=(4, 3))
        states, d_init = reverse_chunk_states(q, do, dR, 0.9, 8)
        states = np.asarray(states)
        claim("one state gradient per chunk, (N, d_k, d_v) = (4, 4, 3)", states.shape == (4, 4, 3))
        for i in range(4):
            check(f"dS_{i} vs autograd",
                  relative_error(states[i], _state_gradient_after(q, k, v, do, dR, 0.9, 8, i)))
        S0 = torch.zeros(1, 1, 4, 3, dtype=torch.float64, requires_grad=True)
        o, R = chunkwise_retention(*(torch.from_numpy(x)[None, None] for x in (q, k, v)), [0.9], 8,
                                   S0)
        loss = (o[0, 0] * torch.from_numpy(do)).sum() + (R[0, 0] * torch.from_numpy(dR)).sum()
        check("∂loss/∂S_0 vs autograd", relative_error(np.asarray(d_init),
                                                       torch.autograd.grad(loss, S0)[0][0, 0]))


def ex11_2(states_bytes, ratio_at_128) -> None:
    with exercise("Exercise 2",
                  "pass 1 stores one d_k × d_v state per chunk, per head and sequence; q, k, v "
                  "and o are four (B, H, T, d) tensors; bfloat16 has 2 bytes"):
        batch, heads, T, d = 4, 8, 16384, 128
        qkvo = 4 * batch * heads * T * d * 2
        expected = batch * heads * (T // 64) * d * d * 2
        claim("states_bytes: the bytes of the chunk states pass 1 stores",
              given(states_bytes, "states_bytes") == expected)
        check("your ratio at C = 128 vs states / (q, k, v, o)",
              abs(given(ratio_at_128,
                        "ratio_at_128") - expected / 2 / qkvo) / (expected / 2 / qkvo), tol=1e-3)


def ex11_3(state_in_group) -> None:
    with exercise("Exercise 3",
                  "unroll R_i = γ^C R_(i-1) + K_[i]^T (V_[i] ⊙ ζ) over the group's first m chunks: "
                  "R_(gE+m-1) = γ^(mC) R + Σ_(a<m) γ^((m-1-a)C) K_[a]^T (V_[a] ⊙ ζ), "
                  "ζ_s = γ^(C-1-s); m = 0 gives R itself"):
        _, k, v = _qkv(13, T=32, d_k=4, d_v=3)                        # a group of 4 chunks of 8
        R, gamma, C = _rng(14).normal(size=(4, 3)), 0.9, 8
        zeta = gamma ** (C - 1 - np.arange(C))
        states = [R]
        for rows in (slice(a * C, (a + 1) * C) for a in range(4)):
            # one step of the recursion: R_i = γ^C R_(i-1) + K_[i]^T (V_[i] ⊙ ζ)
            states.append(gamma ** C * states[-1] + k[rows].T @ (v[rows] * zeta[:, None]))
        for m, expected in enumerate(states):          # m = 4: the state after the group
            check(f"the state before chunk {m} of the group vs the recursion",
                  relative_error(np.asarray(state_in_group(k, v, R, gamma, C, m)), expected))


def ex11_4(narrow_split_mib, wide_split_mib, predicted_saving) -> None:
    with exercise("Exercise 4",
                  "k and v are (1, 8, 65536, 128) bfloat16, 128 MiB each; a block of BK × BV "
                  "reads its BK columns of k and its BV columns of v, so all blocks together read "
                  "k 128/BV times and v 128/BK times; a split reads them once for the segments' "
                  "own sums and once for the walks; the states, 1024 chunks × 8 heads × 128 × 128 "
                  "× 2 bytes, are written once"):
        tensor_mib, states_mib = 65536 * 8 * 128 * 2 / 2**20, 1024 * 8 * 128 * 128 * 2 / 2**20
        # two passes over k and v (own sums, walks), each reading d/BV + d/BK tensors, plus states
        narrow, wide = (2 * tensor_mib * (128 // b + 128 // b) + states_mib for b in (64, 128))
        claim("narrow_split_mib: 64 × 64 blocks in segments",
              given(narrow_split_mib, "narrow_split_mib") == narrow)
        claim("wide_split_mib: 128 × 128 blocks in segments",
              given(wide_split_mib, "wide_split_mib") == wide)
        check("your saving vs 1 - wide / narrow",
              abs(given(predicted_saving, "predicted_saving") - (1 - wide / narrow))
              / (1 - wide / narrow), tol=1e-3)


def ex11_5(walk_mib, split_walk_mib, walk_share) -> None:
    with exercise("Exercise 5",
                  "q, k, v and o are (B, 8, T, 128) bfloat16 at 65,536 tokens, 128 MiB each; "
                  "each of the two 64-column value blocks of a head reads all of q and k, so q and "
                  "k are read twice, v once, o written once; a split adds one more read of k and "
                  "v; the share is bytes / seconds / (4146 × 10^9 bytes per second)"):
        tensor_mib = 65536 * 8 * 128 * 2 / 2**20
        unsplit = 2 * 2 * tensor_mib + 2 * tensor_mib          # q, k twice; v, o once
        split = unsplit + 2 * tensor_mib                        # the segments' own sums: k, v
        share = unsplit * 2**20 / 0.304e-3 / 4146e9
        claim("walk_mib: the unsplit walk's MiB", given(walk_mib, "walk_mib") == unsplit)
        claim("split_walk_mib: the split walk's MiB",
              given(split_walk_mib, "split_walk_mib") == split)
        check("your share vs bytes / time / bandwidth",
              abs(given(walk_share, "walk_share") - share) / share, tol=1e-2)
