"""The Transformer baseline: a decoder-only, pre-LN Transformer with the same budget as RetNet.

What the paper compares RetNet with (Sun et al. 2023, §3.1, §3.4): a Transformer of the same size and
setup. Per layer, both spend 12 d² weights:

    Transformer  attention W_Q, W_K, W_V, W_O (d×d each) = 4 d²,  FFN d×4d and 4d×d = 8 d²
    RetNet       W_Q, W_K (d×d), W_V, W_G (d×2d), W_O (2d×d)   = 8 d²,  FFN d×2d and 2d×d = 4 d²

plus two LayerNorms (weight and bias, 4d). Linear layers carry no bias, like RetNet's projections; the
input embedding and the output projection are separate matrices, as in RetNet. With equal presets the two
models have exactly the same number of parameters (tests/test_transformer.py).

Positions are rotary: q and k of every head are rotated by nθ with the package's own real-pair rotation
and θ schedule (retnet_ref.rotation), the same relative-position signal RetNet's retention uses, so
that the two models differ only in softmax attention versus retention. No learned position table: the
model takes sequences of any length.

Decoding keeps an explicit KV cache (KVCache): per layer the rotated keys and the values of every token
seen so far, (B, H, T, d_head) each. `forward(tokens, cache)` appends the new tokens' keys and values and
attends over the whole cache, so that prefill-then-decode gives the logits of one full forward.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .generation import generate_tokens
from .rotation import theta_schedule, rotate

# ---------------------------------------------------------------- configuration

# the same sizes as RetNetConfig.preset (retnet_ref.model): the paper's (Table "model sizes", §3.1), with the
# same 32,000-token vocabulary, and a tiny one for tests and notebooks; equal names pair equal budgets
_PRESETS = {
    "tiny": dict(vocab_size=256, d_model=64, num_layers=2, num_heads=2),
    "1.3B": dict(vocab_size=32000, d_model=2048, num_layers=24, num_heads=8),
    "2.7B": dict(vocab_size=32000, d_model=2560, num_layers=32, num_heads=10),
    "6.7B": dict(vocab_size=32000, d_model=4096, num_layers=32, num_heads=16),
}


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the baseline. ffn_dim defaults to 4·d_model (the 8 d² FFN of a 12 d² layer)."""

    vocab_size: int = 256
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 2
    ffn_dim: int | None = None
    layer_norm_eps: float = 1e-6
    rotary_base: float = 10000.0
    ffn_width: int = field(init=False)

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_layers", "num_heads") + (() if self.ffn_dim is None else ("ffn_dim",)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of num_heads ({self.num_heads})")
        if (self.d_model // self.num_heads) % 2:
            raise ValueError(f"the head dimension d_model/num_heads = {self.d_model // self.num_heads} "
                             "must be even (rotary positions rotate pairs of features)")
        object.__setattr__(self, "ffn_width", 4 * self.d_model if self.ffn_dim is None else int(self.ffn_dim))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @classmethod
    def preset(cls, name: str, **overrides) -> "TransformerConfig":
        """"tiny", "1.3B", "2.7B" or "6.7B" (the paper's d_model, layers, heads), with overrides."""
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(_PRESETS)}")
        return replace(cls(), **{**_PRESETS[name], **overrides})

    def layer_parameters(self) -> int:
        """Weights of one layer: 4 d² attention + 2 d·ffn_width FFN + two LayerNorms (4 d)."""
        d = self.d_model
        return 4 * d * d + 2 * d * self.ffn_width + 4 * d


# ---------------------------------------------------------------- the KV cache


@dataclass
class KVCache:
    """Per layer the rotated keys and the values of all tokens seen so far: (B, H, T, d_head) each."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        """Number of cached tokens T (the next token's position)."""
        return self.keys[0].shape[2] if self.keys else 0

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def nbytes(self) -> int:
        """Memory the cache holds: 2 · layers · B · T · d_model elements."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def _check_tokens(tokens, vocab_size: int):
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long or tokens.dim() != 2:
        raise ValueError(f"tokens must be a (B, T) torch.long tensor, got "
                         f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
    if tokens.shape[1] < 1:
        raise ValueError("tokens must hold at least one position (T >= 1)")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got min {int(tokens.min())}, "
                         f"max {int(tokens.max())}")


def _check_cache(cache, tokens: torch.Tensor, config: TransformerConfig):
    if cache is None:
        return
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache or None, got {type(cache).__name__}")
    if len(cache.keys) != config.num_layers or len(cache.values) != config.num_layers:
        raise ValueError(f"cache must hold {config.num_layers} layers, got {len(cache.keys)} keys "
                         f"and {len(cache.values)} values")
    expected = (tokens.shape[0], config.num_heads, cache.length, config.head_dim)
    for t in (*cache.keys, *cache.values):
        if tuple(t.shape) != expected:
            raise ValueError(f"cache entries must have shape (B, H, T, d_head) = {expected} for a batch of "
                             f"{tokens.shape[0]}, got {tuple(t.shape)}")
        if t.device != tokens.device:
            raise ValueError(f"cache must be on the tokens' device {tokens.device}, got {t.device}")


# ---------------------------------------------------------------- layers


class CausalSelfAttention(nn.Module):
    """Multi-head softmax attention with rotary positions and a KV cache (no biases, 4 d² weights)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        d = config.d_model
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v_proj, self.out_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.theta = theta_schedule(self.head_dim, config.rotary_base)   # (d_head/2,) float64, not a weight

    def _heads(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)   # (B, H, T, d_head)

    def forward(self, x, past_k=None, past_v=None):
        """x (B, T, d) at positions offset..offset+T-1, offset = cached length → (y, k_all, v_all)."""
        offset = 0 if past_k is None else past_k.shape[2]
        q = rotate(self._heads(self.q_proj(x)), self.theta, offset)   # (B, H, T, d_head)
        k = rotate(self._heads(self.k_proj(x)), self.theta, offset)   # (B, H, T, d_head)
        v = self._heads(self.v_proj(x))                                # (B, H, T, d_head)
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)                          # (B, H, offset + T, d_head)
            v = torch.cat([past_v, v], dim=2)                          # (B, H, offset + T, d_head)
        # softmax(q k^T / √d_head + causal mask) v
        y = F.scaled_dot_product_attention(q, k, v, **_causal_mask(q.shape[2], offset, x.device))
        B, _, T, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, T, -1)), k, v   # (B, T, d)


def _causal_mask(num_queries: int, offset: int, device) -> dict:
    """Keyword arguments for SDPA: query n (position offset+n) sees keys 0..offset+n.

    Without a cache this is is_causal (the fused kernels' own mask); one new token sees every cached key
    (no mask); several new tokens after a cache need the mask aligned to the bottom right, which
    is_causal (aligned top left) is not, so an explicit boolean mask is passed.
    """
    if offset == 0:
        return {"is_causal": True}
    if num_queries == 1:
        return {}
    n = torch.arange(num_queries, device=device)[:, None]             # (T, 1)
    m = torch.arange(offset + num_queries, device=device)[None, :]    # (1, offset + T)
    return {"attn_mask": m <= n + offset}                             # (T, offset + T)


class TransformerFeedForward(nn.Module):
    """gelu(x W_1) W_2 with width 4d: 8 d² weights."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.ffn_width, bias=False)
        self.fc2 = nn.Linear(config.ffn_width, config.d_model, bias=False)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-LN residual block: Y = Attn(LN(X)) + X, X' = FFN(LN(Y)) + Y (the shape of RetNet's Eq. 9)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = TransformerFeedForward(config)

    def forward(self, x, past_k=None, past_v=None):
        a, k, v = self.attn(self.attn_norm(x), past_k, past_v)
        y = x + a
        return y + self.ffn(self.ffn_norm(y)), k, v


# ---------------------------------------------------------------- the language model


class Transformer(nn.Module):
    """Decoder-only Transformer LM: embedding → pre-LN blocks → final LayerNorm → output projection."""

    def __init__(self, config: TransformerConfig | None = None):
        super().__init__()
        self.config = config = config or TransformerConfig()
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None):
        """tokens (B, T) long, at positions cache.length.. → (logits (B, T, V), the extended cache)."""
        _check_tokens(tokens, self.config.vocab_size)
        _check_cache(cache, tokens, self.config)
        x = self.embed(tokens)                                          # (B, T, d)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            past = (cache.keys[i], cache.values[i]) if cache is not None else (None, None)
            x, k, v = layer(x, *past)
            keys.append(k)
            values.append(v)
        return self.lm_head(self.final_norm(x)), KVCache(keys, values)   # (B, T, V)

    def _prefill(self, prompt):
        logits, cache = self(prompt)
        return logits[:, -1], cache                                     # (B, V)

    def _step(self, token, cache):
        logits, cache = self(token[:, None], cache)                     # (B, 1, V)
        return logits[:, 0], cache

    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None) -> torch.Tensor:
        """Continue prompt (B, T0) by max_new_tokens tokens with the KV cache → (B, T0 + new) long."""
        _check_tokens(prompt, self.config.vocab_size)
        return generate_tokens(self._prefill, self._step, prompt, max_new_tokens, temperature, top_k, seed)


def count_parameters(module: nn.Module) -> int:
    """Number of weights (works on the meta device, where no memory is allocated)."""
    return sum(p.numel() for p in module.parameters())
