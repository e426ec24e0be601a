"""The RetNet language model: presets, the three modes, state hand-off, generation, precision, bad
input."""
from __future__ import annotations

import pytest
import torch

from helpers import token_ids
from retnet_ref.generation import generate_tokens, sample_next
from retnet_ref.model import RetNet, RetNetConfig
from retnet_ref.presets import NOMINAL_PARAMETERS, count_parameters
from retnet_ref.state import RetNetState

MODES = [("parallel", None), ("recurrent", None), ("chunkwise", 8), ("chunkwise", 5)]
VARIANTS = ["paper", "official"]
# Tolerances (max |a - b| / max |b| over the logits), each from a measurement on CPU, tiny preset, T
# ≤ 256:
TOL64 = 1e-12     # float64 modes: measured ≤ 1.5e-15
TOL32 = 5e-6      # float32 modes, against each other and against float64: measured ≤ 7.6e-7
# bf16 autocast against float32 (logits come out in bf16, inputs of every matmul are
TOL_BF16 = 5e-2
                  # rounded to 8 bits): measured ≤ 1.6e-2 on CPU (paper 1.0e-2, official 1.6e-2, T ≤
                  # 256) and ≤ 1.8e-2 on one H200 (T ≤ 1024); 5e-2 leaves a margin of about 3


def tiny(variant="paper", dtype=torch.float64, seed=0, **overrides):
    torch.manual_seed(seed)
    return RetNet(RetNetConfig.preset("tiny", variant=variant, **overrides)).to(dtype)


# ---------------------------------------------------------------- configuration and presets

# exact counts (meta device): paper variant = L (12 d² + 4 d) + 2 V d + 2 d with V = 32,000
PRESET_PARAMETERS = {
    ("1.3B", "paper"): 1_339_232_256, ("2.7B", "paper"): 2_680_755_200,
                     ("6.7B", "paper"): 6_705_127_424,
    ("1.3B", "official"): 1_351_714_816, ("2.7B", "official"): 2_687_142_400,
    ("6.7B", "official"): 6_771_970_048,
}


@pytest.mark.parametrize("name,variant", sorted(PRESET_PARAMETERS))
def test_paper_presets_have_their_nominal_size(name, variant):
    config = RetNetConfig.preset(name, variant=variant)
    with torch.device("meta"):
        model = RetNet(config)
    count = count_parameters(model)
    assert count == PRESET_PARAMETERS[name, variant]
    assert abs(count / NOMINAL_PARAMETERS[name] - 1) <= 0.05
    if variant == "paper":
        d, L, V = config.d_model, config.num_layers, config.vocab_size
        assert count == L * (12 * d * d + 4 * d) + 2 * V * d + 2 * d


def test_preset_table():
    c = RetNetConfig.preset("6.7B")
    assert (c.d_model, c.num_layers, c.num_heads, c.ffn_dim, c.value_dim) == (4096, 32, 16, 8192,
                                                                              8192)
    # the paper's head dims
    assert c.d_model // c.num_heads == 256 and c.value_dim // c.num_heads == 512
    o = RetNetConfig.preset("1.3B", variant="official")
    assert (o.value_dim, o.ffn_dim, o.norm_kind, o.gated_ffn,
            o.activation) == (3456, 3456, "rmsnorm", True, "swish")
    assert RetNetConfig.preset("tiny", num_layers=3).num_layers == 3


# ---------------------------------------------------------------- modes


@pytest.mark.parametrize("variant", VARIANTS)
def test_modes_give_the_same_logits_in_float64(variant, rel_err):
    model = tiny(variant)
    x = token_ids()
    reference, state = model(x)
    assert reference.shape == (2, 37, 256) and state.n == 37
    for mode, chunk_size in MODES[1:]:
        assert rel_err(model(x, mode, chunk_size)[0], reference) < TOL64


@pytest.mark.parametrize("variant", VARIANTS)
def test_modes_give_the_same_gradients_in_float64(variant, rel_err):
    x = token_ids(length=13)
    grads = {}
    for mode, chunk_size in MODES[:3]:
        model = tiny(variant)
        logits, _ = model(x, mode, chunk_size)
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1),
                                          x[:, 1:].flatten()).backward()
        grads[mode] = {name: p.grad for name, p in model.named_parameters()}
    for mode in ("recurrent", "chunkwise"):
        for name, g in grads[mode].items():
            assert rel_err(g, grads["parallel"][name]) < TOL64, name


# the paper's ablations of MSR (Table 6), in both variants
ABLATIONS = [pytest.param(variant, ablation, id=f"{variant}-{name}") for variant in VARIANTS
             for name, ablation in (("no-gate", dict(swish_gate=False)), ("no-groupnorm",
                                                                          dict(group_norm=False)),
                                    ("neither", dict(swish_gate=False, group_norm=False)))]


@pytest.mark.parametrize("variant, ablation", ABLATIONS)
def test_ablated_models_keep_the_three_forms_equal(variant, ablation, rel_err):
    """Logits, loss gradients and the decode step agree in float64 with the gate or GroupNorm
    off."""
    x = token_ids(length=13)
    logits, grads = {}, {}
    for mode, chunk_size in MODES[:3]:
        model = tiny(variant, **ablation)
        logits[mode], state = model(x, mode, chunk_size)
        torch.nn.functional.cross_entropy(logits[mode][:, :-1].flatten(0, 1),
                                          x[:, 1:].flatten()).backward()
        grads[mode] = {name: p.grad for name, p in model.named_parameters()}
    for mode in ("recurrent", "chunkwise"):
        assert rel_err(logits[mode], logits["parallel"]) < TOL64
        for name, g in grads[mode].items():
            assert rel_err(g, grads["parallel"][name]) < TOL64, name
    with torch.no_grad():
        _, state = model(x[:, :-1], "chunkwise", 5)
        assert rel_err(model.decode_step(x[:, -1], state), logits["parallel"][:, -1]) < TOL64


@pytest.mark.parametrize("variant, ablation", ABLATIONS)
def test_ablations_change_the_parameter_count_by_exactly_what_they_remove(variant, ablation):
    """No gate: W_G (d × value_dim) in every layer; no GroupNorm: nothing (the per-head norm has no
    affine)."""
    full, ablated = tiny(variant), tiny(variant, **ablation)
    c = full.config
    removed = 0 if ablation.get("swish_gate", True) else c.num_layers * c.d_model * c.value_dim
    assert count_parameters(ablated) == count_parameters(full) - removed
    assert all((block.retention.g_proj is None) == (removed > 0) for block in ablated.blocks)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prefill_chunkwise_then_recurrent_steps_equals_parallel(variant, rel_err):
    model = tiny(variant)
    x = token_ids()
    whole, whole_state = model(x)
    prompt, state = model(x[:, :20], "chunkwise", 6)
    steps = [prompt]
    for n in range(20, 30):
        logits, state = model(x[:, n:n + 1], "recurrent", state=state)
        steps.append(logits)
    rest, state = model(x[:, 30:], "parallel", state=state)
    steps.append(rest)
    assert rel_err(torch.cat(steps, dim=1), whole) < TOL64
    assert state.n == 37
    for ours, theirs in zip(state.layers, whole_state.layers):
        assert rel_err(ours.S, theirs.S) < TOL64 and rel_err(ours.z, theirs.z) < TOL64


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_modes_agree_within_the_measured_tolerance(variant, rel_err):
    x = token_ids(length=64)
    model32 = tiny(variant, torch.float32)
    model64 = tiny(variant, torch.float64)
    with torch.no_grad():
        reference = model64(x)[0]
        logits = {mode: model32(x, mode, chunk_size)[0] for mode, chunk_size in MODES[:3]}
    for mode, value in logits.items():
        assert value.dtype == torch.float32
        assert rel_err(value, reference) < TOL32
        assert rel_err(value, logits["parallel"]) < TOL32


def _bf16_against_float32(variant, device, rel_err):
    x = token_ids(length=64).to(device)
    model = tiny(variant, torch.float32).to(device)
    with torch.no_grad():
        for mode, chunk_size in MODES[:3]:
            full = model(x, mode, chunk_size)[0]
            with torch.autocast(device, dtype=torch.bfloat16):
                low = model(x, mode, chunk_size)[0]
            assert rel_err(low, full) < TOL_BF16, mode


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_on_cpu(variant, rel_err):
    _bf16_against_float32(variant, "cpu", rel_err)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_at_a_long_length_in_every_mode(variant, rel_err):
    """T = 512 (eight times the default heads' memory of 64 tokens), recurrent included: measured ≤
    2.7e-2 against float32 (official recurrent; paper ≤ 1.1e-2). Every mode's state stays in the
    accumulation dtype, float32, under autocast (a bf16 state would compound one rounding per token
    or chunk; the parallel and chunkwise modes returned one before their state products ran with
    autocast off), and the three modes' states agree as their outputs do."""
    x = token_ids(length=512)
    model = tiny(variant, torch.float32)
    states = {}
    with torch.no_grad():
        for mode, chunk_size in (("parallel", None), ("recurrent", None), ("chunkwise", 64)):
            full = model(x, mode, chunk_size)[0]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low, states[mode] = model(x, mode, chunk_size)
            assert rel_err(low, full) < TOL_BF16, mode
            assert all(layer.S.dtype == layer.z.dtype == torch.float32
                       for layer in states[mode].layers), mode
    for mode in ("parallel", "chunkwise"):
        for ours, recurrent in zip(states[mode].layers, states["recurrent"].layers):
            assert rel_err(ours.S, recurrent.S) < TOL_BF16 and rel_err(ours.z,
                                                                       recurrent.z) < TOL_BF16, mode


@pytest.mark.cuda
@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_on_cuda(variant, rel_err):
    _bf16_against_float32(variant, "cuda", rel_err)


@pytest.mark.cuda
def test_modes_agree_on_cuda_in_float64(rel_err):
    model = tiny("paper").cuda()
    x = token_ids().cuda()
    reference = model(x)[0]
    for mode, chunk_size in MODES[1:]:
        assert rel_err(model(x, mode, chunk_size)[0], reference) < TOL64


# ---------------------------------------------------------------- generation


def greedy_by_parallel_recomputation(model, prompt, steps):
    out = prompt
    for _ in range(steps):
        logits, _ = model(out)
        out = torch.cat((out, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_generation_equals_parallel_recomputation(variant):
    model = tiny(variant)
    prompt = token_ids(length=9)
    generated = model.generate(prompt, 12, chunk_size=4)
    assert generated.shape == (2, 21)
    assert torch.equal(generated, greedy_by_parallel_recomputation(model, prompt, 12))


def test_seeded_sampling_is_reproducible():
    model = tiny(dtype=torch.float32)
    prompt = token_ids(length=5)
    first = model.generate(prompt, 10, temperature=1.0, top_k=20, seed=7)
    assert torch.equal(first, model.generate(prompt, 10, temperature=1.0, top_k=20, seed=7))
    assert not torch.equal(first, model.generate(prompt, 10, temperature=1.0, top_k=20, seed=8))
    assert torch.equal(model.generate(prompt, 10, temperature=1.0, top_k=1, seed=3),
                       model.generate(prompt, 10))
    assert torch.equal(model.generate(prompt, 0), prompt)


def test_sample_next():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 4.0, 3.0, 2.0]])
    assert sample_next(logits).tolist() == [1, 0]
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, 2.0, top_k=2, generator=gen) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {1, 3} and set(draws[:, 1].tolist()) == {0, 1}
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, -1.0)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(logits, 1.0, top_k=0)


def test_generate_tokens_calls_step_once_per_new_token_but_the_last():
    calls = []

    def prefill(prompt):
        return torch.nn.functional.one_hot(prompt[:, -1] + 1, 10).float(), 0

    def step(token, state):
        calls.append(token)
        return torch.nn.functional.one_hot(token + 1, 10).float(), state + 1

    out = generate_tokens(prefill, step, torch.tensor([[0, 1]]), 4)
    assert out.tolist() == [[0, 1, 2, 3, 4, 5]] and len(calls) == 3
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_tokens(prefill, step, torch.tensor([[0, 1]]), -1)
    with pytest.raises(TypeError, match="^prompt must have dtype torch.long"):
        generate_tokens(prefill, step, torch.tensor([[0.0]]), 1)
    with pytest.raises(ValueError, match="^seed must be None or an integer"):
        generate_tokens(prefill, step, torch.tensor([[0, 1]]), 1, temperature=1.0, seed=-1)


# ---------------------------------------------------------------- bad input


def test_bad_tokens_are_rejected():
    model = tiny()
    with pytest.raises(ValueError, match="tokens"):
        model(torch.tensor([[0, 256]]))
    with pytest.raises(ValueError, match="tokens"):
        model(torch.tensor([[-1, 3]]))
    with pytest.raises(TypeError, match="tokens"):
        model(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="tokens"):
        model(torch.tensor([0, 1]))


def test_bad_modes_and_chunk_sizes_are_rejected():
    model = tiny()
    x = token_ids(length=4)
    with pytest.raises(ValueError, match="mode"):
        model(x, "attention")
    with pytest.raises(ValueError, match="chunk_size"):
        model(x, "chunkwise")
    with pytest.raises(ValueError, match="chunk_size"):
        model(x, "chunkwise", 0)
    with pytest.raises(ValueError, match="chunk_size"):
        model(x, "chunkwise", -3)
    with pytest.raises(TypeError, match="chunk_size"):
        model(x, "chunkwise", True)


def test_foreign_states_are_rejected():
    model = tiny()
    x = token_ids(length=4)
    _, state = model(x)
    with pytest.raises(ValueError, match="batch size"):
        model(x[:1], state=state)
    _, deeper = tiny(num_layers=3)(x)
    with pytest.raises(ValueError, match="layers"):
        model(x, state=deeper)
    _, wider = tiny(num_heads=4)(x)
    with pytest.raises(ValueError, match="state.layers"):
        model(x, state=wider)
    with pytest.raises(TypeError, match="state"):
        model(x, state=state.layers)
    assert isinstance(state, RetNetState)


@pytest.mark.parametrize("first", ["parallel", "chunkwise"])
@pytest.mark.parametrize("then", ["parallel", "recurrent", "chunkwise"])
def test_gradients_flow_through_a_carried_state(first, then, rel_err):
    """A loss on the continuation's logits alone, computed from the prefix's state, has the weight
    gradients of the same loss on one pass over the whole sequence: the prefix's keys and values
    reach the loss only through the carried state (a detached state would lose that part of every
    gradient)."""
    model, x, split = tiny(), token_ids(length=21), 13
    weights = torch.randn(2, 21 - split, model.config.vocab_size,
                          generator=torch.Generator().manual_seed(2),
                          dtype=torch.float64)

    def gradients(logits):
        model.zero_grad()
        (weights * logits).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    whole = gradients(model(x)[0][:, split:])
    _, state = model(x[:, :split], first, 5 if first == "chunkwise" else None)
    handed_off = gradients(model(x[:, split:], then, 3 if then == "chunkwise" else None, state)[0])
    for name, g in whole.items():
        assert rel_err(handed_off[name], g) < TOL64, name
    assert handed_off["blocks.0.retention.k_proj.weight"].abs().max() > 0


def test_detached_state_carries_no_graph():
    model = tiny()
    _, state = model(token_ids(length=4))
    assert state.layers[0].S.requires_grad
    detached = state.detach()
    assert not any(layer.S.requires_grad or layer.z.requires_grad for layer in detached.layers)
    assert detached.n == state.n == 4


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        RetNetConfig(variant="llama")
    with pytest.raises(ValueError, match="d_model"):
        RetNetConfig(d_model=0)
    with pytest.raises(ValueError, match="preset"):
        RetNetConfig.preset("13B")
    with pytest.raises(ValueError, match="normalisation"):
        RetNetConfig(normalisation="none")
    with pytest.raises(ValueError, match="gamma"):
        RetNetConfig(gamma="cosine")
    with pytest.raises(ValueError, match="gamma"):
        RetNet(RetNetConfig(gamma=(0.9, 1.5)))
    with pytest.raises(TypeError, match="config"):
        RetNet({"d_model": 64})
    with pytest.raises(ValueError, match="swish_gate must be True or False, got 'false'"):
        RetNetConfig(swish_gate="false")
    with pytest.raises(ValueError, match="group_norm must be True or False, got 1"):
        RetNetConfig(group_norm=1)


@pytest.mark.cuda
def test_generation_on_cuda_equals_cpu_and_parallel_recomputation():
    model = tiny("paper")
    prompt = token_ids(length=5)
    on_cpu = model.generate(prompt, max_new_tokens=6)
    on_gpu = model.cuda().generate(prompt.cuda(), max_new_tokens=6)
    assert torch.equal(on_gpu.cpu(), on_cpu)
    assert torch.equal(on_gpu, greedy_by_parallel_recomputation(model, prompt.cuda(), 6))


# ---------------------------------------------------------------- the decode step (in place,
# graph-friendly)


@pytest.mark.parametrize("variant", VARIANTS)
def test_decode_step_equals_the_recurrent_mode_and_writes_the_state_in_place(variant, rel_err):
    model, x = tiny(variant), token_ids(length=12)
    with torch.no_grad():
        _, state = model(x[:, :7], "chunkwise", chunk_size=3)
        _, expected = model(x[:, :7], "chunkwise", chunk_size=3)
        pointers = [(layer.S.data_ptr(), layer.z.data_ptr(), layer.n.data_ptr())
                    for layer in state.layers]
        for t in range(7, 12):
            logits = model.decode_step(x[:, t], state)                      # (B, V)
            reference, expected = model(x[:, t:t + 1], "recurrent", state=expected)
            assert rel_err(logits, reference[:, 0]) <= TOL64
    assert [(layer.S.data_ptr(), layer.z.data_ptr(), layer.n.data_ptr())
            for layer in state.layers] == pointers
    assert all(layer.n == 12 for layer in state.layers)
    assert all(rel_err(a.S, b.S) <= TOL64 and rel_err(a.z, b.z) <= TOL64
               for a, b in zip(state.layers, expected.layers))


def test_empty_state_decodes_like_a_model_that_has_seen_nothing(rel_err):
    model, x = tiny(), token_ids(length=4)
    state = model.empty_state(2)
    with torch.no_grad():
        logits = torch.stack([model.decode_step(x[:, t], state) for t in range(4)], dim=1)
        full, _ = model(x, "parallel")
    assert rel_err(logits, full) <= TOL64
    assert model.empty_state(3, position=100).n == 100


def test_snapshot_restores_the_state_after_decode_steps():
    model, x = tiny(), token_ids(length=6)
    with torch.no_grad():
        _, state = model(x[:, :3], "chunkwise", chunk_size=2)
        before = [(layer.S.clone(), layer.z.clone()) for layer in state.layers]
        restore = state.snapshot()
        model.decode_step(x[:, 3], state)
        restore()
    assert state.n == 3
    assert all(torch.equal(layer.S, S) and torch.equal(layer.z, z) for layer,
               (S, z) in zip(state.layers, before))


def test_decay_and_angle_buffers_stay_float64_when_the_model_changes_dtype():
    model = tiny(dtype=torch.bfloat16)
    retention = model.blocks[0].retention
    assert retention.log_gamma.dtype == retention.theta.dtype == torch.float64
    assert torch.equal(retention.log_gamma, torch.log(torch.as_tensor(retention.gamma)))
    assert "log_gamma" not in model.state_dict() and "theta" not in str(list(model.state_dict()))


def test_cuda_graph_generation_needs_a_cuda_prompt():
    with pytest.raises(ValueError, match="cuda_graph=True needs a prompt on a CUDA device"):
        tiny().generate(token_ids(length=3), 2, cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph must be None, True or False"):
        tiny().generate(token_ids(length=3), 2, cuda_graph="yes")


def test_decode_step_rejects_a_token_batch_of_the_wrong_shape():
    model = tiny()
    with pytest.raises(ValueError, match="token must be a \\(B,\\) tensor"):
        model.decode_step(token_ids(length=2), model.empty_state(2))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_cuda_graph_generation_equals_eager_generation(dtype):
    model = tiny("paper", dtype=dtype).cuda()
    prompt = token_ids(length=5).cuda()
    eager = model.generate(prompt, max_new_tokens=8, cuda_graph=False)
    graphed = model.generate(prompt, max_new_tokens=8, cuda_graph=True)
    assert torch.equal(graphed, eager)
    sampled = [model.generate(prompt, 8, temperature=1.0, top_k=20, seed=3, cuda_graph=g)
               for g in (False, True)]
    assert torch.equal(*sampled)


@pytest.mark.cuda
def test_buffers_follow_the_model_to_the_gpu_in_float64():
    model = tiny(dtype=torch.float32).cuda().to(torch.bfloat16)
    retention = model.blocks[0].retention
    assert retention.log_gamma.device.type == retention.theta.device.type == "cuda"
    assert retention.log_gamma.dtype == retention.theta.dtype == torch.float64


def test_any_positive_temperature_samples_even_the_smallest():
    logits = torch.tensor([[0.0, 3.0, -1.0], [5.0, 5.0 - 1e-3, 1.0]])
    for temperature in (1e-300, 1e-30):
        token = sample_next(logits, temperature, generator=torch.Generator().manual_seed(0))
        assert token.tolist() == [1, 0]                                  # the limit T → 0 is greedy


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_with_non_finite_logits_is_an_error(temperature):
    model = tiny()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite logits|logits must be finite"):
        model.generate(token_ids(length=3), 4, temperature=temperature, seed=0)


@pytest.mark.parametrize("mode", ["parallel", "chunkwise", "recurrent"])
def test_last_only_gives_the_last_positions_logits_and_the_same_state(mode):
    model = tiny()
    prompt = token_ids(length=11)
    chunk = 4 if mode == "chunkwise" else None
    full, state = model(prompt, mode, chunk)
    last, last_state = model(prompt, mode, chunk, last_only=True)
    assert last.shape == (prompt.shape[0], 1, model.config.vocab_size)
    # the head multiplies one row instead of T: another BLAS path, the same numbers up to rounding
    assert torch.allclose(last, full[:, -1:], rtol=1e-12, atol=1e-12)
    assert all(torch.equal(a.S, b.S) and torch.equal(a.z, b.z) for a,
               b in zip(state.layers, last_state.layers))
