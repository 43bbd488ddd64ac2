"""Figures of the ``repeated`` study: induction and previous-token scores, per-half loss,
MLP patching and the best induction head's pattern."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from figures.heads import draw_head_grids
from figures.plotting import DIVERGING, diverging_norm, heatmap, integer_ticks, new_figure
from figures.registry import Planned, register
from figures.sources import best_head
from figures.traces import draw_attention_pattern
from probing.studies import repeated as study
from probing.study_io import StudyResults


def draw_head_scores(scores: Sequence[np.ndarray], names: Sequence[str],
                     title: str = "Attention scores on repeated random tokens") -> Figure:
    """Side-by-side layer x head heatmaps of attention scores in [0, 1], best head boxed.

    scores: one [n_layers, n_heads] array per name (e.g. induction, previous-token).
    """
    return draw_head_grids(scores, [f"{n} score" for n in names], title)


def draw_half_losses(first: np.ndarray, second: np.ndarray,
                     title: str = "Loss on repeated random tokens") -> Figure:
    """Per-position loss of the first (random) and second (repeated) half.

    first, second: [seq_len] mean loss (nats) at each position of each half.
    """
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    fig = new_figure(float(np.clip(0.08 * len(first) + 4.0, 5.0, 14.0)), 3.5)
    ax = fig.subplots()
    ax.plot(np.arange(len(first)), first, marker=".",
            label=f"first half (mean {np.nanmean(first):.2f})")
    ax.plot(np.arange(len(second)), second, marker=".",
            label=f"second half, repeated (mean {np.nanmean(second):.2f})")
    ax.set_xlabel("position within the half")
    ax.set_ylabel("loss (nats)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def draw_mlp_patching(delta: np.ndarray, title: str = "Patching MLP outputs from the first half",
                      value_label: str = "loss change (nats)") -> Figure:
    """Layer x position grid of the loss change after patching one MLP output.

    delta: [n_layers, seq_len]; diverging colour scale centred on zero.
    """
    delta = np.asarray(delta, dtype=float)
    n_layers, n_pos = delta.shape
    fig = new_figure(float(np.clip(0.12 * n_pos + 2.5, 5.0, 16.0)), 0.35 * n_layers + 1.6)
    ax = fig.subplots()
    image = heatmap(ax, delta, diverging_norm(delta), DIVERGING,
                    xlabel="position in the second half", ylabel="MLP layer", title=title)
    integer_ticks(ax, n_layers, n_pos, max_ticks=25)
    fig.colorbar(image, ax=ax, label=value_label)
    return fig


@register("repeated_scores", study.STUDY,
          "induction and previous-token scores (layer x head) on repeated random tokens",
          needs=(study.INDUCTION_SCORE, study.PREV_TOKEN_SCORE))
def plan_scores(st: StudyResults) -> list[Planned]:
    scores = [st[study.INDUCTION_SCORE], st[study.PREV_TOKEN_SCORE]]
    return [Planned("repeated_scores",
                    lambda: draw_head_scores(scores, ["induction", "previous-token"]),
                    [st.file])]


@register("repeated_loss", study.STUDY, "per-position loss of the first and the repeated half",
          needs=(study.POSITION_LOSS,))
def plan_loss(st: StudyResults) -> list[Planned]:
    loss = st[study.POSITION_LOSS]
    return [Planned("repeated_loss", lambda: draw_half_losses(loss[0], loss[1]), [st.file])]


@register("repeated_mlp_patching", study.STUDY,
          "loss change from patching each MLP output (layer x position) from the first half",
          needs=(study.MLP_PATCH_DELTA,))
def plan_mlp_patching(st: StudyResults) -> list[Planned]:
    delta = st[study.MLP_PATCH_DELTA]
    return [Planned("repeated_mlp_patching", lambda: draw_mlp_patching(delta), [st.file])]


@register("repeated_pattern", study.STUDY,
          "attention pattern of the best induction head on one repeated sequence",
          needs=(study.EXAMPLE_PATTERN, study.EXAMPLE_TOKENS))
def plan_pattern(st: StudyResults) -> list[Planned]:
    pattern, tokens = st[study.EXAMPLE_PATTERN], list(st[study.EXAMPLE_TOKENS])
    head = best_head(st, "best_induction_head")
    return [Planned("repeated_pattern", lambda: draw_attention_pattern(pattern, tokens, head),
                    [st.file])]
