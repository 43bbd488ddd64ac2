"""Adapters from stored results to drawing functions: one planning function per figure type.

Each planning function reads the arrays of one loaded source (a probe grid or a case
study, see :mod:`probing.study_io`), checks that what it needs is there (else
:class:`MissingData` naming the missing array), and returns the figures to draw.
Nothing here recomputes results: every number drawn is read from the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from datasets_build.cli_support import UsageError
from figures.ablation import draw_ablation
from figures.chat import draw_histogram, histogram_of
from figures.patching import draw_logit_diff, draw_table
from figures.plotting import head_name
from figures.probe_grids import draw_tag_detail, draw_tag_grids, selectivity
from figures.registry import PROBES, MissingData, Planned, Source, register
from figures.repeated import draw_half_losses, draw_head_scores, draw_mlp_patching
from figures.stats import draw_layer_boxes, draw_layer_histograms
from figures.traces import draw_activity_trace, draw_attention_pattern
from probing.study_io import StudyResults, read_study

# ---------------------------------------------------------------- sources


def classify(path: Path) -> str | None:
    """The study name for a study directory, 'probes' for probe results, else None."""
    file = path / "results.h5"
    if file.is_file():
        try:
            with h5py.File(file, "r") as f:
                study = f.attrs.get("study")
        except OSError:
            study = None
        if study is not None:
            return str(study)
    return PROBES if _is_probe_results(path) else None


def _is_probe_results(path: Path) -> bool:
    """True when ``path`` holds a probe grid written by ``probing fit``."""
    try:
        from probing import results as probe_results
    except ImportError:  # the probing stage is not installed
        return False
    name = getattr(probe_results, "RESULTS_FILE", None)
    if name is not None:
        return (path / name).is_file()
    try:
        probe_results.read_results(path)
    except (UsageError, OSError, ValueError, KeyError):
        return False
    return True


def load_probes(path: Path) -> Any:
    from probing.results import read_results

    return read_results(path)


LOADERS = {PROBES: load_probes, "study": read_study}


def _study(source: Source) -> StudyResults:
    return source.data()


def _need(study: StudyResults, *names: str) -> None:
    missing = [n for n in names if n not in study.arrays]
    if missing:
        raise MissingData(f"study {study.study!r} at {study.path} lacks array(s) "
                          f"{', '.join(missing)}")


def _need_meta(study: StudyResults, *keys: str) -> None:
    missing = [k for k in keys if k not in study.meta]
    if missing:
        raise MissingData(f"study {study.study!r} at {study.path} lacks meta entr(ies) "
                          f"{', '.join(missing)}")


def _inputs(study: StudyResults) -> list[Path]:
    return [study.path / "results.h5"]


# ---------------------------------------------------------------- repeated tokens


@register("repeated_scores", "repeated",
          "induction and previous-token scores (layer x head) on repeated random tokens")
def plan_repeated_scores(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "induction_score", "prev_token_score")
    scores = [st.arrays["induction_score"], st.arrays["prev_token_score"]]
    return [Planned("repeated_scores",
                    lambda: draw_head_scores(scores, ["induction", "previous-token"]),
                    _inputs(st))]


@register("repeated_loss", "repeated", "per-position loss of the first and the repeated half")
def plan_repeated_loss(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "position_loss")
    loss = st.arrays["position_loss"]
    return [Planned("repeated_loss", lambda: draw_half_losses(loss[0], loss[1]), _inputs(st))]


@register("repeated_mlp_patching", "repeated",
          "loss change from patching each MLP output (layer x position) from the first half")
def plan_repeated_mlp(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "mlp_patch_delta")
    delta = st.arrays["mlp_patch_delta"]
    return [Planned("repeated_mlp_patching", lambda: draw_mlp_patching(delta), _inputs(st))]


@register("repeated_pattern", "repeated",
          "attention pattern of the best induction head on one repeated sequence")
def plan_repeated_pattern(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "example_pattern", "example_tokens")
    pattern, tokens = st.arrays["example_pattern"], list(st.arrays["example_tokens"])
    head = head_name(*st.meta.get("best_induction_head", ["?", "?"]))
    return [Planned("repeated_pattern",
                    lambda: draw_attention_pattern(pattern, tokens, head), _inputs(st))]


# ---------------------------------------------------------------- activation patching


@register("patching", "patch", "logit difference after patching each (layer, position)")
def plan_patching(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "grid")
    grid = st.arrays["grid"]
    n_layers, n_cols = grid.shape
    by_head = st.meta.get("site") == "head"
    column_labels = st.arrays.get("head_labels" if by_head else "corrupt_tokens")
    if column_labels is None:
        column_labels = [str(i) for i in range(n_cols)]
    layers = st.arrays.get("layer_labels", [f"L{i}" for i in range(n_layers)])
    value = str(st.meta.get("value", "logit difference"))
    title = (f"Patching {st.meta.get('site', '')} from clean into corrupted\n"
             f"clean: {st.meta.get('clean', '')!r}  corrupted: {st.meta.get('corrupt', '')!r}")

    def draw():
        fig = draw_logit_diff(grid, list(column_labels), list(layers), value, title)
        if by_head:
            fig.axes[0].set_xlabel("head")
        return fig

    return [Planned("patching", draw, _inputs(st))]


@register("patching_topk", "patch", "top-k next tokens of the clean and corrupted prompts")
def plan_patching_topk(source: Source) -> list[Planned]:
    st = _study(source)
    keys = [f"{w}_top_{k}" for w in ("clean", "corrupt") for k in ("rank", "token", "prob")]
    _need(st, *keys)
    a = st.arrays
    columns = ["rank", "clean token", "clean p", "corrupted token", "corrupted p"]
    rows = [[int(r), repr(str(ct)), float(cp), repr(str(xt)), float(xp)] for r, ct, cp, xt, xp
            in zip(a["clean_top_rank"], a["clean_top_token"], a["clean_top_prob"],
                   a["corrupt_top_token"], a["corrupt_top_prob"], strict=False)]
    title = (f"Top {len(rows)} next tokens\nclean: {st.meta.get('clean', '')!r}\n"
             f"corrupted: {st.meta.get('corrupt', '')!r}")
    return [Planned("patching_topk", lambda: draw_table(columns, rows, title), _inputs(st))]


# ---------------------------------------------------------------- one head on one story


def _example_tokens(st: StudyResults) -> list[str]:
    if "example_tokens" in st.arrays:
        return [str(t) for t in st.arrays["example_tokens"]]
    _need(st, "example_ids")
    return [str(i) for i in st.arrays["example_ids"]]


def _best_head(st: StudyResults) -> str:
    _need_meta(st, "best_head")
    return head_name(*st.meta["best_head"])


@register("quote_activity", "quote",
          "activity of the best quotation head along the example story, quoted spans shaded")
def plan_quote_activity(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "example_activity", "example_quoted")
    tokens, head = _example_tokens(st), _best_head(st)
    activity, quoted = st.arrays["example_activity"], st.arrays["example_quoted"]
    title = f"Activity of {head} on story {st.meta.get('example_story_id', '?')}"
    return [Planned("quote_activity", lambda: draw_activity_trace(
        tokens, activity, head, shaded=quoted, shaded_label="inside a quotation", title=title),
        _inputs(st))]


@register("quote_attention", "quote",
          "attention pattern (destination x source) of the best quotation head, example story")
def plan_quote_attention(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "example_pattern")
    tokens, head = _example_tokens(st), _best_head(st)
    pattern = st.arrays["example_pattern"]
    return [Planned("quote_attention", lambda: draw_attention_pattern(pattern, tokens, head),
                    _inputs(st))]


def _before_label(st: StudyResults) -> str:
    before = st.meta.get("before", "tag")
    return "/".join(before) if isinstance(before, list) else str(before)


@register("tag_induction_activity", "tag-induction",
          "activity of the best tag-induction head along the example story, tag tokens shaded")
def plan_tag_activity(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "example_activity", "example_is_tag")
    tokens, head, tag = _example_tokens(st), _best_head(st), _before_label(st)
    activity, is_tag = st.arrays["example_activity"], st.arrays["example_is_tag"]
    title = f"Activity of {head} before {tag} tokens (story {st.meta.get('example_story_id')})"
    return [Planned("tag_induction_activity", lambda: draw_activity_trace(
        tokens, activity, head, shaded=is_tag, shaded_label=f"{tag} token", title=title),
        _inputs(st))]


@register("tag_induction_attention", "tag-induction",
          "attention pattern of the best tag-induction head on the example story")
def plan_tag_attention(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "example_pattern")
    tokens, head, tag = _example_tokens(st), _best_head(st), _before_label(st)
    pattern = st.arrays["example_pattern"]
    title = f"Attention pattern of {head} (predicting {tag})"
    return [Planned("tag_induction_attention",
                    lambda: draw_attention_pattern(pattern, tokens, head, title), _inputs(st))]


# ---------------------------------------------------------------- probe grids

SITE_NAMES = {"key": "keys", "query": "queries", "value": "values"}


def _probe_array(res: Any, name: str) -> np.ndarray:
    """Array ``name`` of a probe grid ([site, layer, head, tag]), as an attribute or entry."""
    value = getattr(res, name, None)
    if value is None and isinstance(getattr(res, "arrays", None), dict):
        value = res.arrays.get(name)
    if value is None:
        raise MissingData(f"probe results at {res.path} lack array {name!r}")
    return np.asarray(value, dtype=float)


def _probe_labels(res: Any) -> tuple[list[str], list[str]]:
    tags = getattr(res, "tags", None) or getattr(res, "tag_names", None)
    sites = getattr(res, "sites", None) or getattr(res, "site_names", None)
    if tags is None or sites is None:
        raise MissingData(f"probe results at {res.path} lack tag or site names")
    return [str(t) for t in tags], [str(s) for s in sites]


def _probe_inputs(source: Source) -> list[Path]:
    return sorted(p for p in source.path.rglob("*") if p.is_file()
                  and p.name != "manifest.json")


def _site_figure(site: str) -> str:
    return "probes_" + SITE_NAMES.get(site, site)


@register("probes_<site>", PROBES,
          "F1 per tag, layer x head small multiples, one figure per site (probes_keys, "
          "probes_queries), with _shuffled (label-shuffled control) and _selectivity companions")
def plan_probe_grids(source: Source) -> list[Planned]:
    res = source.data()
    tags, sites = _probe_labels(res)
    f1, shuffled = _probe_array(res, "f1"), _probe_array(res, "f1_shuffled")
    support = _probe_support(res)
    inputs = _probe_inputs(source)
    planned = []
    for s, site in enumerate(sites):
        name = _site_figure(site)
        what = SITE_NAMES.get(site, site)
        planned += [
            Planned(name, lambda s=s, what=what: draw_tag_grids(
                f1[s], tags, f"F1 of probes on {what}", "F1", support=support), inputs),
            Planned(f"{name}_shuffled", lambda s=s, what=what: draw_tag_grids(
                shuffled[s], tags, f"F1 of probes on {what}, shuffled labels (control)",
                "F1, shuffled labels", support=support), inputs),
            Planned(f"{name}_selectivity", lambda s=s, what=what: draw_tag_grids(
                selectivity(f1[s], shuffled[s]), tags,
                f"Selectivity of probes on {what} (F1 minus shuffled-label F1)",
                "selectivity", diverging=True, support=support), inputs),
        ]
    return planned


def _probe_support(res: Any) -> np.ndarray | None:
    try:
        support = _probe_array(res, "support")
    except MissingData:
        return None
    return support.reshape(-1, support.shape[-1])[0]


@register("f1:<TAG>", PROBES,
          "one tag in full: per site its F1 grid, shuffled-label control and selectivity "
          "(e.g. --only f1:VBD; 'f1' selects every tag)")
def plan_probe_tags(source: Source) -> list[Planned]:
    res = source.data()
    tags, sites = _probe_labels(res)
    f1, shuffled = _probe_array(res, "f1"), _probe_array(res, "f1_shuffled")
    support = _probe_support(res)
    inputs = _probe_inputs(source)
    planned = []
    for k, tag in enumerate(tags):
        if support is not None and support[k] <= 0:
            continue
        n = None if support is None else int(support[k])
        planned.append(Planned(f"f1:{tag}", lambda k=k, tag=tag, n=n: draw_tag_detail(
            f1[..., k], shuffled[..., k], [SITE_NAMES.get(s, s) for s in sites], tag, n),
            inputs))
    return planned


# ---------------------------------------------------------------- ablation, statistics, tables


def _first(st: StudyResults, *names: str) -> np.ndarray:
    """The first of ``names`` the study holds (studies may name an array either way)."""
    for name in names:
        if name in st.arrays:
            return st.arrays[name]
    raise MissingData(f"study {st.study!r} at {st.path} lacks array {' or '.join(names)}")


@register("ablation", "ablate",
          "per-tag loss change when the chosen heads are ablated, against random heads")
def plan_ablation(source: Source) -> list[Planned]:
    st = _study(source)
    tags = [str(t) for t in _first(st, "tags", "tag_names")]
    ablated = _first(st, "loss_change", "delta_loss", "ablated_delta")
    random = _first(st, "random_loss_change", "random_delta_loss", "random_delta")
    heads = st.meta.get("heads", "heads")
    label = ", ".join(head_name(*h) for h in heads) if isinstance(heads, list) else str(heads)
    return [Planned("ablation", lambda: draw_ablation(tags, ablated, random, label),
                    _inputs(st))]


@register("activation_stats", "stats", "per-layer distributions of activation statistics")
def plan_stats(source: Source) -> list[Planned]:
    st = _study(source)
    value = str(st.meta.get("value", st.meta.get("site", "activation")))
    if "hist_counts" in st.arrays:
        _need(st, "hist_edges")
        counts, edges = st.arrays["hist_counts"], st.arrays["hist_edges"]
        layers = [f"L{i}" for i in range(counts.shape[0])]
        return [Planned("activation_stats", lambda: draw_layer_histograms(
            counts, edges, layers, value), _inputs(st))]
    quantiles = _first(st, "quantiles", "layer_quantiles")
    means = st.arrays.get("mean")
    layers = [f"L{i}" for i in range(quantiles.shape[0])]
    return [Planned("activation_stats", lambda: draw_layer_boxes(
        quantiles, layers, value, means=means), _inputs(st))]


def _table_figure(st: StudyResults, name: str, title: str) -> list[Planned]:
    """A study's table: meta ``table_columns`` names arrays of equal length, one per column."""
    _need_meta(st, "table_columns")
    columns = list(st.meta["table_columns"])
    _need(st, *columns)
    rows = [list(r) for r in zip(*(st.arrays[c] for c in columns), strict=True)]
    return [Planned(name, lambda: draw_table(columns, rows, title), _inputs(st))]


@register("next_token_table", "next-token", "the next-token sweep as a table")
def plan_next_token(source: Source) -> list[Planned]:
    st = _study(source)
    return _table_figure(st, "next_token_table", "Next-token predictions")


@register("time_order_hist", "time-order",
          "histogram of predicted minus previous timestamp (forward in time is positive)")
def plan_time_order(source: Source) -> list[Planned]:
    st = _study(source)
    if "delta_counts" in st.arrays:
        _need(st, "delta_edges")
        counts, edges = st.arrays["delta_counts"], st.arrays["delta_edges"]
    else:
        counts, edges = histogram_of(_first(st, "deltas", "time_deltas"))
    unit = st.meta.get("unit", "s")
    return [Planned("time_order_hist", lambda: draw_histogram(
        counts, edges, f"predicted minus previous timestamp ({unit})",
        "Order of generated timestamps", marker_label="same time"), _inputs(st))]
