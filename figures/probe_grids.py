"""Probe F1 grids: one layer x head heatmap per tag, drawn as small multiples.

Selectivity is the probe's F1 minus the F1 of a control (the same probe trained on
shuffled labels, or on the vectors of a randomly initialised model): how much of the
score the trained model's activations themselves earn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from figures.plotting import (
    DIVERGING,
    SEQUENTIAL,
    diverging_norm,
    grid_shape,
    heatmap,
    hide_unused,
    integer_ticks,
    mark_cell,
    new_figure,
)
from headprobe.heads import head_label

PANEL_INCH = 0.16  # inches per grid cell in small multiples


def selectivity(f1: np.ndarray, f1_control: np.ndarray) -> np.ndarray:
    """F1 minus a control's F1, same shape as the inputs."""
    return np.asarray(f1, dtype=float) - np.asarray(f1_control, dtype=float)


def best_head(grid: np.ndarray) -> tuple[int, int]:
    """(layer index, head) of the largest finite value of ``grid`` [layer, head]."""
    filled = np.where(np.isfinite(grid), grid, -np.inf)
    layer, head = np.unravel_index(int(np.argmax(filled)), filled.shape)
    return int(layer), int(head)


def _layer_ticks(ax, layers: Sequence[int] | None, n_layers: int, n_heads: int,
                 max_ticks: int) -> None:
    integer_ticks(ax, n_layers, n_heads, max_ticks=max_ticks)
    if layers is not None:
        ax.set_yticklabels([str(layers[int(i)]) for i in ax.get_yticks()])


def draw_tag_grids(values: np.ndarray, tags: Sequence[str], title: str, value_label: str,
                   diverging: bool = False, support: np.ndarray | None = None,
                   layers: Sequence[int] | None = None) -> Figure:
    """Small multiples of layer x head heatmaps, one panel per tag, one shared colour bar.

    values: [n_layers, n_heads, n_tags]; support: [n_tags] test tokens per tag (shown in
    panel titles); layers: [n_layers] model layer of each row (default 0..n_layers-1).
    Diverging scales are centred on zero; others run from 0 to 1.
    """
    values = np.asarray(values, dtype=float)
    n_layers, n_heads, n_tags = values.shape
    if len(tags) != n_tags:
        raise ValueError(f"{len(tags)} tag names for {n_tags} tag columns")
    panel_w, panel_h = PANEL_INCH * n_heads + 0.45, PANEL_INCH * n_layers + 0.55
    rows, cols = grid_shape(n_tags, panel_aspect=panel_h / panel_w)
    fig = new_figure(cols * panel_w + 1.2, rows * panel_h + 0.7)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False))
    norm = diverging_norm(values) if diverging else Normalize(0.0, 1.0)
    cmap = DIVERGING if diverging else SEQUENTIAL
    image = None
    for k, tag in enumerate(tags):
        ax = axes.ravel()[k]
        row, col = divmod(k, cols)
        label = tag if support is None else f"{tag} (n={int(support[k])})"
        bottom = row == rows - 1 or k + cols >= n_tags
        image = heatmap(ax, values[:, :, k], norm, cmap, xlabel="head" if bottom else "",
                        ylabel="layer" if col == 0 else "")
        ax.set_title(label, fontsize=7, pad=2)
        _layer_ticks(ax, layers, n_layers, n_heads, max_ticks=4)
        ax.tick_params(labelsize=6, length=2, pad=1)
        ax.xaxis.label.set_fontsize(7)
        ax.yaxis.label.set_fontsize(7)
        if not bottom:
            ax.set_xticklabels([])
        if col != 0:
            ax.set_yticklabels([])
    hide_unused(axes, n_tags)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.5, aspect=30, label=value_label)
    fig.suptitle(title)
    return fig


def draw_tag_detail(f1: np.ndarray, controls: Mapping[str, np.ndarray], sites: Sequence[str],
                    tag: str, support: int | None = None, sel: np.ndarray | None = None,
                    sel_control: str | None = None, layers: Sequence[int] | None = None,
                    interval: tuple[np.ndarray, np.ndarray] | None = None) -> Figure:
    """One tag in full: per site (row), its F1 grid, each control's F1 grid and selectivity.

    f1: [n_sites, n_layers, n_heads]; controls: name -> F1 of that control, same shape
    (e.g. {"shuffled labels": ..., "random model": ...}); sel: selectivity, same shape
    (default: f1 minus the first control), sel_control names its control; interval:
    (low, high) bootstrap bounds of f1, shown for the best head. The best head of each
    site's F1 grid is boxed on every panel of its row.
    """
    f1 = np.asarray(f1, dtype=float)
    n_sites, n_layers, n_heads = f1.shape
    controls = {k: np.asarray(v, dtype=float) for k, v in controls.items()}
    if sel is None and controls:
        sel_control = sel_control or next(iter(controls))
        sel = selectivity(f1, next(iter(controls.values())))
    n_panels = 1 + len(controls) + (sel is not None)
    # one row per site; a single site with four panels is drawn 2 x 2 (less wide)
    rows, cols = (2, 2) if n_sites == 1 and n_panels == 4 else (n_sites, n_panels)
    fig = new_figure(cols * (0.24 * n_heads + 1.5) + 0.3, rows * (0.24 * n_layers + 1.1) + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).reshape(n_sites, n_panels)
    unit = Normalize(0.0, 1.0)
    centred = diverging_norm(sel) if sel is not None else None
    for s, site in enumerate(sites):
        layer, head = best_head(f1[s])
        name = head_label(layers[layer] if layers is not None else layer, head)
        ci = ("" if interval is None else
              f" [{interval[0][s, layer, head]:.2f}, {interval[1][s, layer, head]:.2f}]")
        panels = [(f1[s], unit, SEQUENTIAL, "F1",
                   f"{site}: F1, best {name} = {f1[s, layer, head]:.2f}{ci}")]
        panels += [(grid[s], unit, SEQUENTIAL, "F1", f"{site}: control, {label}\n"
                    f"({name} = {grid[s, layer, head]:.2f})")
                   for label, grid in controls.items()]
        if sel is not None:
            panels.append((sel[s], centred, DIVERGING, "F1 minus control F1",
                           f"{site}: selectivity vs {sel_control}\n"
                           f"({name} = {sel[s, layer, head]:+.2f})"))
        images = []
        for c, (grid, norm, cmap, _, title) in enumerate(panels):
            ax = axes[s, c]
            images.append(heatmap(ax, grid, norm, cmap, xlabel="head", ylabel="layer",
                                  title=title))
            ax.title.set_fontsize(8)
            _layer_ticks(ax, layers, n_layers, n_heads, max_ticks=16)
            mark_cell(ax, layer, head)
        n_f1 = 1 + len(controls)  # F1 and controls share one 0..1 scale and colour bar
        f1_axes = axes[s, :n_f1] if rows == n_sites else axes[s, :cols]  # 2 x 2: top row
        fig.colorbar(images[0], ax=f1_axes.tolist(), shrink=0.9, label="F1")
        if sel is not None:
            fig.colorbar(images[-1], ax=axes[s, -1], shrink=0.9, label=panels[-1][3])
    suffix = "" if support is None else f" (n={int(support)} test tokens)"
    fig.suptitle(f"Probes for tag {tag}{suffix}; box: best head by F1")
    return fig
