"""What the recurrent and chunkwise forms carry from one call to the next, and how a call selects
its form.

    RetentionState   one retention layer: S, z and the number of tokens seen (normalisation.py,
                     layers.py)
    RetNetState      the whole model: one RetentionState per layer (model.py)
    MODES, check_mode  the three forms a layer or the model runs (Eq. 5, 6, 7), and the chunk size
    they take

The plain forms of retnet_ref.retention carry the bare state tensor S (B, H, d_k, d_v); the
Transformer baseline's KV cache is its own (retnet_ref.transformer.KVCache).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ._checks import check_choice, check_positive_int

MODES = ("parallel", "recurrent", "chunkwise")


@dataclass
class RetentionState:
    """What one retention layer carries from token to token, for B sequences and H heads.

    S (B, H, d_k, d_v): Σ_m γ^(n-m) k_m^T v_m, the unnormalised state of Eq. (6);
    z (B, H, d_k):      Σ_m γ^(n-m) k_m, the running key sum behind normalisation (3);
    n:                  tokens seen so far (the position of the next token; the rotation offset), a
                        0-d int64 tensor on S's device (an int is converted), so that a decode step
                        can advance it in place without reading it on the host.
    """

    S: torch.Tensor
    z: torch.Tensor
    n: torch.Tensor

    def __post_init__(self):
        if (
            isinstance(self.n, numbers.Integral)
            and not isinstance(self.n, bool)
            and isinstance(self.S, torch.Tensor)
        ):
            self.n = torch.tensor(int(self.n), dtype=torch.int64, device=self.S.device)

    @classmethod
    def zeros(cls, batch: int, heads: int, d_k: int, d_v: int, dtype=torch.float32, device=None,
              position=0):
        """The state before any token (S = 0, z = 0) of B sequences and H heads, at `position` (a
        decode benchmark or a test may start anywhere: nothing decays from an empty state)."""
        # (B, H, d_k, d_v)
        return cls(torch.zeros(batch, heads, d_k, d_v, dtype=dtype, device=device),
                   torch.zeros(batch, heads, d_k, dtype=dtype, device=device),        # (B, H, d_k)
                   torch.tensor(position, dtype=torch.int64, device=device))

    def detach(self) -> "RetentionState":
        """The same state cut from the autograd graph. S and z share memory with this state (a
        decode step, which writes in place, changes both); n is a copy."""
        return RetentionState(self.S.detach(), self.z.detach(), self.n.clone())

    def check(self, batch: int, heads: int, d_k: int, d_v: int, device,
              name: str = "state") -> "RetentionState":
        """The state fits B sequences of H heads of widths d_k, d_v on device; n ≥ 0 (read on the
        host)."""
        if not isinstance(self.S, torch.Tensor) or not isinstance(self.z, torch.Tensor):
            raise TypeError(f"{name}.S and {name}.z must be torch tensors")
        expected = (batch, heads, d_k, d_v)
        if tuple(self.S.shape) != expected:
            raise ValueError(f"{name}.S must have shape (B, H, d_k, d_v) = {expected}, got "
                             f"{tuple(self.S.shape)} (a state from another batch size or "
                             "configuration?)")
        if tuple(self.z.shape) != expected[:3]:
            raise ValueError(f"{name}.z must have shape (B, H, d_k) = {expected[:3]}, got "
                             f"{tuple(self.z.shape)}")
        if not (self.S.dtype.is_floating_point and self.z.dtype.is_floating_point):
            raise TypeError(f"{name}.S and {name}.z must have a real floating dtype, got "
                            f"{self.S.dtype} and {self.z.dtype} (the state of rotated q and k is "
                            "real: the rotation acts on q and k)")
        if self.S.device != device or self.z.device != device:
            raise ValueError(f"{name} must be on the inputs' device {device}, got {self.S.device}")
        _check_tokens_seen(self.n, name)
        return self


def _check_tokens_seen(n, name: str):
    """n a non-negative integer: a 0-d integer tensor (read on the host) or an int."""
    is_count = (isinstance(n, torch.Tensor) and n.dim() == 0 and not n.dtype.is_floating_point
                and n.dtype != torch.bool) or (isinstance(n, numbers.Integral)
                                               and not isinstance(n, bool))
    if not is_count or int(n) < 0:
        raise ValueError(f"{name}.n must be a non-negative integer (tokens seen), got {n!r}")


def check_mode(mode, chunk_size):
    """mode one of MODES; chunk_size a positive integer for chunkwise and None otherwise."""
    if check_choice(mode, MODES, "mode") == "chunkwise":
        if chunk_size is None:
            raise ValueError("chunk_size is required for mode='chunkwise'")
        return check_positive_int(chunk_size, "chunk_size")
    if chunk_size is not None:
        raise ValueError("chunk_size is used by mode='chunkwise' only, got "
                         f"chunk_size={chunk_size!r} with mode={mode!r}")
    return None


@dataclass
class RetNetState:
    """The whole model's recurrent state: one RetentionState per layer (all at the same
    position)."""

    layers: list[RetentionState]

    @property
    def n(self) -> torch.Tensor:
        """Tokens seen so far (the next token's position), a 0-d tensor."""
        return self.layers[0].n

    def detach(self) -> "RetNetState":
        return RetNetState([layer.detach() for layer in self.layers])

    def snapshot(self):
        """A copy of every layer's S, z and n, and the function that writes it back (in place) →
        restore()."""
        saved = [(layer.S.clone(), layer.z.clone(), layer.n.clone()) for layer in self.layers]

        def restore():
            for layer, (S, z, n) in zip(self.layers, saved):
                layer.S.copy_(S), layer.z.copy_(z), layer.n.copy_(n)
        return restore
