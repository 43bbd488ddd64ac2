"""Each drawing function on small synthetic arrays: a Figure with the expected axes and labels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from figures.ablation import draw_ablation
from figures.chat import draw_histogram, draw_prob_table, draw_stacked_fractions, histogram_of
from figures.heads import draw_head_grids
from figures.patching import draw_logit_diff, draw_table
from figures.plotting import token_labels
from figures.probe_grids import best_head, draw_tag_detail, draw_tag_grids, selectivity
from figures.repeated import (
    draw_circuit_patterns,
    draw_composition,
    draw_half_losses,
    draw_head_scores,
    draw_mlp_patching,
    draw_score_scatter,
    writer_reader_matrix,
)
from figures.stats import (
    draw_layer_boxes,
    draw_layer_fractions,
    draw_layer_histograms,
    draw_site_boxes,
    draw_site_histograms,
)
from figures.traces import draw_activity_trace, draw_attention_pattern, spans

RNG = np.random.default_rng(0)


def labels(fig) -> list[tuple[str, str]]:
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.get_axes() if ax.axison]


def image_limits(fig) -> list[tuple[float, float]]:
    return [(im.norm.vmin, im.norm.vmax) for ax in fig.get_axes() for im in ax.get_images()]


def test_tag_grids_one_panel_per_tag_with_shared_scale():
    values = RNG.uniform(size=(4, 6, 5))
    fig = draw_tag_grids(values, ["NN", "VBD", "PRP$", "``", "''"], "Key probes", "F1",
                         support=np.array([10, 20, 30, 40, 50]))
    panels = [ax for ax in fig.get_axes() if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["NN (n=10)", "VBD (n=20)", "PRP$ (n=30)",
                                                 "`` (n=40)", "'' (n=50)"]
    assert all(ax.get_images()[0].get_array().shape == (4, 6) for ax in panels)
    np.testing.assert_allclose(panels[2].get_images()[0].get_array(), values[:, :, 2])
    assert ("head", "layer") in labels(fig) or any(x == "head" for x, _ in labels(fig))
    assert any(y == "layer" for _, y in labels(fig))
    assert set(image_limits(fig)) == {(0.0, 1.0)}
    assert any(ax.get_ylabel() == "F1" for ax in fig.get_axes())  # the colour bar


def test_tag_grids_diverging_scale_is_centred_on_zero():
    values = RNG.normal(size=(3, 4, 2)) * 0.3
    fig = draw_tag_grids(values, ["A", "B"], "selectivity", "F1 - shuffled F1", diverging=True)
    (lo, hi), = set(image_limits(fig))
    assert lo == pytest.approx(-hi) and hi == pytest.approx(np.abs(values).max())


def heat_axes(fig) -> list:
    return [ax for ax in fig.get_axes() if ax.get_images()]


def boxes(ax) -> list[tuple[float, float]]:
    """Lower-left corners of the unfilled rectangles (best-head boxes) on ``ax``."""
    return [r.get_xy() for r in ax.patches if not r.get_fill()]


def test_tag_detail_titles_do_not_overlap_on_a_model_with_few_heads():
    f1 = RNG.uniform(0, 1, size=(2, 4, 4))
    controls = {"shuffled labels": RNG.uniform(0, 0.2, size=f1.shape),
                "randomly initialised model": RNG.uniform(0, 1, size=f1.shape)}
    fig = draw_tag_detail(f1, controls, ["keys", "queries"], "``",
                          sel_control="randomly initialised model",
                          sel=f1 - controls["randomly initialised model"],
                          interval=(f1 - 0.01, f1 + 0.01))
    fig.canvas.draw()
    heat = [ax for ax in fig.get_axes() if ax.get_images()]
    for row in (heat[:4], heat[4:]):
        titles = [ax.title.get_window_extent(fig.canvas.get_renderer()) for ax in row]
        assert all(left.x1 <= right.x0 for left, right in itertools.pairwise(titles))


def test_tag_detail_boxes_best_head_on_every_panel_with_controls():
    f1 = RNG.uniform(0, 0.5, size=(2, 3, 4))
    f1[1, 2, 3] = 0.95
    shuffled = RNG.uniform(0, 0.2, size=(2, 3, 4))
    random = RNG.uniform(0, 0.3, size=(2, 3, 4))
    lo, hi = f1 - 0.05, f1 + 0.03
    fig = draw_tag_detail(f1, {"shuffled labels": shuffled, "random model": random},
                          ["keys", "queries"], "VBD", support=77, layers=[2, 3, 5],
                          interval=(lo, hi))
    heat = [ax for ax in fig.get_axes() if ax.get_images()]
    assert len(heat) == 8  # 2 sites x (F1, 2 controls, selectivity)
    assert heat[4].get_title() == "queries: F1, best L5H3 = 0.95 [0.90, 0.98]"
    assert heat[5].get_title().startswith("queries: control, shuffled labels")
    np.testing.assert_allclose(heat[7].get_images()[0].get_array(), f1[1] - shuffled[1])
    assert all((ax.get_xlabel(), ax.get_ylabel()) == ("head", "layer") for ax in heat)
    assert [t.get_text() for t in heat[0].get_yticklabels()] == ["2", "3", "5"]
    for ax in heat[4:]:  # the best head of the row is boxed on each of its panels
        assert (2.5, 1.5) in boxes(ax)
    colour_bars = [ax.get_ylabel() for ax in fig.get_axes() if not ax.get_images()]
    assert colour_bars.count("F1") == 2 and colour_bars.count("F1 minus control F1") == 2
    assert "n=77" in fig._suptitle.get_text()
    assert best_head(f1[1]) == (2, 3)
    np.testing.assert_allclose(selectivity(f1, shuffled), f1 - shuffled)
    stored = RNG.normal(size=f1.shape)  # a stored selectivity is drawn as given
    fig = draw_tag_detail(f1, {"shuffled labels": shuffled}, ["keys", "queries"], "VBD",
                          sel=stored, sel_control="shuffled labels")
    heat = [ax for ax in fig.get_axes() if ax.get_images()]
    np.testing.assert_allclose(heat[2].get_images()[0].get_array(), stored[0])
    assert "selectivity vs shuffled labels" in heat[2].get_title()
    one = draw_tag_detail(f1[:1], {"shuffled labels": shuffled[:1], "random": random[:1]},
                          ["keys"], "VBD")  # one site: 2 x 2 panels
    spans_ = [ax.get_subplotspec().rowspan.start for ax in heat_axes(one)]
    assert spans_ == [0, 0, 1, 1]


def test_head_grids_scales_and_best_heads():
    ratio = RNG.uniform(0.5, 3.0, size=(3, 4))
    t = RNG.normal(size=(3, 4))
    fig = draw_head_grids([ratio, t], ["ratio", "t"], "Quote heads", ["auto", "diverging"])
    heat = [ax for ax in fig.get_axes() if ax.get_images()]
    layer, head = np.unravel_index(ratio.argmax(), ratio.shape)
    assert heat[0].get_title().startswith(f"ratio\n(best L{layer}H{head} = ")
    assert (head - 0.5, layer - 0.5) in boxes(heat[0])
    (lo0, hi0), (lo1, hi1) = image_limits(fig)
    assert (lo0, hi0) == pytest.approx((ratio.min(), ratio.max()))
    assert lo1 == pytest.approx(-hi1)


def test_activity_trace_bars_and_strip_shade_quoted_spans():
    tokens = ["Tom", " said", ' "', "Hi", "!", '"', " and", " left"]
    quoted = np.array([0, 0, 1, 1, 1, 1, 0, 0], bool)
    activity = RNG.uniform(size=8)
    fig = draw_activity_trace(tokens, activity, "L2H0", shaded=quoted)
    ax = fig.get_axes()[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("token", "activity (||head output||)")
    assert [t.get_text() for t in ax.get_xticklabels()] == token_labels(tokens)
    assert np.allclose([p.get_height() for p in ax.patches if p.get_width() == 0.8], activity)
    assert spans(quoted) == [(2, 6)]
    strip = draw_activity_trace(tokens, activity, "L2H0", shaded=quoted, style="strip")
    assert strip.get_axes()[0].get_images()[0].get_array().shape == (1, 8)
    with pytest.raises(ValueError):
        draw_activity_trace(tokens, activity[:3], "L2H0")


def test_attention_pattern_masks_the_future_and_labels_tokens():
    n = 6
    pattern = np.tril(RNG.uniform(size=(n, n)))
    pattern /= pattern.sum(1, keepdims=True)
    tokens = ["<bos>", "A", " b", "\n", " c", " d"]
    fig = draw_attention_pattern(pattern, tokens, "L5H5")
    ax = fig.get_axes()[0]
    assert ax.get_xlabel().startswith("source") and ax.get_ylabel().startswith("destination")
    shown = ax.get_images()[0].get_array()
    assert shown.mask[0, 1] and not shown.mask[1, 0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["<bos>", "A", "b", "\u21b5", "c", "d"]


def test_repeated_figures():
    ind, prev = RNG.uniform(size=(2, 3, 4))
    fig = draw_head_scores([ind, prev], ["induction", "previous-token"])
    heat = [ax for ax in fig.get_axes() if ax.get_images()]
    assert [ax.get_xlabel() for ax in heat] == ["head", "head"]
    assert heat[0].get_title().startswith("induction score\n(best L")
    loss = draw_half_losses(np.full(5, 7.0), np.full(5, 0.5))
    ax = loss.get_axes()[0]
    assert ax.get_ylabel() == "loss (nats)" and len(ax.get_lines()) == 2
    assert "mean 0.50" in ax.get_legend().get_texts()[1].get_text()
    grid = draw_mlp_patching(RNG.normal(size=(3, 5)))
    assert grid.get_axes()[0].get_ylabel() == "MLP layer"
    (lo, hi), = set(image_limits(grid))
    assert lo == pytest.approx(-hi)


def test_circuit_figures_mark_copies_heads_and_the_pair():
    n, start, length = 9, 2, 3
    patterns = [np.tril(RNG.uniform(size=(n, n))) for _ in range(2)]
    fig = draw_circuit_patterns(patterns, ["previous-token head L0H1", "induction head L1H2"],
                                start, length)
    panels = [ax for ax in fig.get_axes() if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["previous-token head L0H1",
                                                 "induction head L1H2"]
    shown = panels[0].get_images()[0].get_array()
    assert shown.mask[0, 1] and not shown.mask[1, 0]       # nothing above the diagonal
    dashed = sorted({line.get_xdata()[0] for line in panels[1].get_lines()
                     if line.get_xdata()[0] == line.get_xdata()[1]})      # vertical lines
    assert dashed == [start - 0.5, start + length - 0.5, start + 2 * length - 0.5]
    prev, ind = RNG.uniform(size=(2, 3, 4))
    scatter = draw_score_scatter(prev, ind, {"induction": (2, 3)})
    ax = scatter.get_axes()[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 12
    assert [t.get_text() for t in ax.texts] == ["induction L2H3"]
    # composition: writers of layers 0..L-2 down, readers of layers 1..L-1 across
    scores = np.full((3, 2, 3, 2), np.nan)
    for lw in range(3):
        for lr in range(lw + 1, 3):
            scores[lw, :, lr, :] = 10 * lw + lr + RNG.uniform(0, 0.1, size=(2, 2))
    mat = writer_reader_matrix(scores)
    assert mat.shape == (4, 4) and np.isnan(mat[2:, :2]).all()
    assert np.floor(mat[0, 0]) == 1 and np.floor(mat[3, 3]) == 12
    fig = draw_composition([scores] * 3, ["Q", "K", "V"], [0.1, 0.2, 0.3], ((0, 1), (2, 0)))
    panels = [ax for ax in fig.get_axes() if ax.get_images()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["Q-composition",
                                                                "K-composition",
                                                                "V-composition"]
    assert "0.200" in panels[1].get_title()
    boxes = [p for p in panels[0].patches]
    assert {(b.get_x() + 0.5, b.get_y() + 0.5) for b in boxes} == {(2.0, 1.0)}


def test_patching_heatmap_labels_positions_with_tokens():
    grid = RNG.normal(size=(3, 4))
    fig = draw_logit_diff(grid, ["The", " cat", " sat", " on"], ["L0", "L1", "L2"], "logit diff")
    ax = fig.get_axes()[0]
    assert ax.get_xlabel() == "position (token)" and ax.get_ylabel() == "layer"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["The (0)", "cat (1)", "sat (2)",
                                                            "on (3)"]
    (lo, hi), = set(image_limits(fig))
    assert lo == pytest.approx(-hi)
    with pytest.raises(ValueError):
        draw_logit_diff(grid, ["a"], ["L0", "L1", "L2"])


def test_table_figure_holds_every_cell():
    fig = draw_table(["rank", "token", "p"], [[1, "Jones", 0.14], [2, "was", 0.0912345]], "Top 2")
    table = fig.get_axes()[0].tables[0]
    texts = {c.get_text().get_text() for c in table.get_celld().values()}
    assert {"rank", "token", "p", "Jones", "was", "0.1400", "0.0912"} <= texts


def test_ablation_sorts_tags_by_excess_over_random():
    tags = ["NN", "VBD", "DT"]
    ablated = np.array([0.1, 0.9, 0.2])
    random = RNG.normal(0.1, 0.01, size=(20, 3))
    fig = draw_ablation(tags, ablated, random, "L6H4", counts=np.array([5, 6, 7]))
    ax = fig.get_axes()[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["VBD (6)", "DT (7)", "NN (5)"]
    assert ax.get_ylabel() == "loss change (nats)" and ax.get_xlabel().startswith("tag")


def test_layer_distributions():
    q = np.sort(RNG.normal(size=(4, 5)), axis=1)
    fig = draw_layer_boxes(q, ["L0", "L1", "L2", "L3"], "activity", means=q[:, 2])
    ax = fig.get_axes()[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("layer", "activity")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["L0", "L1", "L2", "L3"]
    counts = RNG.integers(0, 10, size=(3, 8))
    fig = draw_layer_histograms(counts, np.linspace(0, 1, 9), ["L0", "L1", "L2"], "activity")
    assert fig.get_axes()[0].get_ylabel() == "layer"
    fig = draw_site_boxes({"attn": (q, q[:, 2]), "ln2": (q * 2, None)},
                          ["L0", "L1", "L2", "L3"], "Stats")
    assert [ax.get_title() for ax in fig.get_axes()] == ["attn", "ln2"]
    medians = [line.get_ydata()[0] for line in fig.get_axes()[1].get_lines()
               if len(line.get_xdata()) == 2 and line.get_color() == "C1"]
    np.testing.assert_allclose(medians, 2 * q[:, 2])
    fig = draw_site_histograms({"a": (counts, np.linspace(0, 1, 9)),
                                "b": (counts, np.linspace(-1, 1, 9))}, ["L0", "L1", "L2"], "H")
    assert [ax.get_xlim()[0] for ax in fig.get_axes()] == pytest.approx([0.0, -1.0], abs=0.15)
    fig = draw_layer_fractions({"near zero": np.array([0.2, 0.5])}, ["L0", "L1"], "fraction",
                               "MLP")
    assert [p.get_height() for p in fig.get_axes()[0].patches] == [0.2, 0.5]


def test_histogram():
    counts, edges = histogram_of(np.r_[RNG.normal(size=50), np.nan], bins=5)
    assert counts.sum() == 50 and len(edges) == 6
    fig = draw_histogram(counts, edges, "predicted minus previous time (s)", "Time order")
    assert fig.get_axes()[0].get_xlabel() == "predicted minus previous time (s)"
    values = np.array([-3600.0, -5, 0, 0, 10, 60, 600, 7200])
    counts, edges = histogram_of(values, bins=8, symlog=True)
    assert counts.sum() == len(values)
    assert edges[0] == pytest.approx(-3600) and edges[-1] == pytest.approx(7200)
    assert np.all(np.diff(edges) > 0)
    fig = draw_histogram(counts, edges, "s", "t", symlog=True)
    assert fig.get_axes()[0].get_xscale() == "symlog"


def test_chat_tables():
    probs = np.array([[0.9, 0.05], [0.3, 0.6]])
    fig = draw_prob_table(probs, ["Member 1", "Member 2"], ["2", "\n"], "SENDER", "Next")
    ax = fig.get_axes()[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "\u21b5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Member 1", "Member 2"]
    assert sorted(t.get_text() for t in ax.texts) == ["30", "5", "60", "90"]
    parts = {"past": np.array([0.1, 0.2]), "same": np.array([0.5, 0.5]),
             "future": np.array([0.4, 0.3])}
    fig = draw_stacked_fractions(parts, ["1", "2"], "previous digit", "Order", counts=[3, 4])
    ax = fig.get_axes()[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1\n(n=3)", "2\n(n=4)"]
    tops = [p.get_y() + p.get_height() for p in ax.patches]
    assert max(tops) == pytest.approx(1.0)
