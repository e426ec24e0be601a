"""The Transformer baseline: KV-cache decoding, generation, parameter budget, causality, bad input."""
import pytest
import torch

from retnet_ref.transformer import KVCache, Transformer, TransformerConfig, count_parameters


def tiny_model(seed=0, dtype=torch.float64, **overrides):
    torch.manual_seed(seed)
    return Transformer(TransformerConfig.preset("tiny", **overrides)).to(dtype).eval()


def tokens(batch, length, vocab=256, seed=1):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def max_relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("prefix", [1, 5, 11])
def test_kv_cache_decoding_equals_full_forward(prefix):
    model, x = tiny_model(), tokens(2, 12)
    with torch.no_grad():
        full, _ = model(x)
        logits, cache = model(x[:, :prefix])
        pieces = [logits]
        for t in range(prefix, x.shape[1]):
            logits, cache = model(x[:, t:t + 1], cache)
            pieces.append(logits)
    assert cache.length == x.shape[1]
    assert max_relative_error(torch.cat(pieces, dim=1), full) <= 1e-10


def test_multi_token_extension_of_a_cache_equals_full_forward():
    # several new tokens after a cache need a bottom-right-aligned causal mask (is_causal is top-left)
    model, x = tiny_model(), tokens(3, 13)
    with torch.no_grad():
        full, _ = model(x)
        a, cache = model(x[:, :4])
        b, cache = model(x[:, 4:9], cache)
        c, cache = model(x[:, 9:], cache)
    assert max_relative_error(torch.cat([a, b, c], dim=1), full) <= 1e-10


def test_cache_holds_rotated_keys_and_values_per_layer():
    config = TransformerConfig.preset("tiny")
    model, x = tiny_model(), tokens(2, 7)
    with torch.no_grad():
        _, cache = model(x)
    assert len(cache.keys) == len(cache.values) == config.num_layers
    for t in (*cache.keys, *cache.values):
        assert t.shape == (2, config.num_heads, 7, config.head_dim)
    assert cache.nbytes() == 2 * config.num_layers * 2 * 7 * config.d_model * 8


def test_greedy_generation_equals_argmax_recomputation():
    model, prompt = tiny_model(), tokens(2, 4, seed=3)
    out = model.generate(prompt, max_new_tokens=6)
    assert out.shape == (2, 10) and torch.equal(out[:, :4], prompt)
    expected = prompt
    with torch.no_grad():
        for _ in range(6):
            logits, _ = model(expected)                           # no cache: a full forward each step
            expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, expected)


def test_sampled_generation_is_reproducible_with_a_seed():
    model, prompt = tiny_model(dtype=torch.float32), tokens(2, 3, seed=4)
    a = model.generate(prompt, 8, temperature=1.0, top_k=20, seed=7)
    b = model.generate(prompt, 8, temperature=1.0, top_k=20, seed=7)
    c = model.generate(prompt, 8, temperature=1.0, top_k=20, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("preset", ["tiny", "1.3B", "2.7B", "6.7B"])
def test_parameters_per_layer_are_12_d_squared_plus_norms(preset):
    config = TransformerConfig.preset(preset)
    with torch.device("meta"):
        model = Transformer(config)
    d = config.d_model
    per_layer = count_parameters(model.layers[0])
    # 4 d² (W_Q, W_K, W_V, W_O) + 8 d² (FFN d×4d, 4d×d) + two LayerNorms (weight and bias)
    assert per_layer == 12 * d * d + 4 * d == config.layer_parameters()
    embeddings = 2 * config.vocab_size * d                        # input table and output projection
    assert count_parameters(model) == config.num_layers * per_layer + embeddings + 2 * d


def test_changing_a_future_token_does_not_change_past_logits():
    model, x = tiny_model(), tokens(2, 10)
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


@pytest.mark.parametrize("bad", [torch.tensor([[0, 256]]), torch.tensor([[-1, 3]])])
def test_token_ids_out_of_range_are_rejected(bad):
    with pytest.raises(ValueError, match="token ids"):
        tiny_model()(bad)


@pytest.mark.parametrize("bad", [torch.tensor([1, 2, 3]), torch.tensor([[1.0, 2.0]]),
                                 torch.zeros(2, 0, dtype=torch.long)])
def test_malformed_tokens_are_rejected(bad):
    with pytest.raises(ValueError, match="tokens"):
        tiny_model()(bad)


def test_cache_of_another_batch_size_is_rejected():
    model = tiny_model()
    with torch.no_grad():
        _, cache = model(tokens(2, 5))
        with pytest.raises(ValueError, match="batch of 3"):
            model(tokens(3, 1), cache)


def test_cache_of_another_depth_or_type_is_rejected():
    model = tiny_model()
    with torch.no_grad():
        _, cache = model(tokens(2, 5))
        with pytest.raises(ValueError, match="layers"):
            model(tokens(2, 1), KVCache(cache.keys[:1], cache.values[:1]))
        with pytest.raises(TypeError, match="KVCache"):
            model(tokens(2, 1), (cache.keys, cache.values))


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
    logits, _ = model(tokens(2, 6))
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
def test_kv_cache_decoding_on_cuda_equals_cpu_and_full_forward():
    model, x = tiny_model(), tokens(2, 12)
    with torch.no_grad():
        cpu_full, _ = model(x)
        gpu = model.cuda()
        full, _ = gpu(x.cuda())
        logits, cache = gpu(x[:, :5].cuda())
        pieces = [logits]
        for t in range(5, x.shape[1]):
            logits, cache = gpu(x[:, t:t + 1].cuda(), cache)
            pieces.append(logits)
    assert max_relative_error(torch.cat(pieces, dim=1), full) <= 1e-10
    assert max_relative_error(full.cpu(), cpu_full) <= 1e-10


@pytest.mark.cuda
def test_greedy_generation_on_cuda_equals_cpu():
    model, prompt = tiny_model(), tokens(2, 4, seed=3)
    on_cpu = model.generate(prompt, max_new_tokens=6)
    on_gpu = model.cuda().generate(prompt.cuda(), max_new_tokens=6)
    assert torch.equal(on_gpu.cpu(), on_cpu)
