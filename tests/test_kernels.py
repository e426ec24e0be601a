"""The Triton kernels (retnet_ref.kernels) against the float64 forms: outputs, states, gradients,
errors.

On a machine without a GPU the kernels run on CPU tensors in Triton's interpreter (tests/conftest.py
sets TRITON_INTERPRET=1), at small sizes; on a GPU the same tests run compiled, and the `cuda` ones
at full size. The truth is the float64 PyTorch chunkwise form (equal to the NumPy reference to
~1e-15, tests/test_retention.py). Widths are chosen so that d_v spans more than one 64-wide block
with a ragged last block, and lengths so that the last chunk is ragged.
"""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton",
                    reason="the Triton kernels need Triton (pip install 'retnet_ref[triton]')")

from retnet_ref import kernels  # noqa: E402
from retnet_ref.checking import TOLERANCE, random_inputs, relative_error  # noqa: E402
from retnet_ref.decay import gamma_schedule  # noqa: E402
from retnet_ref.kernels.chunkwise import (  # noqa: E402
    NARROW_STATES,
    WIDE_STATES,
    Tile,
    segment_length,
    split_target,
    states_tile,
)
from retnet_ref.kernels.chunkwise import chunkwise_retention as chunkwise_kernel  # noqa: E402
from retnet_ref.model import RetNet, RetNetConfig  # noqa: E402
from retnet_ref.normalisation import normalised_step_, step_decay_factors  # noqa: E402
from retnet_ref.retention import chunkwise_retention  # noqa: E402
from retnet_ref.state import RetentionState  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(not INTERPRETED,
                                                        reason="the interpreter is off "
                                                         "(TRITON_INTERPRET unset: a GPU is "
                                                         "present)")),
           pytest.param("cuda", marks=pytest.mark.cuda)]
GAMMAS = [1.0, 1 - 2 ** -16, 0.97, 0.5]                            # no decay, a slow head, two fast
# Triton 3.9's interpreter converts bfloat16 wrongly (x * 2 of bf16 values comes back as ±2 or 0),
# so bfloat16 is checked compiled, on the GPU only
DEVICE_DTYPES = [pytest.param(*p.values, torch.float32, marks=p.marks) for p in DEVICES] + [
    pytest.param("cuda", torch.bfloat16, marks=pytest.mark.cuda)]


def inputs(device, dtype, T, d_k=32, d_v=80, heads=4, batch=2, seed=0):
    """q, k, v in dtype on device and a float32 state, with their float64 CPU originals."""
    exact = random_inputs(batch, heads, T, d_k, d_v, seed=seed)
    return exact, (*(x.to(device, dtype) for x in exact[:3]), exact[3].to(device, torch.float32))


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("T, chunk_size", [(1, 16), (16, 16), (37, 16), (70, 32)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunkwise_forward_and_gradients_match_float64(device, dtype, T, chunk_size, with_state):
    (q64, k64, v64, S64), (q, k, v, S0) = inputs(device, dtype, T, seed=T)
    exact = [x.clone().requires_grad_() for x in (q64, k64, v64, S64)]
    fast = [x.clone().requires_grad_() for x in (q, k, v, S0)]
    o_ref, R_ref = chunkwise_retention(*exact[:3], GAMMAS, 5, exact[3] if with_state else None)
    o, R = kernels.chunkwise_retention(*fast[:3], GAMMAS, chunk_size, fast[3] if with_state
                                       else None)
    assert o.dtype == dtype and o.device.type == device and R.dtype == torch.float32
    tol = TOLERANCE[dtype]
    assert relative_error(o, o_ref) < tol and relative_error(R, R_ref) < tol
    # the gradients of a loss that reads both outputs (the final state's gradient enters the
    # backward)
    gen = torch.Generator().manual_seed(1)
    w_o, w_R = (
        torch.randn(o_ref.shape, generator=gen, dtype=torch.float64),
        torch.randn(R_ref.shape, generator=gen, dtype=torch.float64),
    )
    ((o_ref * w_o).sum() + (R_ref * w_R).sum()).backward()
    ((o.double() * w_o.to(device)).sum() + (R.double() * w_R.to(device)).sum()).backward()
    for name, a, b in zip("qkvS", fast, exact):
        if name == "S" and not with_state:
            assert a.grad is None
            continue
        assert relative_error(a.grad, b.grad) < tol, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("segment_chunks", [1, 2, 3, 5])
@pytest.mark.parametrize("with_state", [False, True])
def test_forward_split_into_segments_is_the_same_function(device, segment_chunks, with_state):
    """5 chunks (the last ragged) in segments of 1, 2, 3 and 5 chunks: the segments' own sums, the
    scan over them and the output pass started from each segment's state give the float64 outputs,
    final state and gradients (the backward reads the chunk states the output pass stored)."""
    (q64, k64, v64, S64), (q, k, v, S0) = inputs(device, torch.float32, 70, seed=3)
    exact = [x.clone().requires_grad_() for x in (q64, k64, v64, S64)]
    fast = [x.clone().requires_grad_() for x in (q, k, v, S0)]
    o_ref, R_ref = chunkwise_retention(*exact[:3], GAMMAS, 7, exact[3] if with_state else None)
    o, R = chunkwise_kernel(*fast[:3], GAMMAS, 16, fast[3] if with_state else None,
                            segment_chunks=segment_chunks)
    tol = TOLERANCE[torch.float32]
    assert relative_error(o, o_ref) < tol and relative_error(R, R_ref) < tol
    (o_ref.sum() + R_ref.sum()).backward()
    (o.sum() + R.sum()).backward()
    for name, a, b in zip("qkvS" if with_state else "qkv", fast, exact):
        assert relative_error(a.grad, b.grad) < tol, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tiles", [
    {"states": Tile(16, 32), "output": Tile(32, 16, warps=8, stages=2)},
    {"states": Tile(32, 128, warps=8, stages=1), "output": Tile(16, 128)},
    {"dq_dk": Tile(16, 16, warps=2), "dv": Tile(32, 128, stages=4)},
    {"dq_dk": Tile(32, 128), "dv": Tile(16, 16)},
], ids=["narrow-pass-1", "wide-d_v", "narrow-backward", "wide-backward"])
def test_every_tiling_is_the_same_function(device, tiles):
    """d_k = 32, d_v = 80 cut into blocks of 16 (several per head, the last of d_v ragged) or
    wider than the head (one block, cut to it), pass 1 split into segments of 2 chunks: the
    float64 outputs, final state and gradients. Warps and stages change the GPU's schedule only
    (the interpreter ignores them)."""
    (q64, k64, v64, S64), (q, k, v, S0) = inputs(device, torch.float32, 70, seed=4)
    exact = [x.clone().requires_grad_() for x in (q64, k64, v64, S64)]
    fast = [x.clone().requires_grad_() for x in (q, k, v, S0)]
    o_ref, R_ref = chunkwise_retention(*exact[:3], GAMMAS, 7, exact[3])
    o, R = chunkwise_kernel(*fast[:3], GAMMAS, 16, fast[3], segment_chunks=2, tiles=tiles)
    tol = TOLERANCE[torch.float32]
    assert relative_error(o, o_ref) < tol and relative_error(R, R_ref) < tol
    (o_ref.sum() + R_ref.sum()).backward()
    (o.sum() + R.sum()).backward()
    for name, a, b in zip("qkvS", fast, exact):
        assert relative_error(a.grad, b.grad) < tol, name


@pytest.mark.parametrize("tiles, named", [
    ({"pass1": Tile()}, "keys are among"),
    ([Tile()], "must be a dict"),
    ({"states": (64, 64, 4, 3)}, r"tiles\['states'\] must be a Tile"),
    ({"output": Tile(48, 64)}, r"tiles\['output'\]"),
    ({"dv": Tile(8, 64)}, r"tiles\['dv'\]"),
    ({"dq_dk": Tile(warps=3)}, r"tiles\['dq_dk'\]"),
    ({"states": Tile(stages=0)}, r"tiles\['states'\]"),
    ({"states": 5}, r"tiles\['states'\] must be a Tile"),
    ({"output": Tile(warps=4.0)}, r"tiles\['output'\]"),
])
def test_tiles_are_checked(tiles, named):
    _, (q, k, v, _) = inputs("cpu", torch.float32, 16)
    with pytest.raises(ValueError, match=named):
        chunkwise_kernel(q, k, v, GAMMAS, 16, tiles=tiles)


@pytest.mark.parametrize("N, per_segment, wanted, G", [
    (64, 128, 264, 32),          # 128 programs take a second segment to reach 256 of 264
    (64, 256, 264, 64),          # 256: a second segment would pass 264, so none
    (16, 1024, 264, 16),         # enough programs: one segment of all 16 chunks
    (1024, 8, 132, 64),          # one sequence of 8 heads: 16 segments, 128 programs (not 17)
    (1024, 7, 132, 57),          # 18 segments, the last shorter
    (3, 1, 264, 1),              # never more segments than chunks
    (0, 16, 264, 1),             # an empty sequence: one empty segment
])
def test_segment_length_gives_the_programs_wanted(N, per_segment, wanted, G):
    assert segment_length(N, per_segment, wanted) == G


@pytest.mark.parametrize("programs, wanted", [(32, 132), (65, 132), (66, 1), (128, 1)])
def test_the_recursion_is_split_only_below_half_a_program_per_multiprocessor(programs, wanted):
    """On 132 multiprocessors: 32 programs (T = 65,536, batch 1) are split up to 132; 128 (T =
    16,384, batch 4), where a split was measured slower, are not."""
    assert split_target(programs, 132) == wanted


@pytest.mark.parametrize("batch_heads, d, tile", [
    (512, 128, WIDE_STATES),     # T = 1024 at 65,536 tokens, 8 heads
    (128, 128, WIDE_STATES),     # T = 4096
    (66, 128, WIDE_STATES),      # half a program per multiprocessor
    (65, 128, NARROW_STATES),
    (32, 128, NARROW_STATES),    # T = 16,384: 32 wide programs, 128 narrow ones
    (32, 256, WIDE_STATES),      # a head of 256: four wide blocks each, 128 programs
    (17, 128, NARROW_STATES),    # 68 narrow programs: half a program per multiprocessor
    (16, 128, WIDE_STATES),      # 64 narrow programs: split anyway, so wide blocks
    (8, 128, WIDE_STATES),       # T = 65,536, batch 1: 8 wide programs in segments
])
def test_the_recursion_takes_wide_blocks_while_they_give_enough_programs(batch_heads, d, tile):
    assert states_tile(batch_heads, d, d, 132) == tile


@pytest.mark.parametrize("device", DEVICES)
def test_a_given_states_tile_is_not_replaced_by_the_shape_rule(device, monkeypatch):
    """tiles["states"] given: that Tile is launched; not given: the shape rule's (batch 2 × 4
    heads: wide blocks on a GPU, where even narrow ones are too few and the recursion is split,
    and under the interpreter, 1 multiprocessor)."""
    from retnet_ref.kernels import chunkwise
    launched = []
    real = chunkwise._recursion
    monkeypatch.setattr(chunkwise, "_recursion",
                        lambda *args: launched.append(args[-1]) or real(*args))
    _, (q, k, v, _) = inputs(device, torch.float32, 16)
    chunkwise.chunkwise_retention(q, k, v, GAMMAS, 16, tiles={"states": Tile(16, 32)})
    chunkwise.chunkwise_retention(q, k, v, GAMMAS, 16)
    assert launched == [Tile(16, 32), WIDE_STATES]


def test_segment_chunks_is_checked():
    _, (q, k, v, _) = inputs("cpu", torch.float32, 16)
    with pytest.raises(ValueError, match="segment_chunks"):
        chunkwise_kernel(q, k, v, GAMMAS, 16, segment_chunks=0)


@pytest.mark.parametrize("device", DEVICES)
def test_chunkwise_empty_sequence_returns_the_state(device):
    _, (q, k, v, S0) = inputs(device, torch.float32, 0)
    o, R = kernels.chunkwise_retention(q, k, v, GAMMAS, 16, S0)
    assert o.shape == (2, 4, 0, 80) and torch.equal(R, S0) and R.data_ptr() != S0.data_ptr()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalisation", ["exact", "torchscale"])
def test_fused_step_equals_the_pytorch_step(device, normalisation):
    """Several steps of the fused kernel against normalised_step_: output, S, z and n. d_v = 200
    spans four programs per head, so a program that read z after another had updated it would
    show."""
    B, H, d_k, d_v = 2, 4, 32, 200
    gen = torch.Generator().manual_seed(2)
    S, z = torch.randn(B, H, d_k, d_v, generator=gen), torch.randn(B, H, d_k, generator=gen)
    ours, theirs = (RetentionState(S.clone().to(device), z.clone().to(device), 3) for _ in range(2))
    log_g = torch.log(torch.tensor(GAMMAS, dtype=torch.float64, device=device))
    for _ in range(3):
        q, k = (torch.randn(B, H, 1, d_k, generator=gen).to(device) for _ in range(2))
        v = torch.randn(B, H, 1, d_v, generator=gen).to(device)
        gap, floor = step_decay_factors(log_g, theirs.n, d_k, torch.float32)
        expected = normalised_step_(q, k, v, theirs, gap, floor, normalisation)
        got = kernels.triton_normalised_step_(q, k, v, ours, gap, floor, normalisation)
        assert relative_error(got, expected) < TOLERANCE[torch.float32]
        assert relative_error(ours.S, theirs.S) < TOLERANCE[torch.float32]
        assert relative_error(ours.z, theirs.z) < TOLERANCE[torch.float32]
        assert int(ours.n) == int(theirs.n)


def small_model(device, backend="torch", **ablation):
    torch.manual_seed(0)
    config = RetNetConfig(vocab_size=50, d_model=64, num_layers=2, num_heads=2, chunk_size=16,
                          backend=backend,
                          **ablation)
    return RetNet(config).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ablation", [{}, dict(swish_gate=False, group_norm=False)],
                         ids=["full", "no-gate-no-gn"])
def test_model_on_triton_kernels_matches_pytorch_forms(device, ablation):
    """Chunkwise training (logits, loss gradients) and a decode step agree between the two backends,
    also with the gate and GroupNorm off (Table 6's ablations: the fused step computes the heads
    only)."""
    model = small_model(device, **ablation)
    tokens = torch.randint(0, 50, (2, 37), generator=torch.Generator().manual_seed(3)).to(device)
    results = {}
    for backend in kernels.BACKENDS:
        model.set_backend(backend).zero_grad()
        logits, state = model(tokens, "chunkwise", 16)
        logits.square().mean().backward()
        step_logits = model.decode_step(tokens[:, 0], state)
        results[backend] = (logits, [p.grad.clone() for p in model.parameters()], step_logits,
                            state)
    (l_t, g_t, s_t, st_t), (l_k, g_k, s_k, st_k) = results["torch"], results["triton"]
    tol = TOLERANCE[torch.float32]
    assert relative_error(l_k, l_t) < tol and relative_error(s_k, s_t) < tol
    assert all(relative_error(a, b) < tol for a, b in zip(g_k, g_t))
    assert all(relative_error(a.S, b.S) < tol and relative_error(a.z, b.z) < tol
               for a, b in zip(st_k.layers, st_t.layers))


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_is_named(device):
    _, (q, k, v, S0) = inputs(device, torch.float32, 20)
    with pytest.raises(ValueError, match="chunk_size must be one of"):
        kernels.chunkwise_retention(q, k, v, GAMMAS, 48)
    with pytest.raises(TypeError, match="float64 is the PyTorch forms'"):
        kernels.chunkwise_retention(*(x.double() for x in (q, k, v)), GAMMAS, 16)
    with pytest.raises(TypeError, match="does not take float16 .* overflow past 65,504"):
        kernels.chunkwise_retention(*(x.half() for x in (q, k, v)), GAMMAS, 16)
    with pytest.raises(ValueError, match="d_k, d_v ≥ 16"):
        kernels.chunkwise_retention(q[..., :8], k[..., :8], v, GAMMAS, 16)
    with pytest.raises(ValueError, match="gamma"):
        kernels.chunkwise_retention(q, k, v, [0.9] * 3, 16)
    with pytest.raises(ValueError, match="backend must be one of"):
        RetNetConfig(backend="cuda")
    with pytest.raises(ValueError, match="tile height"):
        RetNetConfig(backend="triton")                                   # chunk_size 512 is no tile
    with pytest.raises(ValueError, match="chunk_size must be one of"):
        small_model(device, "triton")(torch.zeros(1, 20, dtype=torch.long, device=device),
                                      "chunkwise", 20)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    _, (q, k, v, _) = inputs("cpu", torch.float32, 20)
    with pytest.raises(ValueError, match="runs on CUDA tensors"):
        kernels.chunkwise_retention(q, k, v, GAMMAS, 16)


# ---------------------------------------------------------------- full size, on the GPU


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_full_size_chunkwise_with_a_ragged_end(dtype):
    """Head width 128, the paper's schedule of 8 heads, T = 1000 (a ragged last chunk of 40 at C =
    64)."""
    gammas = gamma_schedule(8).tolist()
    (q64, k64, v64, S64), (q, k, v, S0) = inputs("cuda", dtype, 1000, d_k=128, d_v=128, heads=8,
                                                 seed=5)
    exact = [x.cuda().requires_grad_() for x in (q64, k64, v64, S64)]
    fast = [x.clone().requires_grad_() for x in (q, k, v, S0)]
    o_ref, R_ref = chunkwise_retention(*exact[:3], gammas, 100, exact[3])
    o, R = kernels.chunkwise_retention(*fast[:3], gammas, 64, fast[3])
    tol = TOLERANCE[dtype]
    assert relative_error(o, o_ref) < tol and relative_error(R, R_ref) < tol
    w = torch.randn_like(o_ref)
    (o_ref * w).sum().backward()
    (o.double() * w).sum().backward()
    assert all(relative_error(a.grad, b.grad) < tol for a, b in zip(fast, exact))


@pytest.mark.cuda
def test_fused_step_in_a_cuda_graph_at_the_largest_preset_shape():
    """The 6.7B layer's heads (16 × 256 × 512), captured in a CUDA graph and replayed, as generate()
    does."""
    B, H, d_k, d_v = 8, 16, 256, 512
    gen = torch.Generator(device="cuda").manual_seed(4)
    S, z = torch.randn(B, H, d_k, d_v, device="cuda",
                       generator=gen), torch.randn(B, H, d_k, device="cuda",
                                                                                    generator=gen)
    ours, theirs = RetentionState(S.clone(), z.clone(), 9), RetentionState(S.clone(), z.clone(), 9)
    log_g = torch.log(torch.tensor(gamma_schedule(H), dtype=torch.float64, device="cuda"))
    q, k = (torch.randn(B, H, 1, d_k, device="cuda", dtype=torch.bfloat16, generator=gen)
            for _ in range(2))
    v = torch.randn(B, H, 1, d_v, device="cuda", dtype=torch.bfloat16, generator=gen)
    gap, floor = step_decay_factors(log_g, ours.n, d_k, torch.float32)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):                                      # compile outside the capture
        kernels.triton_normalised_step_(q, k, v, RetentionState(S.clone(), z.clone(), 9), gap,
                                        floor)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = kernels.triton_normalised_step_(q, k, v, ours, gap, floor)
    graph.replay()
    expected = normalised_step_(q, k, v, theirs, gap, floor)
    assert relative_error(out, expected) < TOLERANCE[torch.bfloat16]
    assert relative_error(ours.S, theirs.S) < TOLERANCE[torch.float32]
    assert relative_error(ours.z, theirs.z) < TOLERANCE[torch.float32]


@pytest.mark.cuda
def test_chunkwise_with_more_than_two_to_the_31_state_elements():
    """A 1.3B layer's heads (d_k = 256, d_v = 512) over 65,600 tokens at B·H = 16: the per-chunk
    states (B·H, T/C, d_k, d_v) hold 2.2e9 elements, past what a 32-bit offset reaches (a prefill of
    8 × 32k tokens crashed with an illegal memory access before the offsets were 64-bit)."""
    B, H, T, d_k, d_v, C = 2, 8, 65600, 256, 512, 64
    assert B * H * -(-T // C) * d_k * d_v > 2 ** 31
    gen = torch.Generator(device="cuda").manual_seed(6)
    q, k = (torch.randn(B, H, T, d_k, device="cuda", generator=gen).div_(16).bfloat16()
            for _ in range(2))
    v = torch.randn(B, H, T, d_v, device="cuda", generator=gen).bfloat16()
    gammas = gamma_schedule(H).tolist()
    o, R = kernels.chunkwise_retention(q, k, v, gammas, C)
    o_ref, R_ref = chunkwise_retention(q.float(), k.float(), v.float(), gammas, 512)
    # the last batch·head holds the offsets past 2^31; compare it alone and everything together
    assert relative_error(o[-1, -1], o_ref[-1, -1]) < TOLERANCE[torch.bfloat16]
    assert relative_error(o, o_ref) < TOLERANCE[torch.bfloat16]
    # v ⊙ ζ enters the products in bfloat16
    assert relative_error(R, R_ref) < TOLERANCE[torch.bfloat16]
