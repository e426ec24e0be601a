"""The Transformer baseline: a decoder-only, pre-LN Transformer with the same budget as RetNet.

What the paper compares RetNet with (Sun et al. 2023, §3.1, §3.4): a Transformer of the same size
and setup. Per layer, both spend 12 d² weights:

    Transformer  attention W_Q, W_K, W_V, W_O (d×d each) = 4 d²,  FFN d×4d and 4d×d = 8 d²
    RetNet       W_Q, W_K (d×d), W_V, W_G (d×2d), W_O (2d×d)   = 8 d²,  FFN d×2d and 2d×d = 4 d²

plus two LayerNorms (weight and bias, 4d). Linear layers carry no bias, like RetNet's projections;
the input embedding and the output projection are separate matrices, as in RetNet. With equal
presets the two models have exactly the same number of parameters (tests/test_transformer.py).

Positions are rotary: q and k of every head are rotated by nθ with the package's own real-pair
rotation and θ schedule (retnet_ref.rotation), the same relative-position signal RetNet's retention
uses, so that the two models differ only in softmax attention versus retention. No learned position
table: the model takes sequences of any length. θ is an exact buffer (retnet_ref.exact_buffers:
float64 on the weights' device, even in a bfloat16 model) and the angles are formed from it on the
device, so that long positions keep their phase and a step copies nothing from the host.

Decoding uses a static KV cache (KVCache), the usual way to make a Transformer's decoding fast:
per layer the rotated keys and the values, (B, H, capacity, d_head) each, allocated once by
`Transformer.empty_cache(B, capacity)`, plus the number of cached tokens as a 0-d int64 tensor
`length` on the cache's device. A step writes its keys and values in place at `length` (index_copy_)
and advances `length` in place. Why not a cache grown with torch.cat:

- a cat reallocates and copies the whole cache on every token;
- a step whose shapes and memory never change, and which reads no tensor value on the host, can be
  compiled once (torch.compile with fullgraph=True) or captured once in a CUDA graph and replayed
  (retnet_ref.generation), which removes the per-kernel launch cost that dominates small-batch
  decoding.

The price: `decode_step` attends over the whole capacity, the slots past `length` hidden by a mask,
so every step reads capacity keys, not length keys; hence the bench (and `generate`) size the
capacity to context + new tokens, no more. `forward(tokens, cache)`, for a prompt or several new
tokens, reads the length on the host once and attends over the valid prefix only.
Prefill-then-decode gives the logits of one full forward.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_positive_int, check_token_range, check_token_tensor, count_outside
from .exact_buffers import ExactBuffers
from .generation import generate_tokens
from .presets import preset_sizes
from .rotation import rotate, theta_schedule

# ---------------------------------------------------------------- configuration


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
        for name in ("vocab_size", "d_model", "num_layers", "num_heads") + (()
                                                                            if self.ffn_dim is None
                                                                            else ("ffn_dim",)):
            check_positive_int(getattr(self, name), name)
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of num_heads "
                             f"({self.num_heads})")
        if (self.d_model // self.num_heads) % 2:
            raise ValueError("the head dimension d_model/num_heads = "
                             f"{self.d_model // self.num_heads} must be even (rotary positions "
                             "rotate pairs of features)")
        object.__setattr__(self, "ffn_width", 4 * self.d_model if self.ffn_dim is None
                           else int(self.ffn_dim))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @classmethod
    def preset(cls, name: str, **overrides) -> "TransformerConfig":
        """"tiny", "1.3B", "2.7B" or "6.7B" (retnet_ref.presets, as RetNetConfig.preset), with
        overrides."""
        return replace(cls(), **{**preset_sizes(name), **overrides})

    def layer_parameters(self) -> int:
        """Weights of one layer: 4 d² attention + 2 d·ffn_width FFN + two LayerNorms (4 d)."""
        d = self.d_model
        return 4 * d * d + 2 * d * self.ffn_width + 4 * d


# ---------------------------------------------------------------- the KV cache


@dataclass
class KVCache:
    """A static KV cache: per layer the rotated keys and the values, (B, H, capacity, d_head) each.

    Slots 0..length-1 hold the cached tokens; `length` is a 0-d torch.long tensor on the cache's
    device (the next token's position), advanced in place, so that a captured decode step moves it
    too. The slots past `length` are never read (attention masks them).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: torch.Tensor

    @property
    def batch_size(self) -> int:
        """How many sequences the cache holds (B)."""
        return self.keys[0].shape[0]

    @property
    def capacity(self) -> int:
        """The most tokens the cache can hold."""
        return self.keys[0].shape[2]

    def nbytes(self) -> int:
        """Memory the keys and values hold: 2 · layers · B · capacity · d_model elements."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def snapshot(self) -> Callable[[], None]:
        """Save the length; calling the result rewinds the cache to it.

        Slots past the length are never read, so rewinding needs no copy of the keys and values.
        generate_tokens rewinds after capturing a CUDA graph, whose warm-up steps advance the cache.
        """
        saved = self.length.clone()
        return lambda: self.length.copy_(saved)


def _check_cache(cache, config: TransformerConfig, batch_size: int, device: torch.device):
    """Metadata only (type, depth, shapes, devices): no value is read, so no synchronisation."""
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache or None, got {type(cache).__name__}")
    if len(cache.keys) != config.num_layers or len(cache.values) != config.num_layers:
        raise ValueError(f"cache must hold {config.num_layers} layers, got {len(cache.keys)} keys "
                         f"and {len(cache.values)} values")
    expected = (batch_size, config.num_heads, cache.capacity, config.head_dim)
    for t in (*cache.keys, *cache.values):
        if tuple(t.shape) != expected:
            raise ValueError(f"cache entries must have shape (B, H, capacity, d_head) = {expected} "
                             f"for a batch of {batch_size}, got {tuple(t.shape)}")
        if t.device != device:
            raise ValueError(f"cache must be on the tokens' device {device}, got {t.device}")
    length = cache.length
    if not isinstance(length, torch.Tensor) or length.dim() != 0 or length.dtype != torch.long \
            or length.device != device:
        raise ValueError(f"cache.length must be a 0-d torch.long tensor on {device}, got "
                         f"{getattr(length, 'dtype', type(length).__name__)} "
                         f"{tuple(getattr(length, 'shape', ()))} on "
                         f"{getattr(length, 'device', None)}")


def _check_room(cache: KVCache, length: int, new_tokens: int):
    if length + new_tokens > cache.capacity:
        raise ValueError(f"cache capacity {cache.capacity} cannot hold {length} + {new_tokens} "
                         "tokens")


# ---------------------------------------------------------------- how a call reads the cache


@dataclass(frozen=True)
class _CacheAccess:
    """Where one model call writes its T new tokens in every layer's cache, and what its queries
    read."""

    # 0-d long: the first new token's position (the cache's length before the call)
    offset: torch.Tensor
    # (T,) long: the new tokens' positions, where their keys and values are written
    slots: torch.Tensor
    num_keys: int        # how many slots the queries read (the valid prefix, or the whole capacity)
    sdpa_mask: dict      # SDPA keyword arguments: is_causal, or a boolean attn_mask (T, num_keys)


def _new_token_slots(cache: KVCache, new_tokens: int) -> torch.Tensor:
    # positions length, length + 1, ..., length + T - 1, computed on the device
    return cache.length + torch.arange(new_tokens, device=cache.length.device)   # (T,)


def _causal_mask(query_positions: torch.Tensor, num_keys: int) -> torch.Tensor:
    """The query at position p sees the keys at 0..p: (T, num_keys) boolean, True = attend.

    Aligned to the bottom right (is_causal aligns top left), and it hides the unwritten slots past
    the last query too.
    """
    key_positions = torch.arange(num_keys, device=query_positions.device)
    return key_positions[None, :] <= query_positions[:, None]                      # (T, num_keys)


def _read_valid_prefix(cache: KVCache, length: int, new_tokens: int) -> _CacheAccess:
    """forward with a cache: the length is known on the host, so the queries read slots
    0..length+T-1."""
    slots = _new_token_slots(cache, new_tokens)
    num_keys = length + new_tokens
    # into an empty cache the new tokens are all the keys: the fused kernels' own causal mask
    mask = {"is_causal": True} if length == 0 else {"attn_mask": _causal_mask(slots, num_keys)}
    return _CacheAccess(cache.length, slots, num_keys, mask)


def _read_whole_capacity(cache: KVCache, new_tokens: int) -> _CacheAccess:
    """decode_step: the length stays on the device, so the queries read every slot under the
    mask."""
    slots = _new_token_slots(cache, new_tokens)
    return _CacheAccess(cache.length, slots, cache.capacity,
                        {"attn_mask": _causal_mask(slots, cache.capacity)})


# ---------------------------------------------------------------- layers


class CausalSelfAttention(ExactBuffers):
    """Multi-head softmax attention with rotary positions and a KV cache (no biases, 4 d² weights).

    θ is an exact buffer (ExactBuffers): float64 on the weights' device whatever dtype the model is
    cast to, so that the angles nθ keep their precision in a bfloat16 model; it follows from the
    config and is not saved in state_dict.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        d = config.d_model
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v_proj, self.out_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        # (d_head/2,) float64
        self.register_exact_buffer("theta", theta_schedule(self.head_dim, config.rotary_base))

    def _heads(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)   # (B, H, T, d_head)

    def forward(self, x, cache_layer: tuple[torch.Tensor, torch.Tensor] | None = None,
                access: _CacheAccess | None = None):
        """x (B, T, d) → (y (B, T, d), k, v), the T tokens' rotated keys and values (B, H, T,
        d_head).

        Without a cache the tokens sit at positions 0..T-1 and attend causally among themselves.
        With one (cache_layer = this layer's keys and values, access = where and what to read),
        their keys and values are first written into the cache in place, then the queries attend
        over it.
        """
        offset = 0 if access is None else access.offset
        q = rotate(self._heads(self.q_proj(x)), self.theta, offset)   # (B, H, T, d_head)
        k = rotate(self._heads(self.k_proj(x)), self.theta, offset)   # (B, H, T, d_head)
        v = self._heads(self.v_proj(x))                                # (B, H, T, d_head)
        # softmax(q k^T / √d_head + causal mask) v
        if access is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # (B, H, T, d_head)
        else:
            y = self._attend_over_cache(q, k, v, cache_layer, access)     # (B, H, T, d_head)
        B, _, T, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, T, -1)), k, v   # (B, T, d)

    @staticmethod
    def _attend_over_cache(q, k, v, cache_layer: tuple[torch.Tensor, torch.Tensor],
                           access: _CacheAccess) -> torch.Tensor:
        """k and v written into the cache's slots access.slots (in place), then the queries'
        attention over the slots access reads, under its mask: (B, H, T, d_head)."""
        keys, values = cache_layer
        keys.index_copy_(2, access.slots, k)
        values.index_copy_(2, access.slots, v)
        visible_keys = keys[:, :, :access.num_keys]                  # (B, H, num_keys, d_head)
        visible_values = values[:, :, :access.num_keys]              # (B, H, num_keys, d_head)
        return F.scaled_dot_product_attention(q, visible_keys, visible_values, **access.sdpa_mask)


class TransformerFeedForward(nn.Module):
    """gelu(x W_1) W_2 with width 4d: 8 d² weights."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.ffn_width, bias=False)
        self.fc2 = nn.Linear(config.ffn_width, config.d_model, bias=False)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-LN residual block: Y = Attn(LN(X)) + X, X' = FFN(LN(Y)) + Y (the shape of RetNet's Eq.
    9)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = TransformerFeedForward(config)

    def forward(self, x, cache_layer=None, access=None):
        a, k, v = self.attn(self.attn_norm(x), cache_layer, access)
        y = x + a
        return y + self.ffn(self.ffn_norm(y)), k, v


# ---------------------------------------------------------------- the language model


class Transformer(nn.Module):
    """Decoder-only Transformer LM: embedding → pre-LN blocks → final LayerNorm → output
    projection."""

    def __init__(self, config: TransformerConfig | None = None):
        super().__init__()
        self.config = config = config or TransformerConfig()
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def empty_cache(self, batch_size: int, capacity: int, device=None,
                    dtype: torch.dtype | None = None) -> KVCache:
        """A cache for batch_size sequences of up to capacity tokens, length 0, allocated once.

        device and dtype default to the weights'. The slots are zeros, not torch.empty: the masked
        slots still enter attention's weighted sum with weight 0, and 0 · NaN (uninitialised memory)
        is NaN.
        """
        check_positive_int(batch_size, "batch_size"), check_positive_int(capacity, "capacity")
        weight = self.lm_head.weight
        device = weight.device if device is None else torch.device(device)
        dtype = weight.dtype if dtype is None else dtype
        # (B, H, C, d_head)
        shape = (int(batch_size), self.config.num_heads, int(capacity), self.config.head_dim)
        layers = range(self.config.num_layers)
        return KVCache(keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in layers],
                       values=[torch.zeros(shape, device=device, dtype=dtype) for _ in layers],
                       length=torch.zeros((), dtype=torch.long, device=device))

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None, last_only: bool = False):
        """tokens (B, T) long → (logits (B, T, V), cache); last_only: the logits of the last
        position only, (B, 1, V) (a prefill: the head's output for the whole prompt is not built).

        Without a cache: one causal forward over positions 0..T-1; the returned cache holds the keys
        and values of all T tokens (capacity exactly T, full). With a cache: the tokens sit at
        positions cache.length..cache.length+T-1, their keys and values are written there in place
        and the same cache object comes back, advanced by T. Reads the token range and the cached
        length on the host (one synchronisation) to check them; decode_step is the path without any.
        """
        check_token_tensor(tokens)
        if cache is None:
            check_token_range(tokens, self.config.vocab_size)
            return self._forward_without_cache(tokens, last_only)
        _check_cache(cache, self.config, tokens.shape[0], tokens.device)
        # the one synchronisation: the number of out-of-range ids and the cached length, read
        # together
        outside, length = torch.stack((count_outside(tokens, self.config.vocab_size),
                                       cache.length)).tolist()
        check_token_range(tokens, self.config.vocab_size, outside=outside)
        _check_room(cache, length, tokens.shape[1])
        return self._forward_with_cache(tokens, cache,
                                        _read_valid_prefix(cache, length, tokens.shape[1]),
                                        last_only), cache

    def decode_step(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new token per sequence: token (B,) long at position cache.length → logits (B, V).

        The token's keys and values are written at cache.length, then cache.length advances by one,
        all in place. No host synchronisation and no shape that depends on the length: attention
        reads the whole capacity under the mask slot ≤ length, so the step compiles with
        fullgraph=True and can be captured once in a CUDA graph and replayed. Only metadata is
        checked (shapes, dtypes, devices): the ids are not range-checked (that would read them on
        the host), but an out-of-range id still fails loudly in nn.Embedding (on CUDA as a
        device-side assert); nor is the room left, and a full cache fails in index_copy_ (IndexError
        on the CPU, a device-side assert on CUDA).
        """
        check_token_tensor(token, dims=1, name="token")
        _check_cache(cache, self.config, token.shape[0], token.device)
        # (B, 1, V)
        logits = self._forward_with_cache(token[:, None], cache, _read_whole_capacity(cache, 1))
        return logits[:, 0]                                                                 # (B, V)

    def _forward_without_cache(self, tokens, last_only=False):
        x = self.embed(tokens)                                          # (B, T, d)
        keys, values = [], []
        for layer in self.layers:
            x, k, v = layer(x)
            keys.append(k)
            values.append(v)
        length = torch.full((), tokens.shape[1], dtype=torch.long, device=tokens.device)
        return self._logits(x, last_only), KVCache(keys, values, length)   # (B, T or 1, V)

    def _forward_with_cache(self, tokens, cache: KVCache, access: _CacheAccess, last_only=False):
        x = self.embed(tokens)                                          # (B, T, d)
        for layer, keys, values in zip(self.layers, cache.keys, cache.values):
            x, _, _ = layer(x, (keys, values), access)
        cache.length.add_(tokens.shape[1])
        return self._logits(x, last_only)                               # (B, T or 1, V)

    def _logits(self, x, last_only):
        return self.lm_head(self.final_norm(x[:, -1:] if last_only else x))

    def _step(self, token, cache):
        return self.decode_step(token, cache), cache

    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None,
                 cuda_graph: bool | None = None) -> torch.Tensor:
        """Continue prompt (B, T0) by max_new_tokens tokens → (B, T0 + new) long.

        Prefill writes the prompt into empty_cache(B, T0 + max_new_tokens), then decode_step runs
        once per token. cuda_graph: replay the step as a CUDA graph (None: on for a CUDA prompt, off
        elsewhere; True on a CPU prompt raises ValueError). Capturing runs real warm-up steps on the
        cache (slots T0, T0 + 1, inside the capacity: a graph is used from 2 new tokens on), then
        rewinds it (KVCache.snapshot).
        """
        check_token_tensor(prompt, name="prompt")
        check_token_range(prompt, self.config.vocab_size, "prompt")

        def prefill(prompt):
            cache = self.empty_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens,
                                     device=prompt.device)
            logits, cache = self(prompt, cache, last_only=True)         # (B, 1, V)
            return logits[:, -1], cache                                 # (B, V)

        return generate_tokens(prefill, self._step, prompt, max_new_tokens, temperature, top_k,
                               seed,
                               cuda_graph=cuda_graph, snapshot=KVCache.snapshot)
