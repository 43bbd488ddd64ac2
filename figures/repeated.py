"""Figures of the ``repeated`` study: induction and previous-token scores and their scatter,
per-copy loss, MLP patching, the circuit's two attention patterns, composition scores and
head ablation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from figures.heads import draw_head_grids
from figures.plotting import (
    DIVERGING,
    SEQUENTIAL,
    diverging_norm,
    heatmap,
    integer_ticks,
    mark_cell,
    new_figure,
)
from figures.registry import NotPlanned, Planned, register
from figures.sources import meta_entry
from headprobe.heads import head_label, layer_label
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


def mark_copies(ax: Axes, start: int, length: int) -> None:
    """Dashed lines where the first copy starts and the second copy starts and ends."""
    for edge in (start, start + length, start + 2 * length):
        for line in (ax.axvline, ax.axhline):
            line(edge - 0.5, color="tab:orange", lw=0.7, ls="--")


def draw_circuit_patterns(patterns: Sequence[np.ndarray], titles: Sequence[str], start: int,
                          length: int, title: str = "") -> Figure:
    """Attention patterns of heads side by side on one repeated sequence, copies marked.

    patterns: one [T, T] array per head (row = destination, column = source); start: the
    first copy's first position; length: tokens in each copy.
    """
    n = patterns[0].shape[0]
    fig = new_figure(4.6 * len(patterns) + 0.8, 4.6)
    axes = fig.subplots(1, len(patterns), squeeze=False)[0]
    causal = np.tril(np.ones((n, n), dtype=bool))
    for ax, pattern, name in zip(axes, patterns, titles, strict=True):
        image = heatmap(ax, np.where(causal, pattern, np.nan), Normalize(0.0, 1.0), "Blues",
                        xlabel="source position (attended to)",
                        ylabel="destination position (query)", title=name)
        ax.set_aspect("equal")
        integer_ticks(ax, n, n, max_ticks=12)
        mark_copies(ax, start, length)
    fig.colorbar(image, ax=list(axes), label="attention weight", shrink=0.8)
    fig.suptitle(title or f"One repeated sequence: copies of {length} tokens from position "
                 f"{start} (dashed)")
    return fig


def draw_score_scatter(prev: np.ndarray, induction: np.ndarray,
                       named: dict[str, tuple[int, int]] | None = None,
                       title: str = "Previous-token vs induction score of every head") -> Figure:
    """One point per head: previous-token score (x) against induction score (y).

    prev, induction: [n_layers, n_heads]; points are coloured by layer; ``named`` heads
    (label -> (layer, head)) are annotated.
    """
    prev, induction = np.asarray(prev, dtype=float), np.asarray(induction, dtype=float)
    n_layers, n_heads = prev.shape
    fig = new_figure(5.6, 4.6)
    ax = fig.subplots()
    cmap = matplotlib_cmap(n_layers)
    for layer in range(n_layers):
        ax.scatter(prev[layer], induction[layer], s=28, color=cmap(layer), alpha=0.85,
                   edgecolor="white", lw=0.5, label=layer_label(layer))
    for label, (layer, head) in (named or {}).items():
        ax.annotate(f"{label} {head_label(layer, head)}", (prev[layer, head],
                    induction[layer, head]), xytext=(6, 6), textcoords="offset points",
                    fontsize=8, arrowprops={"arrowstyle": "-", "lw": 0.6})
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("previous-token score (attention to p - 1)")
    ax.set_ylabel("induction score (attention to the token after the earlier copy)")
    ax.legend(fontsize=7, title="layer", title_fontsize=7, ncol=1 + n_layers // 9,
              loc="center right")
    ax.set_title(title)
    return fig


def matplotlib_cmap(n: int):
    """A qualitative colour map for up to 10 groups, a sequential one beyond."""
    import matplotlib

    return matplotlib.colormaps["tab10" if n <= 10 else "viridis"].resampled(max(n, 2))


def writer_reader_matrix(scores: np.ndarray) -> np.ndarray:
    """[L, H, L, H] composition scores as [(L-1) H writers, (L-1) H readers]: writers in
    layers 0..L-2 down, readers in layers 1..L-1 across (NaN where not composable)."""
    n_layers, n_heads = scores.shape[:2]
    side = (n_layers - 1) * n_heads
    return scores[:-1, :, 1:, :].reshape(side, side)


def label_heads(ax: Axes, n_layers: int, n_heads: int, first_layer: int, axis: str) -> None:
    """Tick each head (few heads) or each layer (many), with lines between layers."""
    count = n_layers * n_heads
    if count <= 24:
        ticks = np.arange(count)
        labels = [head_label(first_layer + i // n_heads, i % n_heads) for i in ticks]
    else:
        ticks = np.arange(n_layers) * n_heads + (n_heads - 1) / 2
        labels = [layer_label(first_layer + i) for i in range(n_layers)]
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    set_ticks(ticks, labels, fontsize=7, rotation=90 if axis == "x" and count <= 24 else 0)
    line = ax.axvline if axis == "x" else ax.axhline
    for boundary in range(1, n_layers):
        line(boundary * n_heads - 0.5, color="white", lw=0.8)


def draw_composition(scores: Sequence[np.ndarray], modes: Sequence[str],
                     baseline: Sequence[float], pair: tuple[tuple[int, int], tuple[int, int]]
                     | None = None, title: str = "Composition scores from the weights"
                     ) -> Figure:
    """Q-, K-, V-composition heatmaps: writer heads (earlier layers) down, readers across.

    scores: one [L, H, L, H] array per mode; baseline: the random-weights score per mode;
    pair: (writer, reader) boxed in every panel (the circuit's heads).
    """
    n_layers, n_heads = scores[0].shape[:2]
    mats = [writer_reader_matrix(np.asarray(s, dtype=float)) for s in scores]
    top = max(float(np.nanmax(m)) for m in mats if np.isfinite(m).any())
    side = mats[0].shape[0]
    panel = float(np.clip(0.22 * side + 1.6, 3.2, 6.5))
    fig = new_figure(len(mats) * (panel + 0.9), panel + 0.6)
    axes = fig.subplots(1, len(mats), squeeze=False)[0]
    for ax, mat, mode, base in zip(axes, mats, modes, baseline, strict=True):
        image = heatmap(ax, mat, Normalize(0.0, top), SEQUENTIAL, xlabel="reader head",
                        ylabel="writer head", title=f"{mode}-composition\n(random weights "
                                                     f"{base:.3f})")
        ax.title.set_fontsize(9)
        label_heads(ax, n_layers - 1, n_heads, 1, "x")
        label_heads(ax, n_layers - 1, n_heads, 0, "y")
        if pair is not None:
            (lw, hw), (lr, hr) = pair
            mark_cell(ax, lw * n_heads + hw, (lr - 1) * n_heads + hr)
    fig.colorbar(image, ax=list(axes), label="composition score", shrink=0.8)
    fig.suptitle(title)
    return fig


def circuit_heads(st: StudyResults) -> dict[str, tuple[int, int]]:
    """The circuit's heads by role, as stored (empty when the study named no pair)."""
    circuit = meta_entry(st, "circuit")
    if "prev_token_head" not in circuit:
        return {}
    return {"previous-token": tuple(circuit["prev_token_head"]),
            "induction": tuple(circuit["induction_head"])}


@register("repeated_pattern", study.STUDY,
          "attention patterns of the previous-token and the induction head on one repeated "
          "sequence, the copies marked", needs=(study.EXAMPLE_PREV_PATTERN, study.EXAMPLE_PATTERN,
                                                study.REPEAT_START, study.REPEAT_LENGTH))
def plan_pattern(st: StudyResults) -> list[Planned]:
    heads = meta_entry(st, "example_heads")
    patterns = [st[study.EXAMPLE_PREV_PATTERN], st[study.EXAMPLE_PATTERN]]
    titles = [f"previous-token head {head_label(*heads[study.EXAMPLE_PREV_PATTERN.name])}",
              f"induction head {head_label(*heads[study.EXAMPLE_PATTERN.name])}"]
    start, length = int(st[study.REPEAT_START][0]), int(st[study.REPEAT_LENGTH][0])
    return [Planned("repeated_pattern",
                    lambda: draw_circuit_patterns(patterns, titles, start, length), [st.file])]


@register("repeated_scatter", study.STUDY,
          "previous-token score against induction score, one point per head",
          needs=(study.PREV_TOKEN_SCORE, study.INDUCTION_SCORE))
def plan_scatter(st: StudyResults) -> list[Planned]:
    prev, induction = st[study.PREV_TOKEN_SCORE], st[study.INDUCTION_SCORE]
    named = circuit_heads(st)
    return [Planned("repeated_scatter", lambda: draw_score_scatter(prev, induction, named),
                    [st.file])]


@register("repeated_composition", study.STUDY,
          "Q-, K- and V-composition scores of every writer -> reader pair of heads",
          needs=(study.Q_COMPOSITION, study.K_COMPOSITION, study.V_COMPOSITION,
                 study.COMPOSITION_BASELINE))
def plan_composition(st: StudyResults) -> list[Planned]:
    scores = [st[study.Q_COMPOSITION], st[study.K_COMPOSITION], st[study.V_COMPOSITION]]
    if scores[0].shape[0] < 2:
        raise NotPlanned(f"{st.path}: a model of one layer has no pairs of heads to compose")
    baseline = [float(b) for b in st[study.COMPOSITION_BASELINE]]
    heads = circuit_heads(st)
    pair = (heads["previous-token"], heads["induction"]) if heads else None
    return [Planned("repeated_composition",
                    lambda: draw_composition(scores, ["Q", "K", "V"], baseline, pair,
                                             "Composition scores from the processed weights "
                                             "(layer-norm gain folded in)"),
                    [st.file])]


@register("repeated_ablation", study.STUDY,
          "second-copy accuracy drop when each head is mean-ablated (layer x head)",
          needs=(study.ABLATION_DROP,))
def plan_ablation(st: StudyResults) -> list[Planned]:
    drop = st[study.ABLATION_DROP]
    return [Planned("repeated_ablation", lambda: draw_head_grids(
        [drop], ["accuracy drop"], "Mean ablation of one head: drop of second-copy accuracy",
        scales=["diverging"]), [st.file])]
