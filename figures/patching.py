"""Figures of the ``patch`` study: the layer x position logit-difference map and the top-k
next-token tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from figures.plotting import DIVERGING, diverging_norm, heatmap, new_figure, set_token_ticks
from figures.registry import Planned, register
from probing.studies import patching as study
from probing.study_io import StudyResults


def draw_logit_diff(grid: np.ndarray, tokens: Sequence[str], layer_labels: Sequence[str],
                    value_label: str = "logit difference", title: str = "") -> Figure:
    """Effect of patching each (layer, position): rows are layers, columns are positions.

    grid: [n_layers, n_positions]; tokens: [n_positions] labels of the position axis;
    layer_labels: [n_layers]. Diverging colour scale centred on zero.
    """
    grid = np.asarray(grid, dtype=float)
    n_layers, n_pos = grid.shape
    if len(tokens) != n_pos or len(layer_labels) != n_layers:
        raise ValueError(f"grid {grid.shape} does not match {len(layer_labels)} layer labels "
                         f"and {len(tokens)} tokens")
    fig = new_figure(float(np.clip(0.35 * n_pos + 2.5, 5.0, 24.0)), 0.35 * n_layers + 2.0)
    ax = fig.subplots()
    image = heatmap(ax, grid, diverging_norm(grid), DIVERGING, xlabel="position (token)",
                    ylabel="layer", title=title or "Activation patching")
    ax.title.set_fontsize(9)
    set_token_ticks(ax, [f"{t} ({i})" for i, t in enumerate(tokens)], "x", rotation=60)
    ax.set_yticks(np.arange(n_layers))
    ax.set_yticklabels(list(layer_labels), fontsize=7)
    fig.colorbar(image, ax=ax, label=value_label)
    return fig


def draw_table(columns: Sequence[str], rows: Sequence[Sequence[object]], title: str) -> Figure:
    """A table rendered as a figure: ``columns`` headers over ``rows`` of cells."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    height = 0.2 * (len(cells) + 1) + 0.25 * (title.count("\n") + 1) + 0.3
    fig = new_figure(max(4.0, 0.09 * sum(widths) + 1.0), height)
    ax = fig.subplots()
    ax.set_axis_off()
    table = ax.table(cellText=cells or [["" for _ in columns]], colLabels=list(columns),
                     loc="upper center", cellLoc="left", colLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(columns))))
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("0.9")
    ax.set_title(title)
    return fig


def _cell(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return str(value).replace("\n", "\\n")


def column_labels(st: StudyResults) -> list[str]:
    """Labels of the grid's columns: heads for the head site, else the corrupted tokens,
    with ``clean→corrupted`` where the prompts differ."""
    if st.meta.get("site") == "head":
        return [str(h) for h in st[study.HEAD_LABELS]]
    return [c if c == x else f"{c.strip()}\u2192{x.strip()}" for c, x in
            zip(st[study.CLEAN_TOKENS], st[study.CORRUPT_TOKENS], strict=True)]


def patching_effect(st: StudyResults) -> tuple[np.ndarray, str]:
    """The grid to draw and what it holds: the normalised effect (0 = the corrupted run, 1 =
    the clean run), which shows where patching restores the clean answer whatever the size
    of the logits; the stored logit difference when the two runs give the same one."""
    clean, corrupt = st.meta.get("clean_logit_diff"), st.meta.get("corrupt_logit_diff")
    if st.meta.get("normalized") or clean is None or corrupt is None or abs(
            clean - corrupt) < 1e-9:
        return np.asarray(st[study.GRID], float), str(st.meta.get("value", "logit difference"))
    raw = np.asarray(st.get(study.GRID_RAW, st[study.GRID]), float)
    return study.normalise(raw, corrupt, clean), "patching effect (0 = corrupted, 1 = clean)"


def prompts_title(st: StudyResults, what: str) -> str:
    return (f"{what}\nclean: {st.meta.get('clean', '')!r}\n"
            f"corrupted: {st.meta.get('corrupt', '')!r}")


@register("patching", study.STUDY, "patching effect of each (layer, position): 0 = corrupted "
          "run, 1 = clean run",
          needs=(study.GRID, study.CLEAN_TOKENS, study.CORRUPT_TOKENS, study.LAYER_LABELS))
def plan_patching(st: StudyResults) -> list[Planned]:
    grid, value = patching_effect(st)
    columns = column_labels(st)
    layers = [str(label) for label in st[study.LAYER_LABELS]]
    title = prompts_title(st, f"Patching {st.meta.get('site', '')} from the clean into the "
                              "corrupted run")

    def draw() -> Figure:
        fig = draw_logit_diff(grid, columns, layers, value, title)
        if st.meta.get("site") == "head":
            fig.axes[0].set_xlabel("head")
        return fig

    return [Planned("patching", draw, [st.file])]


@register("patching_topk", study.STUDY, "top-k next tokens of the clean and corrupted prompts",
          needs=tuple(study.TOP[p][k] for p in ("clean", "corrupt")
                      for k in ("rank", "token", "prob")))
def plan_patching_topk(st: StudyResults) -> list[Planned]:
    clean, corrupt = study.TOP["clean"], study.TOP["corrupt"]
    columns = ["rank", "clean token", "clean p", "corrupted token", "corrupted p"]
    rows = [[int(r), repr(str(ct)), float(cp), repr(str(xt)), float(xp)] for r, ct, cp, xt, xp
            in zip(st[clean["rank"]], st[clean["token"]], st[clean["prob"]],
                   st[corrupt["token"]], st[corrupt["prob"]], strict=False)]
    title = prompts_title(st, f"Top {len(rows)} next tokens")
    return [Planned("patching_topk", lambda: draw_table(columns, rows, title), [st.file])]
