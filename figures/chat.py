"""Figures of the timestamp-order study: the distribution of predicted time steps."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from figures.plotting import new_figure


def draw_histogram(counts: np.ndarray, edges: np.ndarray, xlabel: str, title: str,
                   marker: float | None = 0.0, marker_label: str = "") -> Figure:
    """A histogram from precomputed ``counts`` [n_bins] over ``edges`` [n_bins + 1].

    ``marker`` draws a dashed vertical line (zero by default: the border between
    going forward and backward in time).
    """
    counts, edges = np.asarray(counts, dtype=float), np.asarray(edges, dtype=float)
    fig = new_figure(6.0, 3.5)
    ax = fig.subplots()
    ax.stairs(counts, edges, fill=True, alpha=0.7)
    if marker is not None:
        ax.axvline(marker, color="black", ls="--", lw=1, label=marker_label or None)
        if marker_label:
            ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return fig


def histogram_of(values: np.ndarray, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(counts [bins], edges [bins + 1]) of the finite entries of ``values``."""
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(1), np.array([0.0, 1.0])
    return np.histogram(values, bins=bins)
