"""Per-head scores of a case study: side-by-side layer x head heatmaps, best head boxed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from figures.plotting import (
    DIVERGING,
    SEQUENTIAL,
    diverging_norm,
    heatmap,
    integer_ticks,
    mark_cell,
    new_figure,
)
from headprobe.heads import head_label


def draw_head_grids(grids: Sequence[np.ndarray], names: Sequence[str], title: str,
                    scales: Sequence[str] | None = None, best: Sequence[str] | None = None
                    ) -> Figure:
    """One layer x head heatmap per score, each with its colour bar and its best head boxed.

    grids: one [n_layers, n_heads] array per name; scales: per grid 'unit' (0..1),
    'auto' (min..max) or 'diverging' (centred on zero), default 'unit'; best: per grid
    'max' (default) or 'min', which extreme is the best head.
    """
    grids = [np.asarray(g, dtype=float) for g in grids]
    scales = list(scales or ["unit"] * len(grids))
    best = list(best or ["max"] * len(grids))
    n_layers, n_heads = grids[0].shape
    fig = new_figure(len(grids) * (0.3 * n_heads + 1.9), 0.3 * n_layers + 1.7)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, grid, name, scale, pick in zip(axes, grids, names, scales, best, strict=True):
        filled = np.where(np.isfinite(grid), grid, -np.inf if pick == "max" else np.inf)
        flat = np.argmax(filled) if pick == "max" else np.argmin(filled)
        layer, head = np.unravel_index(int(flat), grid.shape)
        if scale == "diverging":
            norm, cmap = diverging_norm(grid), DIVERGING
        elif scale == "auto":
            norm, cmap = Normalize(float(np.nanmin(grid)), float(np.nanmax(grid))), SEQUENTIAL
        else:
            norm, cmap = Normalize(0.0, 1.0), SEQUENTIAL
        image = heatmap(ax, grid, norm, cmap, xlabel="head", ylabel="layer",
                        title=f"{name}\n(best {head_label(layer, head)} = "
                              f"{grid[layer, head]:.2f})")
        ax.title.set_fontsize(9)
        mark_cell(ax, int(layer), int(head))
        integer_ticks(ax, n_layers, n_heads)
        fig.colorbar(image, ax=ax, label=name, shrink=0.9)
    fig.suptitle(title)
    return fig
