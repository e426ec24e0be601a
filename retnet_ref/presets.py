"""The model sizes RetNet and the Transformer baseline share, so that equal names pair equal
budgets.

"tiny" for tests and notebooks, and the paper's 1.3B, 2.7B and 6.7B (Sun et al. 2023, Table "model
sizes", §3.1: d_model, layers, heads). The paper does not fix a vocabulary; both models use 32,000
(a common sentencepiece size) with separate input embedding and output head.
"""
from __future__ import annotations

from ._checks import check_choice

PAPER_VOCAB_SIZE = 32000

SIZES = {
    "tiny": dict(vocab_size=256, d_model=64, num_layers=2, num_heads=2),
    "1.3B": dict(vocab_size=PAPER_VOCAB_SIZE, d_model=2048, num_layers=24, num_heads=8),
    "2.7B": dict(vocab_size=PAPER_VOCAB_SIZE, d_model=2560, num_layers=32, num_heads=10),
    "6.7B": dict(vocab_size=PAPER_VOCAB_SIZE, d_model=4096, num_layers=32, num_heads=16),
}
NOMINAL_PARAMETERS = {"1.3B": 1.3e9, "2.7B": 2.7e9, "6.7B": 6.7e9}


def count_parameters(module) -> int:
    """Number of weights of a model or any part of it, counted one way for both models (works on the
    meta device, where no memory is allocated)."""
    return sum(p.numel() for p in module.parameters())


def preset_sizes(name: str) -> dict:
    """The sizes of preset `name` (a fresh dict: vocab_size, d_model, num_layers, num_heads)."""
    return dict(SIZES[check_choice(name, SIZES, "preset name")])
