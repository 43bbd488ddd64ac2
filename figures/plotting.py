"""Drawing helpers every figure module shares: new figures, heatmaps, token tick labels.

Figures are built as ``matplotlib.figure.Figure`` objects on the Agg canvas, never
through ``pyplot``, so no global state is kept between figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import Normalize, TwoSlopeNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.font_manager import FontProperties, findfont  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from headprobe.tokens import display_text  # noqa: E402

SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"
MAX_TICK_LABELS = 120


def new_figure(width: float, height: float) -> Figure:
    """An empty Figure of ``width`` x ``height`` inches on the Agg canvas."""
    fig = Figure(figsize=(max(width, 2.0), max(height, 1.5)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def diverging_norm(values: np.ndarray) -> Normalize:
    """A colour scale centred on zero and symmetric around it."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    bound = float(np.max(np.abs(finite))) if finite.size else 1.0
    bound = bound if bound > 0 else 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)


def heatmap(ax: Axes, values: np.ndarray, norm: Normalize | None = None,
            cmap: str = SEQUENTIAL, xlabel: str = "", ylabel: str = "", title: str = ""
            ) -> AxesImage:
    """Draw ``values`` [rows, cols] with row 0 at the top; return the image for a colour bar."""
    values = np.ma.masked_invalid(np.asarray(values, dtype=float))
    image = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return image


def integer_ticks(ax: Axes, n_rows: int, n_cols: int, max_ticks: int = 16) -> None:
    """Tick every row/column index when they fit, every k-th one otherwise."""
    for n, setter in ((n_cols, ax.set_xticks), (n_rows, ax.set_yticks)):
        step = max(1, int(np.ceil(n / max_ticks)))
        setter(np.arange(0, n, step))
    ax.tick_params(labelsize=7)


@cache
def font_characters() -> frozenset[int]:
    """Code points the figures' font can draw."""
    return frozenset(FT2Font(findfont(FontProperties())).get_charmap())


def token_labels(tokens: Sequence[str]) -> list[str]:
    """Tokens as tick labels: shown as the viewer shows them
    (:func:`headprobe.tokens.display_text`), a whitespace-only token as \u2423 per space,
    and any character the font cannot draw as its escape, so no label draws a box."""
    drawable = font_characters()
    out = []
    for tok in tokens:
        tok = "".join(ch if ord(ch) in drawable else ascii(ch)[1:-1]
                      for ch in display_text(str(tok)))
        out.append(tok.replace(" ", "\u2423") if tok.strip() == "" else tok.strip() or tok)
    return out


def token_fontsize(n_tokens: int) -> float:
    """A tick-label font size that keeps ``n_tokens`` labels from overlapping."""
    return float(np.clip(700.0 / max(n_tokens, 1), 4.0, 9.0))


def set_token_ticks(ax: Axes, tokens: Sequence[str], axis: str = "x",
                    rotation: float = 90.0) -> None:
    """Label positions on ``axis`` ('x' or 'y') with their tokens (thinned if too many)."""
    labels = token_labels(tokens)
    step = max(1, int(np.ceil(len(labels) / MAX_TICK_LABELS)))
    ticks = np.arange(0, len(labels), step)
    size = token_fontsize(len(ticks))
    shown = [labels[i] for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks)
        ax.set_xticklabels(shown, rotation=rotation, fontsize=size)
    else:
        ax.set_yticks(ticks)
        ax.set_yticklabels(shown, fontsize=size)


def grid_shape(n_panels: int, panel_aspect: float = 1.0, target: float = 1.6
               ) -> tuple[int, int]:
    """(rows, cols) of small multiples whose whole figure is about ``target`` wide per unit
    of height, for panels of ``panel_aspect`` = height / width."""
    if n_panels <= 0:
        return 1, 1
    cols = max(1, int(round(np.sqrt(target * n_panels * max(panel_aspect, 1e-3)))))
    cols = min(cols, n_panels)
    rows = int(np.ceil(n_panels / cols))
    return rows, cols


def hide_unused(axes: np.ndarray, n_used: int) -> None:
    """Switch off the axes of empty small-multiple slots."""
    for ax in axes.ravel()[n_used:]:
        ax.set_axis_off()


def mark_cell(ax: Axes, row: int, col: int, color: str = "red") -> None:
    """Box one heatmap cell: a coloured frame over a white halo, visible on dark and light."""
    for edge, width in (("white", 3.2), (color, 1.6)):
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=edge,
                               lw=width, zorder=3))
