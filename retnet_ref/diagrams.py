"""Pictures of structure for the notebooks, drawn with matplotlib (no image files to keep in sync).

    chunk_split(ax, T, C)     the T × T scores cut into C × C blocks: inner term, cross-chunk term,
    ζ and ξ recurrent_update(ax)      one step S_{n+1} = γ S_n + k_n^T v_n, o_n = q_n S_{n+1}
    msr_layer(ax)             gated multi-scale retention (Eq. 8) with its parallel and recurrent
    forms retnet_block(ax)          the pre-LN residual block (Eq. 9)

Each draws onto an axes made by retnet_ref.plots.figure and saved by retnet_ref.plots.save, so the
pictures are as deterministic as the data plots.
"""
from __future__ import annotations

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import FancyBboxPatch

INNER, CROSS, FUTURE = 2, 1, 0
COLOURS = {"inner": "#9ecae1", "cross": "#fdd0a2", "future": "#ffffff", "state": "#c7e9c0",
           "op": "#f0f0f0"}


def chunk_regions(T: int, C: int) -> np.ndarray:
    """(T, T) labels: INNER where key m is in query n's own chunk (m ≤ n), CROSS for earlier chunks,
    else FUTURE."""
    n, m = np.arange(T)[:, None], np.arange(T)[None, :]
    same_chunk = (n // C) == (m // C)
    return np.where(m > n, FUTURE, np.where(same_chunk, INNER, CROSS))


def chunk_split(ax, T: int = 12, C: int = 4, chunk: int = 2) -> None:
    """Eq. 7 as a picture; chunk i = `chunk` gets its ξ (rows) and chunk i-1 its ζ (columns) written
    out."""
    cmap = ListedColormap([COLOURS["future"], COLOURS["cross"], COLOURS["inner"]])
    ax.imshow(chunk_regions(T, C), cmap=cmap, vmin=0, vmax=2)
    for edge in np.arange(C, T, C) - 0.5:
        ax.axhline(edge, color="0.3", lw=1)
        ax.axvline(edge, color="0.3", lw=1)
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.grid(False)
    ax.set_xlabel("key position m")
    ax.set_ylabel("query position n")
    first = chunk * C
    for r in range(C):            # ξ_r = γ^(r+1) weights row r of chunk i's cross term
        ax.text(T - 0.3, first + r, rf"$\xi_{r} = \gamma^{{{r + 1}}}$", va="center", ha="left",
                fontsize=8)
    for r in range(C):            # ζ_r = γ^(C-r-1): key r of chunk i-1 as it enters R_{i-1}
        ax.text(first - C + r, -0.8, rf"$\zeta_{r}$", ha="center", va="bottom", fontsize=8)
    ax.text(first + C / 2 - 0.5, first + C / 2 - 0.5, "inner\n" + r"$(Q K^\top\!\odot D) V$",
            ha="center",
            va="center", fontsize=7)
    ax.text(first / 2 - 0.5, first + C / 2 - 0.5, r"cross: $\xi \odot (Q_{[i]} R_{i-1})$",
            ha="center",
            va="center", fontsize=7)
    ax.set_title(f"T = {T}, chunks of C = {C}: chunk i = {chunk}", fontsize=9, pad=24)


def _box(ax, x, y, text, colour="op", width=1.6, height=0.55, fontsize=8):
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.04",
                                facecolor=COLOURS[colour], edgecolor="0.3", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, text=None):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="0.2", lw=1))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.15, text, fontsize=7,
                ha="center", va="bottom")


def _canvas(ax, width, height, title):
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)


def recurrent_update(ax) -> None:
    """The state fades by γ, gains one outer product, and is read by the query."""
    _canvas(ax, 8.0, 3.2,
            r"one recurrent step: $S_{n+1} = \gamma S_n + k_n^\top v_n$,  $o_n = q_n S_{n+1}$")
    _box(ax, 0.9, 2.2, "$S_n$\n$d_k \\times d_v$", "state", height=0.9)
    _box(ax, 2.7, 2.2, r"$\times\,\gamma$" + "\n(fade)", width=1.2, height=0.9)
    _box(ax, 2.7, 0.6, r"$k_n^\top v_n$" + "\nouter product", width=1.6, height=0.8)
    _box(ax, 4.6, 2.2, "$+$", width=0.6, height=0.6)
    _box(ax, 6.3, 2.2, "$S_{n+1}$\n$d_k \\times d_v$", "state", height=0.9)
    _box(ax, 6.3, 0.6, r"$o_n = q_n S_{n+1}$", width=1.8, height=0.6)
    _arrow(ax, (1.7, 2.2), (2.1, 2.2))
    _arrow(ax, (3.3, 2.2), (4.3, 2.2))
    _arrow(ax, (3.5, 0.6), (4.5, 1.9))
    _arrow(ax, (4.9, 2.2), (5.5, 2.2))
    _arrow(ax, (6.3, 1.75), (6.3, 0.9))
    _arrow(ax, (7.1, 2.2), (7.8, 2.2), "next token")


def msr_layer(ax) -> None:
    """Eq. 8: projections, rotation, one retention per head (either form), GroupNorm, swish gate,
    W_O."""
    _canvas(ax, 9.0, 6.2, "gated multi-scale retention (Eq. 8): two forms, one function")
    _box(ax, 4.5, 5.7, "$X$  (B, T, $d_{model}$)", width=2.4)
    for x, text in ((1.4, "$Q = XW_Q$\nrotate"), (3.3, "$K = XW_K$\nrotate"), (5.2, "$V = XW_V$"),
                    (7.6, "$G = XW_G$")):
        _box(ax, x, 4.6, text, width=1.5, height=0.7)
        _arrow(ax, (4.5, 5.4), (x, 4.95))
    _box(ax, 2.1, 3.2, "parallel (training)\n$(QK^\\top \\odot D)V$", "inner", width=2.6,
         height=0.8)
    _box(ax, 5.0, 3.2, "recurrent (decoding)\n$S_{n+1} = \\gamma S_n + k_n^\\top v_n$", "state",
         width=2.8,
         height=0.8)
    ax.text(3.55, 3.2, "=", ha="center", va="center", fontsize=12)
    for x in (1.4, 3.3, 5.2):
        _arrow(ax, (x, 4.25), (x if x < 5 else 4.6, 3.6))
    _box(ax, 3.55, 1.9, "GroupNorm per head\n(one $\\gamma_h$ per head)", width=3.0, height=0.7)
    _arrow(ax, (3.55, 2.8), (3.55, 2.25))
    _box(ax, 5.9, 0.9, r"swish$(G)\odot Y$", width=1.9, height=0.55)
    _arrow(ax, (3.55, 1.55), (5.2, 1.15))
    _arrow(ax, (7.6, 4.25), (6.4, 1.2))
    _box(ax, 8.2, 0.9, "$\\cdot\\,W_O$", width=1.0, height=0.55)
    _arrow(ax, (6.85, 0.9), (7.7, 0.9))


def retnet_block(ax) -> None:
    """Eq. 9: Y = MSR(LN(X)) + X, X' = FFN(LN(Y)) + Y."""
    _canvas(ax, 4.6, 7.0, "one RetNet block (Eq. 9)")
    _box(ax, 1.6, 6.5, "$X^l$", width=1.0)
    _box(ax, 1.6, 5.5, "LayerNorm", width=1.6)
    _box(ax, 1.6, 4.6, "MSR (Eq. 8)", "inner", width=1.6)
    _box(ax, 1.6, 3.6, "$+$", width=0.5, height=0.5)
    _box(ax, 1.6, 2.7, "LayerNorm", width=1.6)
    _box(ax, 1.6, 1.8, "FFN: gelu$(YW_1)W_2$", "state", width=2.2)
    _box(ax, 1.6, 0.8, "$+$", width=0.5, height=0.5)
    for top, bottom in ((6.22, 5.78), (5.22, 4.88), (4.32, 3.85), (3.35, 2.98), (2.42, 2.08),
                        (1.52, 1.05)):
        _arrow(ax, (1.6, top), (1.6, bottom))
    for start_y, end_y, label in ((6.5, 3.6, "residual $X^l$"), (3.6, 0.8, "residual $Y^l$")):
        ax.annotate("", xy=(1.85, end_y), xytext=(2.1, start_y),
                    arrowprops=dict(arrowstyle="->", color="0.4", lw=1,
                                    connectionstyle="arc3,rad=-0.5"))
        ax.text(3.0, (start_y + end_y) / 2, label, fontsize=7, va="center")
    ax.text(1.6, 0.25, "$X^{l+1}$", ha="center", fontsize=8)
