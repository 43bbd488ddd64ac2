"""One head on one story: its activity along the tokens, and its attention pattern."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from figures.plotting import SEQUENTIAL, heatmap, new_figure, set_token_ticks

# An attention plot shows at most this many tokens, each in a cell of CELL_INCHES.
MAX_PATTERN_TOKENS = 64
CELL_INCHES = 0.14


def spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in ``mask`` [T] as half-open (start, end) index pairs."""
    mask = np.asarray(mask, dtype=bool)
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()
    return list(zip(starts, ends, strict=True))


def draw_activity_trace(tokens: Sequence[str], activity: np.ndarray, head: str,
                        shaded: np.ndarray | None = None, shaded_label: str = "quoted",
                        style: str = "bars", title: str = "", marks: np.ndarray | None = None,
                        marks_label: str = "marked") -> Figure:
    """A head's activity on each token of a story, tokens along x.

    activity: [T]; shaded: [T] bool, drawn as grey spans (quoted text, say); marks: [T]
    bool, tokens drawn with a dashed line (closing quotation marks, say); style: 'bars' (a
    bar per token) or 'strip' (a one-row heat strip).
    """
    activity = np.asarray(activity, dtype=float)
    n = len(tokens)
    if activity.shape != (n,):
        raise ValueError(f"activity has shape {activity.shape}, expected ({n},)")
    if style not in ("bars", "strip"):
        raise ValueError(f"unknown style {style!r}; choose bars or strip")
    width = float(np.clip(0.14 * n + 1.5, 5.0, 40.0))
    fig = new_figure(width, 3.2 if style == "bars" else 2.0)
    ax = fig.subplots()
    if style == "bars":
        ax.bar(np.arange(n), activity, width=0.8, color="tab:blue", label=f"{head} activity")
        ax.set_ylabel("activity (||head output||)")
        ax.set_xlim(-0.5, n - 0.5)
    else:
        image = heatmap(ax, activity[None, :], Normalize(0.0, max(float(np.nanmax(activity)),
                                                                   1e-9)), SEQUENTIAL)
        ax.set_yticks([0])
        ax.set_yticklabels([head])
        ax.set_ylabel("head")
        fig.colorbar(image, ax=ax, label="activity", shrink=0.8, pad=0.01)
    if shaded is not None:
        for k, (start, end) in enumerate(spans(shaded)):
            ax.axvspan(start - 0.5, end - 0.5, color="0.85", zorder=0,
                       label=shaded_label if k == 0 else None)
    for k, i in enumerate(np.flatnonzero(marks) if marks is not None else []):
        ax.axvline(i, color="tab:red", lw=0.8, ls="--", label=marks_label if k == 0 else None)
    if style == "bars" and ((shaded is not None and np.any(shaded))
                            or (marks is not None and np.any(marks))):
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_xlabel("token")
    set_token_ticks(ax, tokens, "x")
    ax.set_title(title or f"Activity of {head}")
    return fig


def pattern_window(n: int, focus: int = 0, max_tokens: int = MAX_PATTERN_TOKENS,
                   before: int = 4) -> range:
    """Positions an attention plot shows: all ``n`` when they fit, else ``max_tokens`` from
    a little before position ``focus``."""
    if n <= max_tokens:
        return range(n)
    start = min(max(0, focus - before), n - max_tokens)
    return range(start, start + max_tokens)


def draw_attention_pattern(pattern: np.ndarray, tokens: Sequence[str], head: str,
                           title: str = "", marks: np.ndarray | None = None,
                           marks_label: str = "marked token", focus: int = 0) -> Figure:
    """Attention of one head: destination (query) tokens down, source (key) tokens across.

    pattern: [T, T], row = destination position, column = source position; the causal
    upper triangle is left blank. marks: [T] bool, tokens whose labels are drawn in red and
    whose column is outlined (quotation marks, say). The figure is sized to the tokens, a
    readable cell per token; a story longer than MAX_PATTERN_TOKENS is shown from a little
    before position ``focus`` (see :func:`pattern_window`) and the title says which part.
    """
    pattern = np.asarray(pattern, dtype=float)
    n = len(tokens)
    if pattern.shape != (n, n):
        raise ValueError(f"pattern has shape {pattern.shape}, expected ({n}, {n})")
    window = pattern_window(n, focus)
    cut = slice(window.start, window.stop)
    shown, m = [tokens[i] for i in window], len(window)
    side = CELL_INCHES * m + 1.6
    fig = new_figure(side + 1.2, side + 0.4)
    ax = fig.subplots()
    masked = np.where(np.tril(np.ones((n, n), dtype=bool)), pattern, np.nan)[cut, cut]
    title = title or f"Attention pattern of {head}"
    if m < n:
        title += f"\n(tokens {window.start}\u2013{window.stop - 1} of {n})"
    image = heatmap(ax, masked, Normalize(0.0, 1.0), "Blues",
                    xlabel="source token (attended to)", ylabel="destination token (query)",
                    title=title)
    ax.set_aspect("equal")
    for axis in ("x", "y"):
        set_token_ticks(ax, shown, axis)
    if marks is not None and np.any(np.asarray(marks)[cut]):
        _mark_tokens(ax, np.flatnonzero(np.asarray(marks)[cut]), m, marks_label)
    fig.colorbar(image, ax=ax, label="attention weight", shrink=0.7)
    return fig


def _mark_tokens(ax: Axes, columns: np.ndarray, n: int, label: str) -> None:
    """Red tick labels and an outlined source column for each marked position."""
    for ticks, labels in ((ax.get_xticks(), ax.get_xticklabels()),
                          (ax.get_yticks(), ax.get_yticklabels())):
        for position, text in zip(ticks, labels, strict=True):
            if int(round(position)) in columns:
                text.set_color("tab:red")
    for k, col in enumerate(columns):
        ax.add_patch(Rectangle((col - 0.5, col - 0.5), 1, n - col, fill=False,
                               edgecolor="tab:red", lw=0.8, zorder=3,
                               label=label if k == 0 else None))
    ax.legend(loc="upper right", fontsize=7)
