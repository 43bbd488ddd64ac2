"""Figures of the chat studies: next-token probability tables (``next-token``) and
timestamp order (``time-order``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from figures.plotting import heatmap, new_figure, token_labels
from figures.registry import NotPlanned, Planned, register
from probing.studies import next_token, time_order
from probing.study_io import StudyResults


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


@register("next_token_table", next_token.STUDY,
          "next-token probabilities: one row per prompt (or --vary value), one column per token",
          needs=(next_token.VALUES, next_token.TOKENS, next_token.PROBS))
def plan_next_token(st: StudyResults) -> list[Planned]:
    vary = st.meta.get("vary")
    rows = [str(v) for v in st[next_token.VALUES]] if vary else ["prompt"]
    tokens, probs = [str(t) for t in st[next_token.TOKENS]], st[next_token.PROBS]
    prompt = str(st.meta.get("prompt", ""))
    prompt = prompt if len(prompt) <= 80 else "..." + prompt[-77:]
    title = f"Next-token probabilities\n{prompt!r}"
    return [Planned("next_token_table", lambda: draw_prob_table(
        probs, rows, tokens, str(vary or ""), title), [st.file])]


@register("time_order_mass", time_order.STUDY,
          "probability of an earlier, the same or a later timestamp digit, by previous digit",
          needs=(time_order.PREVIOUS_DIGIT, *time_order.MASS.values()))
def plan_time_mass(st: StudyResults) -> list[Planned]:
    previous = st[time_order.PREVIOUS_DIGIT]
    digits = sorted({int(d) for d in previous})
    parts = {part.replace("_", "-"): np.array([st[entry][previous == d].mean() for d in digits])
             for part, entry in time_order.MASS.items()}
    counts = [int((previous == d).sum()) for d in digits]
    field = st.meta.get("field", "minute")
    title = (f"Next {field} tens digit after a message: earlier, same or later than the "
             f"previous one\n(mean past mass {st.meta.get('mean_past_mass', float('nan')):.1%})")
    return [Planned("time_order_mass", lambda: draw_stacked_fractions(
        parts, [str(d) for d in digits], f"previous {field} tens digit", title, counts),
        [st.file])]


@register("time_order_hist", time_order.STUDY,
          "histogram of the time between consecutive generated timestamps (negative: "
          "backwards)", needs=(time_order.GEN_DELTAS,))
def plan_time_order(st: StudyResults) -> list[Planned]:
    deltas = st[time_order.GEN_DELTAS]
    if deltas.size == 0:
        raise NotPlanned(f"{st.path} holds no consecutive generated timestamps "
                         f"({time_order.GEN_DELTAS.name} is empty)")
    counts, edges = histogram_of(deltas, symlog=True)
    back = st.meta.get("gen_backward", float((deltas < 0).mean()))
    title = (f"Generated chats: next minus previous timestamp ({len(deltas)} pairs, "
             f"{back:.1%} backwards)")
    return [Planned("time_order_hist", lambda: draw_histogram(
        counts, edges, "next minus previous timestamp (s, symmetric log scale)", title,
        marker_label="same time", symlog=True), [st.file])]
