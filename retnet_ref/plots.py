"""One place for figure style and saving, so that notebooks hold no plotting boilerplate.

Figures are written as PNG into `figures/` of the checkout you work in, or of the working directory
outside a checkout (or into $RETNET_FIGURES; see retnet_ref/paths.py), with no software/date
metadata, so that regenerating them with the same library versions gives the same bytes.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter

from .paths import figures_dir

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}


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


def legend_beside(ax, fontsize: float = 7, **kwargs):
    """The legend to the right of ax, outside it, so that it hides no data point."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=fontsize, **kwargs)


def plain_log_ticks(ax):
    """Tick labels of a log-scaled y axis as plain numbers (30, not 3 × 10^1), major ticks only."""
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
