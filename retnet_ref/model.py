"""The RetNet language model: configuration, presets, the three modes with an explicit state,
generation.

    tokens → embedding → L × RetNetBlock (Eq. 9) → final norm → output head → logits

`model(tokens, mode, chunk_size, state)` runs any of the three forms and returns the logits and a
RetNetState (one RetentionState per layer: S, z and the tokens seen). A state from one mode
continues in any other: prefill a prompt chunkwise, then decode one token at a time recurrently;
with the exact normalisation the logits equal one parallel pass over the whole sequence.

Presets (RetNetConfig.preset): the sizes of retnet_ref.presets ("tiny" and the paper's 1.3B, 2.7B
and 6.7B) with FFN width 2d and value width 2d, which puts every paper preset within 3.1% of its
nominal size (tests/test_model.py).

The "official" variant is torchscale 0.3.0's later block (see retnet_ref.layers);
RetNet.from_torchscale converts a torchscale RetNetDecoder with its weights (retnet_ref.torchscale).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn

from . import torchscale
from ._checks import (
    check_choice,
    check_gammas,
    check_positive_int,
    check_token_range,
    check_token_tensor,
)
from .decay import GAMMA_SCHEDULES
from .generation import generate_tokens
from .kernels import check_backend, check_tile_height
from .layers import ACTIVATIONS, RetNetBlock, check_switch, make_norm
from .normalisation import NORMALISATIONS
from .presets import preset_sizes
from .retention import accumulation_dtype
from .state import RetentionState, RetNetState, check_mode

VARIANTS = ("paper", "official")
# value and FFN widths of torchscale's own configurations of these sizes (retnet_xl, retnet_3b,
# retnet_7b)
_OFFICIAL_WIDTHS = {"1.3B": 3456, "2.7B": 4280, "6.7B": 6912}


@dataclass(frozen=True)
class RetNetConfig:
    """Sizes and choices of a RetNet language model.

    value_dim, ffn_dim: None = 2·d_model for variant "paper"; ≈ 5/3·d_model (rounded up to a
    multiple of num_heads) for "official". activation: None = "gelu" (paper) or "swish" (official,
    SwiGLU). gamma: "default" (γ_h = 1 - 2^(-5-h)), "linspace" (the paper's experiments) or one γ
    per head. norm_eps: ε of every norm (1e-6, torchscale's default). normalisation: "exact" (the
    three modes agree for any ε) or "torchscale" (its per-mode scales). detach_normaliser: None =
    False (paper) or True (official: no gradient through normalisation (3)'s divisor, as
    torchscale). embed_scale multiplies the embeddings (torchscale: 1, or √d without
    no_scale_embedding). chunk_size: the chunk length generate() prefills with.
    backend: "torch" (the PyTorch forms) or "triton" (the chunkwise mode and the decode step on the
    Triton kernels of retnet_ref.kernels; chunk_size must then be one of their tile heights).
    swish_gate, group_norm: False for two of the paper's ablations (Table 6, "− swish gate" and
    "− GroupNorm"; see retnet_ref.layers): MSR(X) = Y W_O without W_G, or Y without the per-head
    norm.
    """

    vocab_size: int = 256
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 2
    value_dim: int | None = None
    ffn_dim: int | None = None
    variant: str = "paper"
    activation: str | None = None
    gamma: str | tuple = "default"
    norm_eps: float = 1e-6
    normalisation: str = "exact"
    detach_normaliser: bool | None = None
    embed_scale: float = 1.0
    chunk_size: int = 512
    backend: str = "torch"
    swish_gate: bool = True
    group_norm: bool = True
    norm_kind: str = field(init=False)
    gated_ffn: bool = field(init=False)

    def __post_init__(self):
        self._check_given_fields()
        resolved = self._resolved_fields()
        check_choice(resolved["activation"], ACTIVATIONS, "activation")
        if not (isinstance(self.norm_eps, numbers.Real) and self.norm_eps >= 0):
            raise ValueError(f"norm_eps must be a real number >= 0, got {self.norm_eps!r}")
        for name, value in resolved.items():
            object.__setattr__(self, name, value)

    def _check_given_fields(self):
        """Sizes, switches and choices as given (the widths and defaults left to
        _resolved_fields)."""
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "chunk_size"):
            check_positive_int(getattr(self, name), name)
        for name in ("swish_gate", "group_norm"):
            check_switch(getattr(self, name), name)
        check_choice(self.variant, VARIANTS, "variant")
        if isinstance(self.gamma, str):
            if self.gamma not in GAMMA_SCHEDULES:
                raise ValueError(f"gamma must be one of {GAMMA_SCHEDULES} or one value per head, "
                                 f"got {self.gamma!r}")
        else:
            check_gammas(self.gamma, self.num_heads)
        if isinstance(self.embed_scale, bool) or not isinstance(self.embed_scale, numbers.Real) \
                or not math.isfinite(self.embed_scale) or self.embed_scale <= 0:
            raise ValueError(f"embed_scale must be a finite number > 0, got {self.embed_scale!r}")
        check_choice(self.normalisation, NORMALISATIONS, "normalisation")
        if check_backend(self.backend) == "triton":
            check_tile_height(self.chunk_size)

    def _resolved_fields(self) -> dict:
        """The fields whose None means "the variant's default", resolved, and the variant's block
        choices."""
        official = self.variant == "official"
        default_width = self._official_width() if official else 2 * self.d_model
        return dict(
            value_dim=default_width if self.value_dim is None
                    else check_positive_int(self.value_dim, "value_dim"),
            ffn_dim=default_width if self.ffn_dim is None
                    else check_positive_int(self.ffn_dim, "ffn_dim"),
            activation=("swish" if official else "gelu") if self.activation is None
                    else self.activation,
            detach_normaliser=official if self.detach_normaliser is None
                    else check_switch(self.detach_normaliser, "detach_normaliser"),
            gamma=self.gamma if isinstance(self.gamma, str)
                    else tuple(float(g) for g in self.gamma),
            norm_kind="rmsnorm" if official else "layernorm",
            gated_ffn=official,
        )

    def _official_width(self) -> int:
        """⌈5/3 d⌉ rounded up to a multiple of num_heads."""
        h = self.num_heads
        return -(-(5 * self.d_model) // (3 * h)) * h

    @classmethod
    def preset(cls, name: str, **overrides) -> "RetNetConfig":
        """"tiny", "1.3B", "2.7B" or "6.7B", with any field overridden (e.g. variant="official")."""
        sizes = preset_sizes(name)
        if overrides.get("variant") == "official" and name in _OFFICIAL_WIDTHS:
            sizes.update(value_dim=_OFFICIAL_WIDTHS[name], ffn_dim=_OFFICIAL_WIDTHS[name])
        sizes.update(overrides)
        return cls(**sizes)


class RetNet(nn.Module):
    """RetNet language model: model(tokens (B, T) long, mode, chunk_size, state) → (logits (B, T,
    V), state)."""

    def __init__(self, config: RetNetConfig):
        super().__init__()
        if not isinstance(config, RetNetConfig):
            raise TypeError(f"config must be a RetNetConfig, got {type(config).__name__}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(RetNetBlock(config) for _ in range(config.num_layers))
        self.final_norm = make_norm(config.norm_kind, config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        for weight in (self.embed.weight, self.head.weight):
            nn.init.normal_(weight, std=config.d_model ** -0.5)

    # ------------------------------------------------------------ checks

    def _check_tokens(self, tokens):
        check_token_tensor(tokens)
        check_token_range(tokens, self.config.vocab_size)

    def _check_state(self, state, batch, device):
        if state is None:
            return
        if not isinstance(state, RetNetState):
            raise TypeError("state must be a RetNetState (from an earlier call) or None, got "
                            f"{type(state).__name__}")
        if len(state.layers) != self.config.num_layers:
            raise ValueError(f"state has {len(state.layers)} layers, this model has "
                             f"{self.config.num_layers} (a state from another configuration?)")
        cfg = self.config
        expected = (batch, cfg.num_heads, cfg.d_model // cfg.num_heads,
                    cfg.value_dim // cfg.num_heads)
        for i, layer in enumerate(state.layers):
            if not isinstance(layer, RetentionState):
                raise TypeError(f"state.layers[{i}] must be a RetentionState, got "
                                f"{type(layer).__name__}")
            # shapes, dtype, device, n ≥ 0
            layer.check(*expected, device, name=f"state.layers[{i}]")
        positions = [int(layer.n) for layer in state.layers]
        if len(set(positions)) > 1:
            raise ValueError(f"state layers disagree on the position: {positions}")

    # ------------------------------------------------------------ forward

    def forward(self, tokens: torch.Tensor, mode: str = "parallel", chunk_size: int | None = None,
                state: RetNetState | None = None,
                last_only: bool = False) -> tuple[torch.Tensor, RetNetState]:
        """tokens (B, T) → (logits (B, T, V), RetNetState after the last token); last_only: the
        logits of the last position only, (B, 1, V) (a prefill: the head's output for the whole
        prompt is not built).

        mode "parallel" (Eq. 5), "recurrent" (Eq. 6, a loop over tokens) or "chunkwise" (Eq. 7;
        needs chunk_size). state: None (start of a sequence) or the state returned by any earlier
        call.
        """
        check_mode(mode, chunk_size)
        self._check_tokens(tokens)
        self._check_state(state, tokens.shape[0], tokens.device)
        x = self.embed(tokens) * self.config.embed_scale                # (B, T, d)
        layer_states = []
        for i, block in enumerate(self.blocks):
            x, layer_state = block(x, mode, chunk_size, None if state is None else state.layers[i])
            layer_states.append(layer_state)
        x = x[:, -1:] if last_only else x                              # (B, T or 1, d)
        return self.head(self.final_norm(x)), RetNetState(layer_states)   # (B, T or 1, V)

    def set_backend(self, backend: str, chunk_size: int | None = None) -> "RetNet":
        """Run the chunkwise mode and decode steps on other kernels ("torch" or "triton"), in place.

        The weights and the function stay the same; chunk_size (None = keep config.chunk_size) must
        suit the backend (a tile height for "triton")."""
        chunk_size = self.config.chunk_size if chunk_size is None else chunk_size
        self.config = dataclasses.replace(self.config, backend=backend, chunk_size=chunk_size)
        for block in self.blocks:
            block.retention.backend = self.config.backend
        return self

    def empty_state(self, batch_size: int, position: int = 0) -> RetNetState:
        """The state before any token (zeros; the accumulation dtype of the weights) at `position`.

        A decode benchmark can start here at any position: the cost of a step does not depend on it.
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        weight = self.head.weight
        cfg = self.config
        return RetNetState([RetentionState.zeros(batch_size, cfg.num_heads,
                                                 cfg.d_model // cfg.num_heads,
                                                 cfg.value_dim // cfg.num_heads,
                                                 accumulation_dtype(weight.dtype),
                                                 weight.device, position)
                            for _ in range(cfg.num_layers)])

    def decode_step(self, token: torch.Tensor, state: RetNetState) -> torch.Tensor:
        """One new token per sequence, token (B,) long → logits (B, V); `state` is updated in place.

        Equal to self(token[:, None], "recurrent", state=state) but without a new state, checks that
        read the device, or any host copy: the step generate() replays as a CUDA graph, and that
        torch.compile(fullgraph=True) traces. An out-of-range token id still fails, in the
        embedding.
        """
        check_token_tensor(token, dims=1, name="token")
        x = self.embed(token[:, None]) * self.config.embed_scale        # (B, 1, d)
        # every layer has the same θ and γ: the step's rotation and decay factors, computed once
        factors = self.blocks[0].retention.step_factors(state.n, x.dtype)
        for block, layer_state in zip(self.blocks, state.layers):
            x = block.step_(x, layer_state, factors)                     # (B, 1, d)
        return self.head(self.final_norm(x))[:, 0]                       # (B, V)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None, chunk_size: int | None = None,
                 cuda_graph: bool | None = None) -> torch.Tensor:
        """Continue prompt (B, T0) by max_new_tokens tokens → (B, T0 + max_new_tokens) long.

        The prompt is read once in chunkwise mode (chunk_size, default config.chunk_size), then each
        new token costs one recurrent step (decode_step). temperature 0 is greedy; seed makes
        sampling reproducible. cuda_graph: replay the step as a CUDA graph (None = on for a CUDA
        prompt).
        """
        chunk_size = self.config.chunk_size if chunk_size is None else chunk_size

        def prefill(tokens):
            logits, state = self(tokens, "chunkwise", chunk_size, last_only=True)   # (B, 1, V)
            return logits[:, -1], state                                 # (B, V)

        def step(token, state):
            return self.decode_step(token, state), state                # (B, V)

        return generate_tokens(prefill, step, prompt, max_new_tokens, temperature, top_k, seed,
                               cuda_graph=cuda_graph, snapshot=RetNetState.snapshot)

    # ------------------------------------------------------------ torchscale

    @classmethod
    def from_torchscale(cls, decoder, normalisation: str = "torchscale") -> "RetNet":
        """Our model with the weights of a torchscale 0.3.0 RetNetDecoder (variant "official").

        normalisation="torchscale" reproduces its per-mode outputs; "exact" keeps its weights but
        makes the three modes agree for any ε. Its γ and θ are copied as stored (float32 values), so
        that the two models compute the same function. Unsupported torchscale options raise
        ValueError.
        """
        torchscale.check_convertible(decoder)
        model = cls(RetNetConfig(**torchscale.config_fields(decoder, normalisation)))
        torchscale.copy_weights(model, decoder)
        return model.to(decoder.embed_tokens.weight.device, decoder.embed_tokens.weight.dtype)
