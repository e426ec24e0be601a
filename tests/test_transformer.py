"""The Transformer baseline: static KV-cache decoding, generation, parameter budget, causality, bad
input."""
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from helpers import token_ids
from retnet_ref.presets import count_parameters
from retnet_ref.rotation import rotate
from retnet_ref.transformer import KVCache, Transformer, TransformerConfig


def tiny_model(seed=0, dtype=torch.float64, **overrides):
    torch.manual_seed(seed)
    return Transformer(TransformerConfig.preset("tiny", **overrides)).to(dtype).eval()


def cache_pointers(cache):
    return [t.data_ptr() for t in (*cache.keys, *cache.values, cache.length)]


def decode(model, x, prefix, capacity=None):
    """Prefill x[:, :prefix] with forward into an empty cache, then decode_step the rest → (logits,
    cache)."""
    cache = model.empty_cache(x.shape[0], capacity or x.shape[1])
    logits, returned = model(x[:, :prefix], cache)
    assert returned is cache
    pieces = [logits]
    for t in range(prefix, x.shape[1]):
        pieces.append(model.decode_step(x[:, t], cache)[:, None])   # (B, 1, V)
    return torch.cat(pieces, dim=1), cache


# ---------------------------------------------------------------- the static cache equals a full
# forward


@pytest.mark.parametrize("prefix", [1, 5, 11])
def test_kv_cache_decoding_equals_full_forward(prefix, rel_err):
    model, x = tiny_model(), token_ids(2, 12)
    with torch.no_grad():
        full, _ = model(x)
        cache = model.empty_cache(2, 12)
        logits, _ = model(x[:, :prefix], cache)
        pieces = [logits]
        for t in range(prefix, x.shape[1]):
            logits, returned = model(x[:, t:t + 1], cache)         # forward with a cache, one token
            assert returned is cache
            pieces.append(logits)
    assert cache.length == x.shape[1]
    assert rel_err(torch.cat(pieces, dim=1), full) <= 1e-10


def test_decode_step_equals_full_forward(rel_err):
    model, x = tiny_model(), token_ids(2, 12)
    with torch.no_grad():
        full, _ = model(x)
        logits, cache = decode(model, x, prefix=3)                  # 9 decode steps
    assert cache.length == 12
    assert rel_err(logits, full) <= 1e-10


@pytest.mark.parametrize("capacity", [13, 20])
def test_multi_token_extension_of_a_cache_equals_full_forward(capacity, rel_err):
    # several new tokens after a cache need a bottom-right-aligned causal mask (is_causal is
    # top-left); with spare capacity the unwritten slots must stay out of the attention
    model, x = tiny_model(), token_ids(3, 13)
    with torch.no_grad():
        full, _ = model(x)
        cache = model.empty_cache(3, capacity)
        a, _ = model(x[:, :4], cache)
        b, _ = model(x[:, 4:9], cache)
        c, _ = model(x[:, 9:], cache)
    assert cache.length == 13
    assert rel_err(torch.cat([a, b, c], dim=1), full) <= 1e-10


def test_forward_with_a_cache_and_decode_step_mix(rel_err):
    model, x = tiny_model(), token_ids(2, 16)
    with torch.no_grad():
        full, _ = model(x)
        cache = model.empty_cache(2, 20)
        pieces = [model(x[:, :3], cache)[0]]
        pieces += [model.decode_step(x[:, t], cache)[:, None] for t in (3, 4)]      # (B, 1, V) each
        pieces.append(model(x[:, 5:9], cache)[0])
        pieces.append(model.decode_step(x[:, 9], cache)[:, None])                   # (B, 1, V)
        pieces.append(model(x[:, 10:11], cache)[0])
        # (B, 1, V) each
        pieces += [model.decode_step(x[:, t], cache)[:, None] for t in range(11, 16)]
    assert cache.length == 16
    assert rel_err(torch.cat(pieces, dim=1), full) <= 1e-10


def test_decode_step_updates_the_cache_in_place():
    model, x = tiny_model(), token_ids(2, 10)
    cache = model.empty_cache(2, 10)
    keys, values, pointers = list(cache.keys), list(cache.values), cache_pointers(cache)
    with torch.no_grad():
        model(x[:, :4], cache)
        for t in range(4, 10):
            model.decode_step(x[:, t], cache)
            assert cache.length == t + 1
    assert cache_pointers(cache) == pointers                        # no reallocation
    assert all(a is b for a, b in zip(cache.keys + cache.values, keys + values))


def test_cache_holds_rotated_keys_and_values_per_layer(rel_err):
    config = TransformerConfig.preset("tiny")
    model, x = tiny_model(), token_ids(2, 7)
    with torch.no_grad():
        _, full = model(x)                                       # no cache given: one of capacity 7
        _, decoded = decode(model, x, prefix=2, capacity=9)
        attention = model.layers[0].attn
        h = model.layers[0].attn_norm(model.embed(x))            # (B, T, d)
        # (B, H, T, d_head)
        rotated_keys = rotate(attention._heads(attention.k_proj(h)), attention.theta)
    assert full.length == full.capacity == 7 and decoded.capacity == 9
    assert len(full.keys) == len(full.values) == config.num_layers
    for t in (*full.keys, *full.values):
        assert t.shape == (2, config.num_heads, 7, config.head_dim)
    assert torch.equal(full.keys[0], rotated_keys)
    for a, b in zip(decoded.keys + decoded.values, full.keys + full.values):
        assert rel_err(a[:, :, :7], b) <= 1e-10
        assert not a[:, :, 7:].any()                               # slots past the length untouched
    assert full.nbytes() == 2 * config.num_layers * 2 * 7 * config.d_model * 8


def test_empty_cache_is_allocated_once_at_full_capacity():
    config = TransformerConfig.preset("tiny")
    model = tiny_model()
    cache = model.empty_cache(3, 10)
    assert cache.length == 0 and cache.length.dtype == torch.long and cache.length.dim() == 0
    assert cache.batch_size == 3 and cache.capacity == 10
    for t in (*cache.keys, *cache.values):
        assert t.shape == (3, config.num_heads, 10, config.head_dim) and t.dtype == torch.float64
        assert not t.any()
    assert cache.nbytes() == 2 * config.num_layers * 3 * 10 * config.d_model * 8
    assert model.empty_cache(1, 4, dtype=torch.float32).keys[0].dtype == torch.float32
    assert model.empty_cache(1, 4, device="meta").length.device.type == "meta"
    for batch_size, capacity, name, error in [(0, 4, "batch_size", ValueError),
                                              (2.0, 4, "batch_size", TypeError),
                                              (2, 0, "capacity", ValueError),
                                              (2, True, "capacity", TypeError)]:
        with pytest.raises(error, match=name):
            model.empty_cache(batch_size, capacity)


def test_snapshot_rewinds_the_cache(rel_err):
    model, x = tiny_model(), token_ids(2, 8)
    with torch.no_grad():
        expected, _ = decode(model, x, prefix=5)
        cache = model.empty_cache(2, 8)
        model(x[:, :5], cache)
        rewind = cache.snapshot()
        for token in (x[:, 0], x[:, 1]):                            # steps that are then undone
            model.decode_step(token, cache)
        rewind()
        assert cache.length == 5
        # (B, 3, V)
        logits = torch.stack([model.decode_step(x[:, t], cache) for t in range(5, 8)], dim=1)
    assert rel_err(logits, expected[:, 5:]) <= 1e-10


# ---------------------------------------------------------------- a graph-friendly decode step


def test_decode_step_compiles_to_one_graph(rel_err):
    # fullgraph=True fails on any graph break (a host read, a data-dependent branch); the counter
    # shows that the step is compiled once: its shapes do not change as the cache fills
    torch._dynamo.reset()
    model, x = tiny_model(), token_ids(2, 8)
    counter = CompileCounterWithBackend("eager")
    compiled_step = torch.compile(model.decode_step, fullgraph=True, backend=counter)
    with torch.no_grad():
        full, _ = model(x)
        compiled_cache, eager_cache = model.empty_cache(2, 8), model.empty_cache(2, 8)
        model(x[:, :5], compiled_cache)
        model(x[:, :5], eager_cache)
        # (B, 3, V)
        compiled = torch.stack([compiled_step(x[:, t], compiled_cache) for t in range(5, 8)], dim=1)
        # (B, 3, V)
        eager = torch.stack([model.decode_step(x[:, t], eager_cache) for t in range(5, 8)], dim=1)
    assert counter.frame_count == 1
    assert compiled_cache.length == 8
    assert rel_err(compiled, eager) <= 1e-12
    assert rel_err(compiled, full[:, 5:]) <= 1e-10


def test_theta_stays_float64_when_the_model_is_cast():
    model = tiny_model(dtype=torch.float32)
    exact = model.layers[0].attn.theta.clone()
    model.to(torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    for layer in model.layers:
        assert layer.attn.theta.dtype == torch.float64 and torch.equal(layer.attn.theta, exact)
    assert model.empty_cache(1, 4).keys[0].dtype == torch.bfloat16
    model.half().to("meta")
    assert (
        model.layers[0].attn.theta.device.type == "meta"
        and model.layers[0].attn.theta.dtype == torch.float64
    )
    # derived from the config, not saved
    assert not any("theta" in name for name in model.state_dict())


# ---------------------------------------------------------------- generation


def test_greedy_generation_equals_argmax_recomputation():
    model, prompt = tiny_model(), token_ids(2, 4, seed=3)
    out = model.generate(prompt, max_new_tokens=6)
    assert out.shape == (2, 10) and torch.equal(out[:, :4], prompt)
    expected = prompt
    with torch.no_grad():
        for _ in range(6):
            logits, _ = model(expected)                         # no cache: a full forward each step
            expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, expected)


def test_sampled_generation_is_reproducible_with_a_seed():
    model, prompt = tiny_model(dtype=torch.float32), token_ids(2, 3, seed=4)
    a = model.generate(prompt, 8, temperature=1.0, top_k=20, seed=7)
    b = model.generate(prompt, 8, temperature=1.0, top_k=20, seed=7)
    c = model.generate(prompt, 8, temperature=1.0, top_k=20, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cuda_graph_needs_a_cuda_prompt():
    with pytest.raises(ValueError, match="cuda_graph"):
        tiny_model().generate(token_ids(2, 3), 4, cuda_graph=True)


# ---------------------------------------------------------------- budget, causality, positions


@pytest.mark.parametrize("preset", ["tiny", "1.3B", "2.7B", "6.7B"])
def test_parameters_per_layer_are_12_d_squared_plus_norms(preset):
    config = TransformerConfig.preset(preset)
    with torch.device("meta"):
        model = Transformer(config)
    d = config.d_model
    per_layer = count_parameters(model.layers[0])
    # 4 d² (W_Q, W_K, W_V, W_O) + 8 d² (FFN d×4d, 4d×d) + two LayerNorms (weight and bias)
    assert per_layer == 12 * d * d + 4 * d == config.layer_parameters()
    embeddings = 2 * config.vocab_size * d                       # input table and output projection
    assert count_parameters(model) == config.num_layers * per_layer + embeddings + 2 * d


def test_changing_a_future_token_does_not_change_past_logits():
    model, x = tiny_model(), token_ids(2, 10)
    y = x.clone()
    y[:, 6] = (y[:, 6] + 1) % 256
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(y)
    assert torch.equal(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_positions_matter():
    # rotary positions: the same two tokens in the other order give different last logits
    model = tiny_model()
    with torch.no_grad():
        a, _ = model(torch.tensor([[3, 5, 7]]))
        b, _ = model(torch.tensor([[5, 3, 7]]))
    assert not torch.allclose(a[:, -1], b[:, -1])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [torch.tensor([[0, 256]]), torch.tensor([[-1, 3]])])
def test_token_ids_out_of_range_are_rejected(bad):
    model = tiny_model()
    with pytest.raises(ValueError, match="token ids"):
        model(bad)
    cache = model.empty_cache(1, 4)
    with pytest.raises(ValueError, match="token ids"):
        model(bad, cache)
    assert cache.length == 0                                        # nothing written
    with pytest.raises(ValueError, match="token ids"):
        model.generate(bad, 2)


def test_decode_step_leaves_the_id_range_to_the_embedding():
    # decode_step reads no value on the host; an out-of-range id still fails loudly, in nn.Embedding
    model = tiny_model()
    with pytest.raises(IndexError):
        model.decode_step(torch.tensor([256]), model.empty_cache(1, 4))


@pytest.mark.parametrize("bad, error", [(torch.tensor([1, 2, 3]), ValueError),
                                        (torch.tensor([[1.0, 2.0]]), TypeError),
                                        (torch.zeros(2, 0, dtype=torch.long), ValueError),
                                        (torch.zeros(0, 2, dtype=torch.long), ValueError)])
def test_malformed_tokens_are_rejected(bad, error):
    model = tiny_model()
    with pytest.raises(error, match="^tokens must"):
        model(bad)
    with pytest.raises(error, match="^tokens must"):
        model(bad, model.empty_cache(2, 4))


@pytest.mark.parametrize("bad, error", [(torch.tensor([[1, 2]]), ValueError),
                                        (torch.tensor([1.0, 2.0]), TypeError),
                                        (torch.tensor(3), ValueError)])
def test_malformed_decode_tokens_are_rejected(bad, error):
    model = tiny_model()
    with pytest.raises(error, match=r"^token must"):
        model.decode_step(bad, model.empty_cache(2, 4))


def test_cache_of_another_batch_size_is_rejected():
    model = tiny_model()
    with torch.no_grad():
        cache = model.empty_cache(2, 8)
        model(token_ids(2, 5), cache)
        with pytest.raises(ValueError, match="batch of 3"):
            model(token_ids(3, 1), cache)
        with pytest.raises(ValueError, match="batch of 3"):
            model.decode_step(token_ids(3, 1)[:, 0], cache)
    assert cache.length == 5


def test_cache_of_another_depth_or_type_is_rejected():
    model = tiny_model()
    with torch.no_grad():
        cache = model.empty_cache(2, 8)
        shallow = KVCache(cache.keys[:1], cache.values[:1], cache.length)
        with pytest.raises(ValueError, match="layers"):
            model(token_ids(2, 1), shallow)
        with pytest.raises(ValueError, match="layers"):
            model.decode_step(token_ids(2, 1)[:, 0], shallow)
        with pytest.raises(TypeError, match="KVCache"):
            model(token_ids(2, 1), (cache.keys, cache.values))
        with pytest.raises(TypeError, match="KVCache"):
            model.decode_step(token_ids(2, 1)[:, 0], (cache.keys, cache.values))
        with pytest.raises(ValueError, match="cache.length"):
            # an int cannot advance in place
            model(token_ids(2, 1), KVCache(cache.keys, cache.values, 0))


def test_cache_on_another_device_is_rejected():
    model = tiny_model()
    cache = model.empty_cache(2, 8, device="meta")
    with pytest.raises(ValueError, match="device"):
        model(token_ids(2, 1), cache)
    with pytest.raises(ValueError, match="device"):
        model.decode_step(token_ids(2, 1)[:, 0], cache)


def test_cache_without_room_is_rejected():
    model = tiny_model()
    with torch.no_grad():
        cache = model.empty_cache(2, 5)
        model(token_ids(2, 4), cache)
        with pytest.raises(ValueError, match=r"cache capacity 5 cannot hold 4 \+ 2 tokens"):
            model(token_ids(2, 2), cache)
        assert cache.length == 4                             # the failed call wrote nothing
        model.decode_step(token_ids(2, 1)[:, 0], cache)      # the last free slot
        with pytest.raises(ValueError, match=r"cache capacity 5 cannot hold 5 \+ 1 tokens"):
            model(token_ids(2, 1), cache)
        with pytest.raises(IndexError):                      # decode_step: index_copy_ itself fails
            model.decode_step(token_ids(2, 1)[:, 0], cache)
        _, full = model(token_ids(2, 3))                     # no cache given: capacity exactly T
        with pytest.raises(ValueError, match=r"cache capacity 3 cannot hold 3 \+ 1 tokens"):
            model(token_ids(2, 1), full)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="multiple"):
        TransformerConfig(d_model=64, num_heads=3)
    with pytest.raises(ValueError, match="even"):
        TransformerConfig(d_model=6, num_heads=2)
    with pytest.raises(ValueError, match="preset"):
        TransformerConfig.preset("13B")
    with pytest.raises(ValueError, match="ffn_dim"):
        TransformerConfig(ffn_dim=0)


def test_gradients_flow_to_every_weight():
    model = tiny_model(dtype=torch.float32).train()
    logits, _ = model(token_ids(2, 6))
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("preset", ["tiny", "1.3B", "2.7B", "6.7B"])
def test_same_parameter_count_as_retnet_of_the_same_preset(preset):
    from retnet_ref.model import RetNet, RetNetConfig

    with torch.device("meta"):
        transformer = Transformer(TransformerConfig.preset(preset))
        retnet = RetNet(RetNetConfig.preset(preset))
    assert count_parameters(transformer.layers[0]) == count_parameters(retnet.blocks[0])
    assert count_parameters(transformer) == count_parameters(retnet)


@pytest.mark.cuda
def test_kv_cache_decoding_on_cuda_equals_cpu_and_full_forward(rel_err):
    model, x = tiny_model(), token_ids(2, 12)
    with torch.no_grad():
        cpu_full, _ = model(x)
        cpu_decoded, _ = decode(model, x, prefix=5)
        gpu, gpu_x = model.cuda(), x.cuda()
        full, _ = gpu(gpu_x)
        cache = gpu.empty_cache(2, 12)
        assert cache.length.device.type == "cuda"
        pieces = [gpu(gpu_x[:, :5], cache)[0]]
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")                   # decode_step must not synchronise
        try:
            for t in range(5, x.shape[1]):
                pieces.append(gpu.decode_step(gpu_x[:, t], cache)[:, None])       # (B, 1, V)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    decoded = torch.cat(pieces, dim=1)
    assert cache.length == x.shape[1]
    assert rel_err(decoded, full) <= 1e-10
    assert rel_err(full.cpu(), cpu_full) <= 1e-10
    assert rel_err(decoded.cpu(), cpu_decoded) <= 1e-10


@pytest.mark.cuda
def test_greedy_generation_on_cuda_equals_cpu():
    model, prompt = tiny_model(), token_ids(2, 4, seed=3)
    on_cpu = model.generate(prompt, max_new_tokens=6)
    on_gpu = model.cuda().generate(prompt.cuda(), max_new_tokens=6, cuda_graph=False)
    assert torch.equal(on_gpu.cpu(), on_cpu)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_generation_with_a_cuda_graph_equals_eager_generation(dtype):
    model, prompt = tiny_model(dtype=dtype).cuda(), token_ids(2, 5, seed=3).cuda()
    eager = model.generate(prompt, max_new_tokens=10, cuda_graph=False)
    graphed = model.generate(prompt, max_new_tokens=10, cuda_graph=True)
    assert torch.equal(graphed, eager)
    # None: on for a CUDA prompt
    assert torch.equal(model.generate(prompt, max_new_tokens=10), graphed)
    if dtype == torch.float64:
        assert torch.equal(graphed.cpu(), model.cpu().generate(prompt.cpu(), max_new_tokens=10))


def test_last_only_gives_the_last_positions_logits():
    model = tiny_model()
    prompt = torch.tensor([[5, 3, 7, 1, 2]])
    with torch.no_grad():
        full, _ = model(prompt)
        last, _ = model(prompt, last_only=True)
        cached, cache = model(prompt, model.empty_cache(1, 8), last_only=True)
    # the head multiplies one row instead of T: another BLAS path, the same numbers up to float32
    # rounding
    assert last.shape == (1, 1, model.config.vocab_size) and torch.allclose(last, full[:, -1:],
                                                                            rtol=1e-5, atol=1e-6)
    assert torch.allclose(cached, full[:, -1:], rtol=1e-5, atol=1e-6) and int(cache.length) == 5
