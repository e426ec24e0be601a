"""The RetNet layer: gated multi-scale retention (Eq. 8), the feed-forward network and the block
(Eq. 9).

    head_i = Retention_i(X)                    one γ per head, normalised (retnet_ref.normalisation)
    Y      = GroupNorm_h(concat(head_1..h))    a norm over each head's d_v features, per token
    MSR(X) = (swish(X W_G) ⊙ Y) W_O
    block:   Y = MSR(LN(X)) + X;   X' = FFN(LN(Y)) + Y

Two variants share this code (RetNetConfig.variant in retnet_ref.model):
- "paper": LayerNorm everywhere (the per-head norm without affine parameters), FFN gelu(X W_1) W_2,
  value width and FFN width 2d;
- "official": torchscale 0.3.0's later block: RMSNorm everywhere (per-head without affine), gated
  FFN W_2 (act(X W_1) ⊙ X W_3), value and FFN widths ≈ 5/3 d.
The scaling 1/√d_k is normalisation (1) inside retention; the official code puts it on k, the same
number.

Two of the paper's ablations (Table 6) switch parts of MSR off, in either variant:
- "− swish gate" (swish_gate=False): MSR(X) = Y W_O, and no W_G at all (d · value_dim fewer weights
  a layer);
- "− GroupNorm" (group_norm=False): Y = concat(head_1..h), the normalised retention heads as they
  are (the per-head norm has no affine parameters, so the parameter count stays the same).
Projections carry no bias (the paper's equations have none; neither has the official code).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_gammas, check_positive_int
from .decay import gamma_schedule
from .exact_buffers import ExactBuffers
from .kernels import check_backend, check_tile_height, triton_normalised_step_
from .normalisation import NORMALISATIONS, _normalised, normalised_step_, step_decay_factors
from .retention import accumulation_dtype
from .rotation import rotate_by, rotation_factors, theta_schedule
from .state import RetentionState, check_mode

ACTIVATIONS = {"gelu": F.gelu, "swish": F.silu, "relu": F.relu}


def check_switch(value, name) -> bool:
    """A model option that is on or off: True or False itself (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + ε) (· weight), computed in float32 or wider and returned in x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x):
        xa = x.to(accumulation_dtype(x.dtype))
        # x / sqrt(mean(x²) + ε)
        y = (xa * torch.rsqrt(xa.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return y * self.weight if self.weight is not None else y


NORMS = {"layernorm": lambda dim, eps, affine: nn.LayerNorm(dim, eps=eps, elementwise_affine=affine,
                                                             bias=affine),
         "rmsnorm": lambda dim, eps, affine: RMSNorm(dim, eps=eps, affine=affine)}


def make_norm(kind: str, dim: int, eps: float, affine: bool = True) -> nn.Module:
    """LayerNorm or RMSNorm (a key of NORMS) over the last dimension."""
    return NORMS[check_choice(kind, NORMS, "norm")](dim, eps, affine)


class StepFactors(NamedTuple):
    """What a decode step at one position needs besides the weights
    (normalisation.step_decay_factors): cos, sin (1, d_k/2) of the rotation, the decay gap 1 - γ
    (H, 1, 1), the divisor floor sqrt(d_k c_n) (H, 1)."""

    cos: torch.Tensor
    sin: torch.Tensor
    gap: torch.Tensor
    floor: torch.Tensor


class MultiScaleRetention(ExactBuffers):
    """Gated multi-scale retention (Eq. 8): MSR(X) = (swish(X W_G) ⊙ GroupNorm_h(heads)) W_O.

    d_model d, num_heads h; W_Q, W_K d×d (head key width d_k = d/h); W_V, W_G d×value_dim (default
    2d, head value width d_v = value_dim/h); W_O value_dim×d. Fixed decays γ_h (gamma: "default",
    "linspace" or one value per head): `gamma` holds them as a float64 NumPy array, `log_gamma` (H,)
    and `theta` (d_k/2,) are float64 buffers on the module's device that no dtype cast touches
    (ExactBuffers) and that are not saved in state_dict (they follow from the configuration).
    Rotation: real pairs, θ = theta_schedule(d_k), position offset from the state.
    head_norm "layernorm" or "rmsnorm" (per head, no affine), eps its ε.
    normalisation "exact" (modes agree for any ε) or "torchscale" (the official per-mode scales);
    detach_normaliser stops gradients through normalisation (3)'s divisor (the official code does).
    backend "torch" (the PyTorch forms) or "triton" (retnet_ref.kernels: the chunkwise mode and the
    decode step on Triton kernels, chunk_size then a tile height; the other modes as with "torch").
    swish_gate=False: Table 6's "− swish gate", MSR(X) = Y W_O without W_G (the output stage is then
    _ungated_output); group_norm=False: Table 6's "− GroupNorm", Y = concat(heads) (head_norm the
    identity). Neither touches retention itself, so every mode and backend (the fused Triton step
    computes the heads only) runs with either switched off.
    """

    def __init__(self, d_model: int, num_heads: int, value_dim: int | None = None, gamma="default",
                 head_norm: str = "layernorm", eps: float = 1e-6, normalisation: str = "exact",
                 detach_normaliser: bool = False, backend: str = "torch", swish_gate: bool = True,
                 group_norm: bool = True):
        super().__init__()
        d_model, num_heads, value_dim = self._widths(d_model, num_heads, value_dim)
        check_choice(normalisation, NORMALISATIONS, "normalisation")
        check_choice(head_norm, NORMS, "head_norm")
        self.d_model, self.num_heads, self.value_dim = d_model, num_heads, value_dim
        self.key_head_dim, self.value_head_dim = d_model // num_heads, value_dim // num_heads
        self.normalisation = normalisation
        self.detach_normaliser = check_switch(detach_normaliser, "detach_normaliser")
        self.swish_gate = check_switch(swish_gate, "swish_gate")
        self.group_norm = check_switch(group_norm, "group_norm")
        self.backend = check_backend(backend)
        self._add_decays(gamma)
        self._add_projections()
        self.head_norm = make_norm(head_norm, self.value_head_dim, eps,
                                   affine=False) if group_norm else nn.Identity()
        if not swish_gate:
            # − swish gate: the output stage is MSR(X) = Y W_O (chosen once here: _gated_output
            # stays Eq. 8)
            self._gated_output = self._ungated_output
        self.reset_parameters()

    def _add_decays(self, gamma):
        """γ_h (checked) as `gamma`, a float64 NumPy array; log γ and θ as exact float64 buffers."""
        self.gamma = self._gammas(gamma, self.num_heads)              # (H,) float64 NumPy
        self.register_exact_buffer("log_gamma", np.log(self.gamma))   # (H,) float64, on the device
        self.register_exact_buffer("theta", theta_schedule(self.key_head_dim))   # (d_k/2,) float64

    def _add_projections(self):
        """W_Q, W_K d×d; W_V, W_G d×value_dim (no W_G without the swish gate); W_O value_dim×d."""
        d_model, value_dim = self.d_model, self.value_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        self.g_proj = nn.Linear(d_model, value_dim, bias=False) if self.swish_gate else None
        self.out_proj = nn.Linear(value_dim, d_model, bias=False)

    @staticmethod
    def _widths(d_model, num_heads, value_dim) -> tuple[int, int, int]:
        """d_model, num_heads and value_dim (None = 2 d_model), checked: whole heads of even key
        width."""
        d_model = check_positive_int(d_model, "d_model")
        num_heads = check_positive_int(num_heads, "num_heads")
        value_dim = 2 * d_model if value_dim is None else check_positive_int(value_dim, "value_dim")
        if d_model % num_heads or value_dim % num_heads:
            raise ValueError(f"d_model ({d_model}) and value_dim ({value_dim}) must be multiples "
                             f"of num_heads ({num_heads})")
        if (d_model // num_heads) % 2:
            raise ValueError(f"the key width per head d_model/num_heads = {d_model // num_heads} "
                             "must be even (the rotation pairs features)")
        return d_model, num_heads, value_dim

    @staticmethod
    def _gammas(gamma, num_heads) -> np.ndarray:
        if isinstance(gamma, str):
            return gamma_schedule(num_heads, gamma)
        return np.array(check_gammas(gamma, num_heads), dtype=np.float64)

    def reset_parameters(self):
        """Xavier-uniform; gain 2^-2.5 on W_Q, W_K, W_V, W_G (small initial retention output)."""
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.g_proj):
            if proj is not None:
                nn.init.xavier_uniform_(proj.weight, gain=2 ** -2.5)
        nn.init.xavier_uniform_(self.out_proj.weight)

    def _heads(self, x, width):
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, width).transpose(1, 2)     # (B, H, T, width)

    def forward(self, x: torch.Tensor, mode: str = "parallel", chunk_size: int | None = None,
                state: RetentionState | None = None) -> tuple[torch.Tensor, RetentionState]:
        """x (B, T, d) → (MSR(x) (B, T, d), RetentionState after the last token).

        mode "parallel" | "recurrent" | "chunkwise" (chunk_size required); state from an earlier
        call of any mode (positions continue from state.n), or None for the start of a sequence.
        """
        chunk_size = self.check_arguments(x, mode, chunk_size, state)
        offset = 0 if state is None else state.n
        q, k, v = self._rotated_heads(x,
                                      *rotation_factors(x.shape[1], self.theta, offset, x.dtype,
                                                        x.device))
        heads, state = _normalised(q, k, v, self.log_gamma, mode, chunk_size, state,
                                   self.normalisation,
                                   self.detach_normaliser, self.backend)  # (B, H, T, d_v)
        return self._gated_output(x, heads), state

    def check_arguments(self, x, mode, chunk_size, state) -> int | None:
        """forward's checks (the checked chunk size back); the state's position is read on the
        host."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be a (B, T, d_model={self.d_model}) tensor, got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        weight = self.q_proj.weight
        if x.dtype != weight.dtype or x.device != weight.device:
            raise TypeError(f"x is {x.dtype} on {x.device} but the layer's weights are "
                            f"{weight.dtype} on {weight.device}: move one to the other (x.to(...) "
                            "or layer.to(...))")
        chunk_size = check_mode(mode, chunk_size)
        if self.backend == "triton" and mode == "chunkwise":
            chunk_size = check_tile_height(chunk_size)
        if state is not None:
            if not isinstance(state, RetentionState):
                raise TypeError("state must be a RetentionState or None, got "
                                f"{type(state).__name__}")
            state.check(x.shape[0], self.num_heads, self.key_head_dim, self.value_head_dim,
                        x.device)
        return chunk_size

    def step_(self, x: torch.Tensor, state: RetentionState,
              factors: StepFactors | None = None) -> torch.Tensor:
        """One token x (B, 1, d) → MSR(x) (B, 1, d), `state` updated in place (a decode step).

        The same numbers as forward(x, "recurrent", state=state); nothing is checked or read on the
        host, so that a model's decode step built from it can be compiled or captured in a CUDA
        graph. factors: step_factors(state.n, x.dtype), which a model computes once for all its
        layers.
        """
        f = self.step_factors(state.n, x.dtype) if factors is None else factors
        q, k, v = self._rotated_heads(x, f.cos, f.sin)
        step = normalised_step_ if self.backend == "torch" else triton_normalised_step_
        heads = step(q, k, v, state, f.gap, f.floor, self.normalisation)            # (B, H, 1, d_v)
        return self._gated_output(x, heads)

    def step_factors(self, position, dtype: torch.dtype) -> StepFactors:
        """The rotation and decay factors of one decode step at position (a 0-d tensor), for x of
        dtype.

        They depend on θ, γ and the position only, so every layer of a model (one θ and γ schedule
        for all layers) can share them: computing them once per step saves dozens of small kernels a
        layer.
        """
        # (1, d_k/2) each
        cos, sin = rotation_factors(1, self.theta, position, dtype, self.theta.device)
        gap, floor = step_decay_factors(self.log_gamma, position, self.key_head_dim,
                                        accumulation_dtype(dtype))
        return StepFactors(cos, sin, gap, floor)

    def _rotated_heads(self, x, cos, sin):
        """q, k rotated by the angles of cos, sin (T, d_k/2), and v, split into heads: (B, H, T,
        d)."""
        q = self._heads(self.q_proj(x), self.key_head_dim)             # (B, H, T, d_k)
        k = self._heads(self.k_proj(x), self.key_head_dim)             # (B, H, T, d_k)
        v = self._heads(self.v_proj(x), self.value_head_dim)           # (B, H, T, d_v)
        # q̃_n = q_n e^{i(n0+n)θ}, k̃_m = k_m e^{i(n0+m)θ} (real pairs)
        return rotate_by(q, cos, sin), rotate_by(k, cos, sin), v

    def _gated_output(self, x, heads):
        # Y = GroupNorm_h(concat heads): a norm per head and token
        y = self.head_norm(heads).transpose(1, 2).flatten(2)            # (B, T, value_dim)
        # MSR(X) = (swish(X W_G) ⊙ Y) W_O
        return self.out_proj(F.silu(self.g_proj(x)) * y)

    def _ungated_output(self, x, heads):
        """The output stage of Table 6's "− swish gate" (swish_gate=False): no W_G, x unused."""
        # Y = GroupNorm_h(concat heads)
        y = self.head_norm(heads).transpose(1, 2).flatten(2)            # (B, T, value_dim)
        # MSR(X) = Y W_O
        return self.out_proj(y)


class FeedForward(nn.Module):
    """FFN(X) = act(X W_1) W_2 (the paper: gelu, width 2d), or gated: (act(X W_1) ⊙ X W_3) W_2."""

    def __init__(self, d_model: int, ffn_dim: int, activation: str = "gelu", gated: bool = False):
        super().__init__()
        check_choice(activation, ACTIVATIONS, "activation")
        d_model, ffn_dim = check_positive_int(d_model,
                                              "d_model"), check_positive_int(ffn_dim, "ffn_dim")
        self.activation = ACTIVATIONS[activation]
        self.fc1 = nn.Linear(d_model, ffn_dim, bias=False)
        self.gate = nn.Linear(d_model, ffn_dim, bias=False) if gated else None
        self.fc2 = nn.Linear(ffn_dim, d_model, bias=False)

    def forward(self, x):
        h = self.activation(self.fc1(x))                                # (B, T, ffn_dim)
        if self.gate is not None:
            # GLU: act(X W_1) ⊙ X W_3
            h = h * self.gate(x)
        return self.fc2(h)


class RetNetBlock(nn.Module):
    """One pre-norm layer (Eq. 9): Y = MSR(LN(X)) + X;  X' = FFN(LN(Y)) + Y.

    Built from a RetNetConfig (retnet_ref.model): its variant picks the norms and the FFN.
    """

    def __init__(self, config):
        super().__init__()
        norm = config.norm_kind
        self.retention_norm = make_norm(norm, config.d_model, config.norm_eps)
        self.retention = MultiScaleRetention(
            config.d_model, config.num_heads, config.value_dim, config.gamma, head_norm=norm,
            eps=config.norm_eps, normalisation=config.normalisation,
            detach_normaliser=config.detach_normaliser, backend=config.backend,
                                             swish_gate=config.swish_gate,
            group_norm=config.group_norm)
        self.ffn_norm = make_norm(norm, config.d_model, config.norm_eps)
        self.ffn = FeedForward(config.d_model, config.ffn_dim, config.activation,
                               gated=config.gated_ffn)

    def forward(self, x, mode="parallel", chunk_size=None, state=None):
        """x (B, T, d) → (X' (B, T, d), RetentionState)."""
        # Y = MSR(LN(X)) + X
        retained, state = self.retention(self.retention_norm(x), mode, chunk_size, state)
        return self._feed_forward(retained + x), state

    def step_(self, x, state, factors=None):
        """One token x (B, 1, d) → X' (B, 1, d), `state` updated in place (see
        MultiScaleRetention.step_)."""
        return self._feed_forward(self.retention.step_(self.retention_norm(x), state, factors) + x)

    def _feed_forward(self, y):
        # X' = FFN(LN(Y)) + Y
        return self.ffn(self.ffn_norm(y)) + y
