"""Activation statistics: one distribution per layer, side by side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from figures.plotting import new_figure

QUANTILE_KEYS = ("whislo", "q1", "med", "q3", "whishi")


def draw_layer_boxes(quantiles: np.ndarray, layer_labels: Sequence[str], value_label: str,
                     means: np.ndarray | None = None, whisker_label: str = "min-max",
                     title: str = "") -> Figure:
    """Per-layer box plots drawn from precomputed statistics.

    quantiles: [n_layers, 5] = (whisker low, 25 %, median, 75 %, whisker high);
    means: [n_layers] drawn as dots when given.
    """
    quantiles = np.asarray(quantiles, dtype=float)
    stats = []
    for i, label in enumerate(layer_labels):
        entry = dict(zip(QUANTILE_KEYS, quantiles[i].tolist(), strict=True))
        entry.update(label=str(label), fliers=[])
        if means is not None:
            entry["mean"] = float(means[i])
        stats.append(entry)
    fig = new_figure(0.6 * len(stats) + 2.5, 4.0)
    ax = fig.subplots()
    ax.bxp(stats, showmeans=means is not None, showfliers=False)
    ax.set_xlabel("layer")
    ax.set_ylabel(value_label)
    ax.set_title(title or f"Distribution per layer (box: 25-75 %, whiskers: {whisker_label})")
    ax.tick_params(axis="x", labelsize=8)
    return fig


def draw_layer_histograms(counts: np.ndarray, edges: np.ndarray, layer_labels: Sequence[str],
                          value_label: str, title: str = "") -> Figure:
    """Per-layer histograms stacked as ridgelines, each scaled to its own peak.

    counts: [n_layers, n_bins]; edges: [n_bins + 1] shared by every layer, or
    [n_layers, n_bins + 1].
    """
    counts = np.asarray(counts, dtype=float)
    edges = np.asarray(edges, dtype=float)
    n_layers = counts.shape[0]
    fig = new_figure(6.5, 0.45 * n_layers + 1.5)
    ax = fig.subplots()
    for i in range(n_layers):
        e = edges if edges.ndim == 1 else edges[i]
        centres = 0.5 * (e[:-1] + e[1:])
        peak = counts[i].max() if counts[i].max() > 0 else 1.0
        y = counts[i] / peak * 0.9
        ax.fill_between(centres, i, i + y, alpha=0.6, step="mid")
        ax.plot(centres, i + y, lw=0.8, color="black", drawstyle="steps-mid")
    ax.set_yticks(np.arange(n_layers))
    ax.set_yticklabels(list(layer_labels), fontsize=8)
    ax.set_xlabel(value_label)
    ax.set_ylabel("layer")
    ax.set_title(title or "Distribution per layer")
    return fig
