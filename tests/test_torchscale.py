"""Parity with the official implementation, torchscale 0.3.0 (an optional test oracle).

Run with torchscale installed: `make peers` installs it (CI does), or
`pip install --no-deps torchscale==0.3.0 fairscale==0.4.0`. Both come without their dependencies:
fairscale is imported for its wrappers only (checkpoint_wrapper, wrap), and torchscale imports timm
only for drop-path, used here at drop_path_rate 0; where timm is missing, a stand-in with an
identity drop_path is put in sys.modules for the import and removed afterwards (_stand_in_timm).

Tolerance for converted-vs-torchscale (float64 models, max |a - b| / max |b| over the logits): 1e-6.
torchscale computes its RMSNorm and its GLU activation in float32 even inside a float64 model, so
its logits carry float32 rounding (unit roundoff 6e-8); measured ≤ 1.2e-7 in every mode, ε and
length.
"""
from __future__ import annotations

import sys
import types

import pytest
import torch

from helpers import token_ids
from retnet_ref.model import RetNet

pytest.importorskip("fairscale",
                    reason="torchscale parity needs fairscale==0.4.0 (pip install --no-deps)")
pytest.importorskip("torchscale",
                    reason="torchscale parity needs torchscale==0.3.0 (pip install --no-deps)")

PARITY_TOL = 1e-6  # torchscale's float32 norms and activation (module docstring); measured ≤ 1.2e-7
TOL64 = 1e-12      # our own modes in float64; measured ≤ 6e-16
VOCAB, CHUNK = 97, 8
# lengths with and without a last partial chunk (torchscale pads it with zeros)
RAGGED, WHOLE = 30, 32


def _stand_in_timm() -> dict:
    """The modules torchscale imports from timm, as stand-ins: only timm.models.layers.drop_path,
    which RetNetDecoder calls with drop_path_rate 0 (the identity); a nonzero rate in training is
    refused."""
    def drop_path(x, drop_prob=0.0, training=False):
        if training and drop_prob:
            raise NotImplementedError("stand-in timm: drop-path is not available")
        return x
    layers = types.ModuleType("timm.models.layers")
    layers.drop_path = drop_path
    models = types.ModuleType("timm.models")
    models.layers = layers
    timm = types.ModuleType("timm")
    timm.models = models
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers}


def _import_torchscale():
    """RetNetConfig and RetNetDecoder of torchscale, with a stand-in timm only while importing."""
    try:
        import timm  # noqa: F401
        stubs = {}
    except ImportError:
        stubs = _stand_in_timm()
        sys.modules.update(stubs)
    try:
        import torchscale
        from torchscale.architecture.config import RetNetConfig
        from torchscale.architecture.retnet import RetNetDecoder
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return torchscale, RetNetConfig, RetNetDecoder

torchscale, TSConfig, RetNetDecoder = _import_torchscale()
if getattr(torchscale, "__version__", "0.3.0") != "0.3.0":
    pytest.skip(f"parity is checked against torchscale 0.3.0, found {torchscale.__version__}",
                allow_module_level=True)


def torchscale_decoder(eps=1e-6, qk_gain=1.0, seed=0, **overrides):
    """A small float64 torchscale RetNetDecoder with random weights; qk_gain scales W_Q and W_K so
    that normalisation (3) (the clamp max(|Σ R|, 1)) becomes active."""
    torch.manual_seed(seed)
    args = dict(decoder_embed_dim=64, decoder_value_embed_dim=96, decoder_retention_heads=2,
                decoder_ffn_embed_dim=80, decoder_layers=2, vocab_size=VOCAB,
                recurrent_chunk_size=CHUNK,
                activation_fn="swish", layernorm_eps=eps)
    args.update(overrides)
    decoder = RetNetDecoder(TSConfig(**args),
                            embed_tokens=torch.nn.Embedding(VOCAB, 64)).double().eval()
    with torch.no_grad():
        for layer in decoder.layers:
            layer.retention.q_proj.weight.mul_(qk_gain)
            layer.retention.k_proj.weight.mul_(qk_gain)
    return decoder


@torch.no_grad()
def torchscale_modes(decoder, x):
    """torchscale's logits in its three modes: parallel, recurrent (token by token), chunkwise."""
    parallel = decoder(x)[0]
    incremental_state = {}
    recurrent = torch.cat([decoder(x[:, :n + 1], incremental_state=incremental_state)[0]
                           for n in range(x.shape[1])], dim=1)
    decoder.chunkwise_recurrent = True
    try:
        chunkwise = decoder(x)[0]
    finally:
        decoder.chunkwise_recurrent = False
    return {"parallel": parallel, "recurrent": recurrent, "chunkwise": chunkwise}


@torch.no_grad()
def our_modes(model, x):
    return {"parallel": model(x)[0], "recurrent": model(x, "recurrent")[0],
            "chunkwise": model(x, "chunkwise", CHUNK)[0]}


@pytest.mark.parametrize("eps,length", [(1e-6, RAGGED), (1e-6, WHOLE), (0.0, WHOLE)])
@pytest.mark.parametrize("qk_gain", [1.0, 8.0])
def test_converted_model_reproduces_torchscale_in_every_mode(eps, length, qk_gain, rel_err):
    decoder = torchscale_decoder(eps, qk_gain)
    x = token_ids(2, length, VOCAB)
    theirs = torchscale_modes(decoder, x)
    ours = our_modes(RetNet.from_torchscale(decoder), x)
    for mode in theirs:
        assert rel_err(ours[mode], theirs[mode]) < PARITY_TOL, mode


def test_torchscale_modes_disagree_at_its_default_eps_and_agree_at_zero(rel_err):
    """With ε = 1e-6 torchscale's modes differ by far more than its float32 rounding (measured here:
    recurrent 7.3e-6 and chunkwise 8.3e-6 relative to parallel); with ε = 0 they agree to ≤ 1.1e-7.
    (With qk_gain 1 the clamp of normalisation (3) is inactive: recurrent then equals parallel, but
    chunkwise still differs by 4.0e-3 at ε = 1e-6, its rows being scaled down by the carried
    state.)"""
    disagreement = {}
    for eps in (1e-6, 0.0):
        modes = torchscale_modes(torchscale_decoder(eps, qk_gain=8.0), token_ids(2, WHOLE, VOCAB))
        disagreement[eps] = torch.tensor([rel_err(modes[m], modes["parallel"])
                                          for m in ("recurrent", "chunkwise")])
    assert (disagreement[1e-6] > 1e-6).all()
    assert (disagreement[0.0] < PARITY_TOL).all()


def test_torchscale_chunkwise_with_eps_zero_and_a_partial_chunk_gives_nan():
    """A peer defect, recorded: torchscale pads the last chunk with zero rows; with ε = 0 its
    per-head RMSNorm turns them into 0/0 = NaN, which the next layer's masked score matrix (NaN · 0)
    spreads into the real rows of that chunk. Our chunkwise form does not pad."""
    decoder = torchscale_decoder(0.0)
    x = token_ids(2, RAGGED, VOCAB)
    assert torch.isnan(torchscale_modes(decoder, x)["chunkwise"]).any()
    assert torch.isfinite(our_modes(RetNet.from_torchscale(decoder), x)["chunkwise"]).all()


def test_exact_normalisation_makes_the_converted_modes_agree(rel_err):
    decoder = torchscale_decoder(1e-6, qk_gain=8.0)
    x = token_ids(2, RAGGED, VOCAB)
    ours = our_modes(RetNet.from_torchscale(decoder, normalisation="exact"), x)
    assert rel_err(ours["recurrent"], ours["parallel"]) < TOL64
    assert rel_err(ours["chunkwise"], ours["parallel"]) < TOL64
    # torchscale's parallel mode applies the exact normalisation: the same logits
    assert rel_err(ours["parallel"], torchscale_modes(decoder, x)["parallel"]) < PARITY_TOL


def test_converted_model_has_the_official_block():
    model = RetNet.from_torchscale(torchscale_decoder())
    c = model.config
    assert (c.variant, c.norm_kind, c.gated_ffn, c.value_dim, c.ffn_dim, c.activation) == \
        ("official", "rmsnorm", True, 96, 80, "swish")
    assert model.blocks[0].retention.head_norm.weight is None      # per-head RMSNorm without affine


def test_unsupported_torchscale_options_are_rejected():
    with pytest.raises(ValueError, match="deepnorm"):
        RetNet.from_torchscale(torchscale_decoder(deepnorm=True, subln=False))
