"""Probe F1 grids: one layer x head heatmap per tag, drawn as small multiples.

Selectivity is the probe's F1 minus the F1 of the same probe trained on shuffled
labels (the control task): how much of the score the activations themselves earn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from figures.plotting import (
    DIVERGING,
    SEQUENTIAL,
    diverging_norm,
    grid_shape,
    head_name,
    heatmap,
    hide_unused,
    integer_ticks,
    new_figure,
)

PANEL_INCH = 0.16  # inches per grid cell in small multiples


def selectivity(f1: np.ndarray, f1_shuffled: np.ndarray) -> np.ndarray:
    """F1 minus the shuffled-label control's F1, same shape as the inputs."""
    return np.asarray(f1, dtype=float) - np.asarray(f1_shuffled, dtype=float)


def best_head(grid: np.ndarray) -> tuple[int, int]:
    """(layer, head) of the largest finite value of ``grid`` [layer, head]."""
    filled = np.where(np.isfinite(grid), grid, -np.inf)
    layer, head = np.unravel_index(int(np.argmax(filled)), filled.shape)
    return int(layer), int(head)


def draw_tag_grids(values: np.ndarray, tags: Sequence[str], title: str, value_label: str,
                   diverging: bool = False, support: np.ndarray | None = None) -> Figure:
    """Small multiples of layer x head heatmaps, one panel per tag, one shared colour bar.

    values: [n_layers, n_heads, n_tags]; support: [n_tags] test tokens per tag (shown in
    panel titles). Diverging scales are centred on zero; others run from 0 to 1.
    """
    values = np.asarray(values, dtype=float)
    n_layers, n_heads, n_tags = values.shape
    if len(tags) != n_tags:
        raise ValueError(f"{len(tags)} tag names for {n_tags} tag columns")
    rows, cols = grid_shape(n_tags, panel_aspect=n_layers / max(n_heads, 1))
    panel_w, panel_h = PANEL_INCH * n_heads + 0.45, PANEL_INCH * n_layers + 0.5
    fig = new_figure(cols * panel_w + 1.2, rows * panel_h + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False))
    norm = diverging_norm(values) if diverging else Normalize(0.0, 1.0)
    cmap = DIVERGING if diverging else SEQUENTIAL
    image = None
    for k, tag in enumerate(tags):
        ax = axes.ravel()[k]
        row, col = divmod(k, cols)
        label = tag if support is None else f"{tag} (n={int(support[k])})"
        image = heatmap(ax, values[:, :, k], norm, cmap,
                        xlabel="head" if row == rows - 1 or k + cols >= n_tags else "",
                        ylabel="layer" if col == 0 else "")
        ax.set_title(label, fontsize=8)
        integer_ticks(ax, n_layers, n_heads, max_ticks=8)
    hide_unused(axes, n_tags)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label=value_label)
    fig.suptitle(title)
    return fig


def _mark(ax, layer: int, head: int) -> None:
    ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))


def draw_tag_detail(f1: np.ndarray, f1_shuffled: np.ndarray, sites: Sequence[str],
                    tag: str, support: int | None = None) -> Figure:
    """One tag in full: per site, its F1 grid, the shuffled-label control and the selectivity.

    f1, f1_shuffled: [n_sites, n_layers, n_heads]. The best head of each F1 grid is boxed.
    """
    f1, f1_shuffled = np.asarray(f1, dtype=float), np.asarray(f1_shuffled, dtype=float)
    n_sites, n_layers, n_heads = f1.shape
    sel = selectivity(f1, f1_shuffled)
    fig = new_figure(3 * (0.3 * n_heads + 1.6), n_sites * (0.3 * n_layers + 1.0) + 0.5)
    axes = fig.subplots(n_sites, 3, squeeze=False)
    unit, centred = Normalize(0.0, 1.0), diverging_norm(sel)
    for s, site in enumerate(sites):
        layer, head = best_head(f1[s])
        panels = (
            (f1[s], unit, SEQUENTIAL, "F1",
             f"{site}: F1 (best {head_name(layer, head)} = {f1[s, layer, head]:.2f})"),
            (f1_shuffled[s], unit, SEQUENTIAL, "F1, shuffled labels",
             f"{site}: shuffled-label control"),
            (sel[s], centred, DIVERGING, "selectivity (F1 - shuffled F1)",
             f"{site}: selectivity"),
        )
        for c, (grid, norm, cmap, label, title) in enumerate(panels):
            ax = axes[s, c]
            image = heatmap(ax, grid, norm, cmap, xlabel="head", ylabel="layer", title=title)
            ax.title.set_fontsize(9)
            integer_ticks(ax, n_layers, n_heads)
            fig.colorbar(image, ax=ax, shrink=0.9, label=label)
            if c != 1:
                _mark(ax, layer, head)
    suffix = "" if support is None else f" (n={int(support)} test tokens)"
    fig.suptitle(f"Probes for tag {tag}{suffix}")
    return fig
