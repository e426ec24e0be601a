"""Everything that reproduces the official implementation, torchscale 0.3.0: its per-mode row scales
and the conversion of its RetNetDecoder's weights (RetNet.from_torchscale).

The row scales (normalisation="torchscale", retnet_ref.normalisation) differ per mode: the parallel
mode applies the paper's three normalisations exactly (normalisation.exact_row_scale); the recurrent
mode only (1) and (2); the chunkwise mode (2) with the row sums of the chunk alone, and (3) replaced
by max(Σ_m |R_nm| within the chunk, max-column-abs-sum of the carried state, 1). Rows are still
proportional to the plain output o_n, so after a per-head norm with ε = 0 the modes agree, and with
ε > 0 they do not (torchscale issues #40 and #77).
"""
from __future__ import annotations

import math

import torch

from .decay import decay_matrix, decay_row_sum
from .retention import _chunkwise, accumulation_dtype

# ---------------------------------------------------------------- the row scales of the recurrent
# and chunkwise modes


def torchscale_row_scale(q, k, v, c, d_k, log_g, mode, chunk_size, S0):
    """The divisor per row that the official code applies in the recurrent or chunkwise mode.

    c (H, T): the row sums c_n at the rows' absolute positions; S0 the state before the first row.
    """
    if mode == "recurrent":
        # (1) and (2) only: √d_k sqrt(c_n)
        return (d_k * c).sqrt()                                         # (H, T)
    return _torchscale_chunk_scale(q, k, v, d_k, log_g, chunk_size, S0)


def _torchscale_chunk_scale(q, k, v, d_k, log_g, chunk_size, S0):
    """torchscale's chunkwise divisor: √d_k sqrt(c^chunk_r) max(inner_r, cross_i), chunk by chunk.

    inner_r = max(Σ_{m in chunk, m ≤ r} |q_r·k_m| γ^(r-m) / (√d_k sqrt(c^chunk_r)), 1);
    cross_i = max(max_j Σ_l |S_{i-1}|_{lj} / (√d_k c^chunk_{C-1}), 1) with S_{i-1} the state at the
    chunk's start (the given initial state for the first chunk). Row sums c^chunk use the chunk size
    C (torchscale pads the last chunk to C).
    """
    acc = accumulation_dtype(q.dtype)
    c_chunk = decay_row_sum(chunk_size, log_g).to(acc)                # (H, C)
    root_dk = math.sqrt(d_k)
    S = S0
    scales = []
    for start in range(0, q.shape[2], chunk_size):
        qc, kc, vc = (x[:, :, start:start + chunk_size] for x in (q, k, v))   # (B, H, L, d)
        L = qc.shape[2]
        # √d_k sqrt(c^chunk_r): normalisations (1) and (2) with the chunk's own row sums
        row_norm = root_dk * c_chunk[:, :L].sqrt()[..., None]          # (H, L, 1)
        # (B, H, L, L)
        abs_scores = (qc.to(acc) @ kc.to(acc).transpose(-1,
                                                        -2)).abs() * decay_matrix(L, log_g).to(acc)
        inner = (abs_scores.sum(-1, keepdim=True) / row_norm).clamp(min=1.0)          # (B, H, L, 1)
        cross = (S.abs().sum(-2).amax(-1) / (root_dk * c_chunk[:, -1])).clamp(min=1.0)   # (B, H)
        scales.append(row_norm * torch.maximum(inner, cross[..., None, None]))        # (B, H, L, 1)
        S = _chunkwise(qc, kc, vc, log_g, L, S)[1]             # the state at the next chunk's start
    return torch.cat(scales, dim=2)[..., 0]                    # (B, H, T)


# ---------------------------------------------------------------- converting a RetNetDecoder

# torchscale options the conversion does not reproduce, each with how to read it from a decoder
UNSUPPORTED = {
    "deepnorm": lambda decoder: decoder.args.deepnorm,
    "moe_freq": lambda decoder: decoder.args.moe_freq,
    "multiway": lambda decoder: decoder.args.multiway,
    "layernorm_embedding": lambda decoder: decoder.args.layernorm_embedding,
    "xpos_rel_pos": lambda decoder: decoder.args.xpos_rel_pos,
    "decoder_normalize_before=False": lambda decoder: not decoder.args.decoder_normalize_before,
    "embed_tokens=None": lambda decoder: decoder.embed_tokens is None,
    "output_projection=None": lambda decoder: decoder.output_projection is None,
}
RETENTION_WEIGHTS = ("q_proj", "k_proj", "v_proj", "g_proj", "out_proj")
FFN_WEIGHTS = ("fc1", "gate", "fc2")


def check_convertible(decoder) -> None:
    """ValueError naming every torchscale option set that the conversion does not support."""
    bad = [name for name, is_set in UNSUPPORTED.items() if is_set(decoder)]
    if bad:
        raise ValueError(f"torchscale options not supported by the conversion: {bad}")


def config_fields(decoder, normalisation: str) -> dict:
    """The RetNetConfig fields of a torchscale RetNetDecoder (variant "official"), its γ as
    stored."""
    args = decoder.args
    return dict(
        vocab_size=decoder.embed_tokens.num_embeddings, d_model=args.decoder_embed_dim,
        num_layers=args.decoder_layers, num_heads=args.decoder_retention_heads,
        value_dim=args.decoder_value_embed_dim, ffn_dim=args.decoder_ffn_embed_dim,
                variant="official",
        activation=args.activation_fn,
                gamma=tuple(decoder.retnet_rel_pos.decay.detach().double().exp().tolist()),
        norm_eps=args.layernorm_eps, normalisation=normalisation,
                embed_scale=float(decoder.embed_scale),
        chunk_size=args.recurrent_chunk_size)


def stored_theta(decoder) -> torch.Tensor:
    """torchscale's rotation angles θ (d_k/2,) in float64, from its table that stores each one
    twice."""
    return decoder.retnet_rel_pos.angle.detach().to("cpu", torch.float64)[0::2]


@torch.no_grad()
def copy_weights(model, decoder) -> None:
    """Every weight of decoder into model (a RetNet of config_fields(decoder)), θ included."""
    theta = stored_theta(decoder)
    model.embed.weight.copy_(decoder.embed_tokens.weight)
    model.head.weight.copy_(decoder.output_projection.weight)
    model.final_norm.weight.copy_(decoder.layer_norm.weight)
    for ours, theirs in zip(model.blocks, decoder.layers):
        ours.retention.theta = theta.clone()
        for name in RETENTION_WEIGHTS:
            getattr(ours.retention, name).weight.copy_(getattr(theirs.retention, name).weight)
        ours.retention_norm.weight.copy_(theirs.retention_layer_norm.weight)
        ours.ffn_norm.weight.copy_(theirs.final_layer_norm.weight)
        for name in FFN_WEIGHTS:
            getattr(ours.ffn, name).weight.copy_(getattr(theirs.ffn, name).weight)
