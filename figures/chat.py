"""Figures of the chat studies: timestamp order and next-token probability tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from figures.plotting import heatmap, new_figure, token_labels


def draw_histogram(counts: np.ndarray, edges: np.ndarray, xlabel: str, title: str,
                   marker: float | None = 0.0, marker_label: str = "",
                   symlog: bool = False) -> Figure:
    """A histogram from precomputed ``counts`` [n_bins] over ``edges`` [n_bins + 1].

    ``marker`` draws a dashed vertical line (zero by default: the border between
    going forward and backward in time); ``symlog`` uses a symmetric log x axis.
    """
    counts, edges = np.asarray(counts, dtype=float), np.asarray(edges, dtype=float)
    fig = new_figure(6.0, 3.5)
    ax = fig.subplots()
    ax.stairs(counts, edges, fill=True, alpha=0.7)
    if symlog:
        ax.set_xscale("symlog", linthresh=1.0)
    if marker is not None:
        ax.axvline(marker, color="black", ls="--", lw=1, label=marker_label or None)
        if marker_label:
            ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return fig


def histogram_of(values: np.ndarray, bins: int = 40, symlog: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(counts [bins], edges [bins + 1]) of the finite entries of ``values``.

    With ``symlog`` the bins are even in sign(x) * log10(1 + |x|), for values that span
    several orders of magnitude on both sides of zero.
    """
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(1), np.array([0.0, 1.0])
    if not symlog:
        return np.histogram(values, bins=bins)
    u = np.sign(values) * np.log10(1.0 + np.abs(values))
    lo, hi = float(u.min()), float(u.max())
    grid = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    edges = np.sign(grid) * (10.0 ** np.abs(grid) - 1.0)
    edges[0], edges[-1] = values.min(), max(values.max(), edges[-1])  # exact despite rounding
    counts, _ = np.histogram(values, bins=edges)
    return counts, edges


def draw_stacked_fractions(parts: Mapping[str, np.ndarray], groups: Sequence[str], xlabel: str,
                           title: str, counts: Sequence[int] | None = None) -> Figure:
    """Stacked bars: per group, the mean of each named part; parts [n_groups] each sum to 1."""
    x = np.arange(len(groups))
    fig = new_figure(0.6 * len(groups) + 3.5, 3.8)
    ax = fig.subplots()
    bottom = np.zeros(len(groups))
    colors = {"past": "tab:red", "same": "tab:gray", "future": "tab:green",
              "non-digit": "0.85"}
    for name, values in parts.items():
        values = np.asarray(values, dtype=float)
        ax.bar(x, values, bottom=bottom, width=0.7, label=name, color=colors.get(name))
        bottom += values
    labels = [str(g) if counts is None else f"{g}\n(n={counts[i]})" for i, g in enumerate(groups)]
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean probability")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    return fig


def draw_prob_table(probs: np.ndarray, row_labels: Sequence[str], tokens: Sequence[str],
                    row_title: str, title: str) -> Figure:
    """Next-token probabilities as an annotated heatmap: rows = prompts, columns = tokens.

    probs: [n_rows, n_tokens] in 0..1.
    """
    probs = np.asarray(probs, dtype=float)
    n_rows, n_tok = probs.shape
    fig = new_figure(0.55 * n_tok + 2.5, 0.4 * n_rows + 2.0)
    ax = fig.subplots()
    image = heatmap(ax, probs, Normalize(0.0, 1.0), "Greens", xlabel="next token",
                    ylabel=row_title, title=title)
    for i in range(n_rows):
        for j in range(n_tok):
            p = probs[i, j]
            ax.text(j, i, f"{100 * p:.0f}" if p >= 0.005 else "", ha="center", va="center",
                    fontsize=6, color="white" if p > 0.6 else "black")
    ax.set_xticks(np.arange(n_tok))
    ax.set_xticklabels(token_labels(tokens), rotation=90, fontsize=7)
    ax.set_yticks(np.arange(n_rows))
    ax.set_yticklabels([str(r) for r in row_labels], fontsize=7)
    fig.colorbar(image, ax=ax, label="probability (cells: %)", shrink=0.8)
    return fig
