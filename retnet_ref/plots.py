"""One place for figure style and saving, so that notebooks hold no plotting boilerplate.

Figures are written as PNG into the repository's `figures/` folder (or $RETNET_FIGURES) with no
software/date metadata, so that regenerating them with the same library versions gives the same bytes.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "svg.hashsalt": "retnet-ref",
}


def figures_dir() -> Path:
    """$RETNET_FIGURES if set, else `figures/` at the repository root (created if missing)."""
    root = os.environ.get("RETNET_FIGURES")
    path = Path(root) if root else Path(__file__).resolve().parent.parent / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.4, **kwargs):
    """A new figure in the project style: returns (fig, axes) like plt.subplots.

    The figure is detached from pyplot at once, so a notebook shows it exactly once: where a cell
    ends with `fig`, never a second time by pyplot's automatic display.
    """
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kwargs)
    plt.close(fig)
    return fig, axes


def save(fig, name: str) -> str:
    """Write fig to figures/<name>.png deterministically; returns the file name (not the path).

    Shows nothing by itself: in a notebook, end the cell with `fig` to display the figure.
    """
    with plt.rc_context(STYLE):
        fig.tight_layout()
        fig.savefig(figures_dir() / f"{name}.png", metadata={"Software": None})
    return f"{name}.png"
