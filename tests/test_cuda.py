"""The torch forms on a CUDA device: the CPU checks again, plus CPU-vs-GPU agreement and device
errors.

Every test is marked `cuda` (select with `-m cuda`) and skipped with "no CUDA device" where none is
present (tests/conftest.py). Sizes are small so the whole file takes seconds on a GPU. The float64
truth is always the parallel form on the CPU (checked against the NumPy reference in
test_retention).
"""
from __future__ import annotations

import pytest
import torch

from helpers import run_form
from retnet_ref.checking import TOLERANCE, random_inputs
from retnet_ref.decay import gamma_schedule
from retnet_ref.retention import chunkwise_retention, parallel_retention, recurrent_retention

pytestmark = pytest.mark.cuda

GAMMAS = [1.0, 0.97, 0.5, 1e-9]
DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def cuda(*tensors, dtype=None):
    return tuple(t.to("cuda", dtype) for t in tensors)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form,T", [("parallel", 64), ("parallel", 512), ("chunkwise", 64),
                                    ("chunkwise", 512),
                                    ("recurrent", 64)])
def test_forms_on_gpu_match_float64_cpu_truth(form, T, dtype, rel_err):
    gamma = gamma_schedule(4).tolist()
    q, k, v, _ = random_inputs(1, 4, T, 32, 32, seed=T)
    truth = parallel_retention(q, k, v, gamma)
    o, _ = run_form(form, *cuda(q, k, v, dtype=dtype), gamma, chunk_size=64)
    assert o.device.type == "cuda" and o.dtype == dtype
    assert rel_err(o, truth) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forms_on_gpu_agree_with_each_other(dtype, rel_err):
    q, k, v, S0 = cuda(*random_inputs(2, 4, 45, 8, 8, seed=1), dtype=dtype)
    S0 = S0.float() if dtype == torch.bfloat16 else S0
    o_par = parallel_retention(q, k, v, GAMMAS)
    o_rec, S_rec = recurrent_retention(q, k, v, GAMMAS)
    assert rel_err(o_rec, o_par) <= TOLERANCE[dtype]
    for chunk_size in (1, 9, 16, 100):                              # divides, ragged, more than T
        o_chunk, S_chunk = chunkwise_retention(q, k, v, GAMMAS, chunk_size)
        assert rel_err(o_chunk, o_par) <= TOLERANCE[dtype] and rel_err(S_chunk,
                                                                       S_rec) <= TOLERANCE[dtype]
    o_rec, S_rec = recurrent_retention(q, k, v, GAMMAS, state=S0)
    o_chunk, S_chunk = chunkwise_retention(q, k, v, GAMMAS, 7, state=S0)
    assert rel_err(o_chunk, o_rec) <= TOLERANCE[dtype] and rel_err(S_chunk,
                                                                   S_rec) <= TOLERANCE[dtype]
    assert S_rec.device.type == "cuda" and S_rec.dtype == torch.promote_types(dtype, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("form", ["parallel", "recurrent", "chunkwise"])
def test_cpu_and_gpu_agree(form, dtype, rel_err):
    q, k, v, S0 = (x.to(dtype) for x in random_inputs(2, 4, 40, 8, 6, seed=2))
    S0 = None if form == "parallel" else S0
    o_cpu, S_cpu = run_form(form, q, k, v, GAMMAS, S0, chunk_size=6)
    o_gpu, S_gpu = run_form(form, *cuda(q, k, v), GAMMAS, None if S0 is None else S0.cuda(),
                            chunk_size=6)
    assert rel_err(o_gpu, o_cpu) <= TOLERANCE[dtype]
    if S_cpu is not None:
        assert rel_err(S_gpu, S_cpu) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("first,second", [("chunkwise", "recurrent"), ("recurrent", "chunkwise")])
def test_state_hand_off_on_gpu(first, second, dtype, rel_err):
    q, k, v, S0 = cuda(*random_inputs(1, 4, 50, 8, 8, seed=3))
    whole, S_whole = chunkwise_retention(q, k, v, GAMMAS, 16, state=S0)       # float64 on the GPU
    x = [t.to(dtype) for t in (q, k, v)]
    S0 = S0.to(torch.promote_types(dtype, torch.float32))
    o1, S1 = run_form(first, *(t[:, :, :21] for t in x), GAMMAS, S0, chunk_size=16)
    o2, S2 = run_form(second, *(t[:, :, 21:] for t in x), GAMMAS, S1, chunk_size=16)
    assert rel_err(torch.cat([o1, o2], dim=2), whole) <= TOLERANCE[dtype]
    assert rel_err(S2, S_whole) <= TOLERANCE[dtype]


@pytest.mark.parametrize("with_state", [False, True])
def test_gradients_equal_across_forms_on_gpu(with_state, rel_err):
    q, k, v, S0 = cuda(*random_inputs(2, 4, 23, 4, 3, seed=4))
    inputs = tuple(x.requires_grad_() for x in ((q, k, v, S0) if with_state else (q, k, v)))
    gen = torch.Generator().manual_seed(5)
    w_o, w_S = cuda(torch.randn(2, 4, 23, 3, generator=gen, dtype=torch.float64),
                    torch.randn(2, 4, 4, 3, generator=gen, dtype=torch.float64))

    def gradients(form):
        o, S = run_form(form, *inputs[:3], GAMMAS, S0 if with_state else None, chunk_size=5)
        # a random scalar loss: Σ w_o ⊙ o (+ Σ w_S ⊙ S_T when there is a state to hand on)
        loss = (w_o * o).sum() + ((w_S * S).sum() if with_state else 0)
        return torch.autograd.grad(loss, inputs)

    forms = ["recurrent", "chunkwise"] + ([] if with_state else ["parallel"])
    grads = {form: gradients(form) for form in forms}
    for form in forms[1:]:
        for name, g, g_rec in zip("qkvS", grads[form], grads["recurrent"]):
            assert g.device.type == "cuda"
            assert rel_err(g, g_rec) <= 1e-10, (form, name)


@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_gradcheck_on_gpu(form):
    """Finite differences on the GPU (fast mode: one random direction, a few launches instead of
    hundreds)."""
    q, k, v, S0 = cuda(*random_inputs(1, 2, 5, 3, 2, seed=6))
    inputs = tuple(x.requires_grad_() for x in (q, k, v, S0))
    assert torch.autograd.gradcheck(lambda *a: run_form(form, *a[:3], [0.9, 0.5], a[3],
                                                        chunk_size=2), inputs,
                                    eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=True)


def test_bfloat16_on_gpu_keeps_a_float32_state():
    q, k, v, _ = cuda(*random_inputs(1, 2, 10, 4, 4, seed=7), dtype=torch.bfloat16)
    for form in ("recurrent", "chunkwise"):
        o, S = run_form(form, q, k, v, [0.9, 0.99], chunk_size=16)
        assert o.dtype == torch.bfloat16 and S.dtype == torch.float32 and S.device.type == "cuda"


def test_gamma_given_as_a_gpu_tensor(rel_err):
    q, k, v, _ = cuda(*random_inputs(1, 4, 12, 4, 4, seed=8))
    expected = parallel_retention(q, k, v, GAMMAS)
    gamma = torch.tensor(GAMMAS, dtype=torch.float64, device="cuda")
    assert rel_err(parallel_retention(q, k, v, gamma), expected) == 0.0
    assert rel_err(chunkwise_retention(q, k, v, gamma, 5)[0], expected) <= TOLERANCE[torch.float64]


def test_empty_sequence_on_gpu():
    q, k, v, S0 = cuda(*random_inputs(1, 2, 0, 3, 4, seed=9))
    assert parallel_retention(q, k, v, [0.9, 0.5]).shape == (1, 2, 0, 4)
    for form in ("recurrent", "chunkwise"):
        o, S = run_form(form, q, k, v, [0.9, 0.5], S0, chunk_size=16)
        assert o.shape == (1, 2, 0, 4) and o.device.type == "cuda" and torch.equal(S, S0)


@pytest.mark.parametrize("state_device,input_device", [("cpu", "cuda"), ("cuda", "cpu")])
@pytest.mark.parametrize("form", ["recurrent", "chunkwise"])
def test_state_on_another_device(form, state_device, input_device):
    q, k, v, S0 = random_inputs(1, 2, 5, 3, 2, seed=10)
    with pytest.raises(ValueError, match="^state must be on the inputs' device"):
        run_form(form, *(x.to(input_device) for x in (q, k, v)), [0.9, 0.5], S0.to(state_device),
                 chunk_size=16)


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("form", ["parallel", "recurrent", "chunkwise"])
def test_q_k_v_on_different_devices(form, name):
    args = dict(zip("qkv", random_inputs(1, 2, 5, 3, 2, seed=11)))
    args[name] = args[name].cuda()
    with pytest.raises(ValueError, match="^q, k and v must be on one device"):
        run_form(form, args["q"], args["k"], args["v"], [0.9, 0.5], chunk_size=16)


def test_parallel_form_peak_memory_is_about_one_score_matrix():
    """Peak memory beyond the inputs at T = 4096 (6.7B head shapes, bf16) ≤ 1.5 × the float32 score
    tensor.

    The scores (B, H, T, T) exist in bf16 (the product) and float32 (the decayed scores) for a
    moment, which is 1.5 × the float32 tensor; the decay matrix D is a strided view and costs no T ×
    T memory.
    """
    B, H, T, d = 1, 16, 4096, 128
    gen = torch.Generator(device="cuda").manual_seed(12)
    q, k, v = (torch.randn(B, H, T, d, device="cuda", dtype=torch.bfloat16, generator=gen)
               for _ in range(3))
    gamma = gamma_schedule(H).tolist()
    parallel_retention(q, k, v, gamma)                                  # warm-up (cuBLAS workspace)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    o = parallel_retention(q, k, v, gamma)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before - o.numel() * o.element_size()
    scores_float32 = B * H * T * T * 4
    assert extra <= 1.5 * scores_float32, f"{extra / 2**30:.2f} GiB beyond the inputs"


def test_one_recurrent_step_replays_as_a_cuda_graph(rel_err):
    """The form-level decode step captured in a CUDA graph gives the eager numbers (γ a device
    tensor)."""
    q, k, v, S0 = cuda(*random_inputs(8, 4, 1, 16, 16, seed=13), dtype=torch.float32)
    gamma = torch.tensor(GAMMAS, device="cuda")
    expected = recurrent_retention(q, k, v, gamma, state=S0)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        recurrent_retention(q, k, v, gamma, state=S0)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = recurrent_retention(q, k, v, gamma, state=S0)
    graph.replay()
    for got, want in zip(captured, expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize("T,chunk_size", [(4096, 64), (4100, 256)])
def test_chunkwise_float32_on_gpu_at_length(T, chunk_size, rel_err):
    """Many chunks (up to 64) in one batched pass, ragged or not, against the float64 form on the
    GPU."""
    gamma = gamma_schedule(4).tolist()
    q, k, v, S0 = cuda(*random_inputs(1, 4, T, 32, 32, seed=T))                 # float64
    truth, S_truth = chunkwise_retention(q, k, v, gamma, 512, state=S0)
    o, S = chunkwise_retention(*(x.float() for x in (q, k, v)), gamma, chunk_size, state=S0.float())
    assert (
        rel_err(o, truth) <= TOLERANCE[torch.float32]
        and rel_err(S, S_truth) <= TOLERANCE[torch.float32]
    )
