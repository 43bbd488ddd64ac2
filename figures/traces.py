"""One head on one story: its activity along the tokens, and its attention pattern."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from figures.plotting import SEQUENTIAL, heatmap, new_figure, set_token_ticks


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


def draw_attention_pattern(pattern: np.ndarray, tokens: Sequence[str], head: str,
                           title: str = "") -> Figure:
    """Attention of one head: destination (query) tokens down, source (key) tokens across.

    pattern: [T, T], row = destination position, column = source position; the
    causal upper triangle is left blank.
    """
    pattern = np.asarray(pattern, dtype=float)
    n = len(tokens)
    if pattern.shape != (n, n):
        raise ValueError(f"pattern has shape {pattern.shape}, expected ({n}, {n})")
    side = float(np.clip(0.16 * n + 2.0, 4.0, 30.0))
    fig = new_figure(side + 1.0, side)
    ax = fig.subplots()
    masked = np.where(np.tril(np.ones((n, n), dtype=bool)), pattern, np.nan)
    image = heatmap(ax, masked, Normalize(0.0, 1.0), "Blues",
                    xlabel="source token (attended to)", ylabel="destination token (query)",
                    title=title or f"Attention pattern of {head}")
    ax.set_aspect("equal")
    set_token_ticks(ax, tokens, "x")
    set_token_ticks(ax, tokens, "y")
    fig.colorbar(image, ax=ax, label="attention weight", shrink=0.7)
    return fig
