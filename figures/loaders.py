"""Adapters from stored results to drawing functions: one planning function per figure type.

Each planning function reads the arrays of one loaded source (a probe grid or a case
study, see :mod:`probing.study_io`), checks that what it needs is there (else
:class:`MissingData` naming the missing array), and returns the figures to draw.
Nothing here recomputes results: every number drawn is read from the files.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from figures.ablation import draw_ablation
from figures.chat import draw_histogram, draw_prob_table, draw_stacked_fractions, histogram_of
from figures.heads import draw_head_grids
from figures.patching import draw_logit_diff, draw_table
from figures.probe_grids import draw_tag_detail, draw_tag_grids
from figures.registry import PROBES, MissingData, Planned, Source, register
from figures.repeated import draw_half_losses, draw_head_scores, draw_mlp_patching
from figures.stats import draw_layer_fractions, draw_site_boxes, draw_site_histograms
from figures.traces import draw_activity_trace, draw_attention_pattern
from headprobe.heads import head_label
from probing.results import RESULTS_FILE, ProbeResults, read_results
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
    return (path / RESULTS_FILE).is_file()


def load_probes(path: Path) -> ProbeResults:
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
    head = head_label(*st.meta.get("best_induction_head", ["?", "?"]))
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
    elif not by_head and "clean_tokens" in st.arrays:
        # positions where the prompts differ read "clean→corrupted"
        column_labels = [c if c == x else f"{c.strip()}\u2192{x.strip()}" for c, x in
                         zip(st.arrays["clean_tokens"], column_labels, strict=True)]
    layers = st.arrays.get("layer_labels", [f"L{i}" for i in range(n_layers)])
    value = str(st.meta.get("value", "logit difference"))
    title = (f"Patching {st.meta.get('site', '')} from the clean into the corrupted run\n"
             f"clean: {st.meta.get('clean', '')!r}\ncorrupted: {st.meta.get('corrupt', '')!r}")

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
    return head_label(*st.meta["best_head"])


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


@register("quote_heads", "quote",
          "per head: activity ratio inside/outside quotations, paired t and attention to the "
          "opening quotation mark (layer x head)")
def plan_quote_heads(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "ratio", "t_stat")
    grids = [("activity ratio inside / outside quotes", "auto"),
             ("paired t (inside - outside)", "diverging")]
    arrays = [st.arrays["ratio"], st.arrays["t_stat"]]
    if "attn_to_open" in st.arrays:
        grids.append(("attention to the opening quote", "unit"))
        arrays.append(st.arrays["attn_to_open"])
    title = f"Quotation heads ({st.meta.get('n_stories', '?')} stories with quotations)"
    return [Planned("quote_heads", lambda: draw_head_grids(
        arrays, [g[0] for g in grids], title, [g[1] for g in grids]), _inputs(st))]


@register("tag_induction_heads", "tag-induction",
          "per head: attention to earlier tag tokens just before a tag token, its baseline "
          "and their difference (layer x head)")
def plan_tag_heads(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "score_before", "score_random", "score_diff")
    tag = _before_label(st)
    names = [f"attention to earlier {tag} (before {tag})", "the same at other positions",
             "difference"]
    arrays = [st.arrays[n] for n in ("score_before", "score_random", "score_diff")]
    uniform = st.meta.get("uniform_score")
    title = (f"{tag} induction heads ({st.meta.get('n_before', '?')} positions before {tag}"
             + (f"; uniform attention would give {uniform:.3f})" if uniform is not None
                else ")"))
    return [Planned("tag_induction_heads", lambda: draw_head_grids(
        arrays, names, title, ["unit", "unit", "diverging"]), _inputs(st))]


# ---------------------------------------------------------------- probe grids

SITE_NAMES = {"key": "keys", "query": "queries", "value": "values"}
# Per-tag F1 controls drawn as grids: array -> (figure suffix, label). The majority-class
# baseline is left out: it is the same number in every cell.
PROBE_CONTROLS = {"f1_shuffled": ("shuffled", "shuffled labels"),
                  "f1_random": ("random", "randomly initialised model")}


def _probes(source: Source) -> ProbeResults:
    res = source.data()
    if "f1" not in res.arrays:
        raise MissingData(f"probe results at {res.path} lack array 'f1'")
    return res


def _probe_support(res: ProbeResults) -> np.ndarray | None:
    """Test tokens per tag [K] (the same in every cell), or None."""
    support = res.arrays.get("support")
    return None if support is None else support.reshape(-1, support.shape[-1])[0]


def _probe_controls(res: ProbeResults) -> dict[str, np.ndarray]:
    return {name: res.arrays[name].astype(float) for name in PROBE_CONTROLS
            if name in res.arrays}


def _selectivity(res: ProbeResults) -> tuple[np.ndarray | None, str]:
    """The stored selectivity [S, L, H, K] and the name of its control."""
    if "selectivity" not in res.arrays:
        return None, ""
    control = str(res.attrs.get("selectivity_control") or "control")
    return res.arrays["selectivity"].astype(float), PROBE_CONTROLS.get(
        f"f1_{control}", (control, control))[1]


def _probe_inputs(source: Source) -> list[Path]:
    return sorted(p for p in source.path.rglob("*") if p.is_file()
                  and p.name != "manifest.json")


def _site_figure(site: str) -> str:
    return "probes_" + SITE_NAMES.get(site, site)


@register("probes_<site>", PROBES,
          "F1 per tag, layer x head small multiples, one figure per site (probes_keys, "
          "probes_queries), with _shuffled and _random (control probes) and _selectivity "
          "companions when the controls were run")
def plan_probe_grids(source: Source) -> list[Planned]:
    res = _probes(source)
    tags, layers = list(res.tags), list(res.layers)
    f1 = res.arrays["f1"].astype(float)
    support = _probe_support(res)
    sel, sel_control = _selectivity(res)
    inputs = _probe_inputs(source)
    # Tags without test tokens have no score; they are left out and named in the title.
    shown = np.arange(len(tags)) if support is None else np.flatnonzero(support > 0)
    shown_tags = [tags[k] for k in shown]
    missing = sorted(set(tags) - set(shown_tags), key=tags.index)
    dropped = f"\n(no test tokens, not shown: {' '.join(missing)})" if missing else ""
    planned = []
    for s, site in enumerate(res.sites):
        name, what = _site_figure(site), SITE_NAMES.get(site, site)

        def grid(values, title, label, diverging=False):
            return lambda: draw_tag_grids(values[..., shown], shown_tags, title + dropped,
                                          label, diverging=diverging,
                                          support=None if support is None else support[shown],
                                          layers=layers)

        planned.append(Planned(name, grid(f1[s], f"F1 of probes on {what} (test split)",
                                          "F1"), inputs))
        for array, control in _probe_controls(res).items():
            suffix, label = PROBE_CONTROLS[array]
            planned.append(Planned(f"{name}_{suffix}", grid(
                control[s], f"F1 of control probes on {what}: {label}", f"F1, {label}"),
                inputs))
        if sel is not None:
            planned.append(Planned(f"{name}_selectivity", grid(
                sel[s], f"Selectivity of probes on {what}: F1 minus F1 with {sel_control}",
                "selectivity", diverging=True), inputs))
    return planned


@register("f1:<TAG>", PROBES,
          "one tag in full: per site its F1 grid, control grids and selectivity, best head "
          "boxed (e.g. --only f1:VBD; 'f1' selects every tag)")
def plan_probe_tags(source: Source) -> list[Planned]:
    res = _probes(source)
    sites = [SITE_NAMES.get(s, s) for s in res.sites]
    f1 = res.arrays["f1"].astype(float)
    controls = _probe_controls(res)
    sel, sel_control = _selectivity(res)
    bounds = ((res.arrays["f1_lo"], res.arrays["f1_hi"])
              if "f1_lo" in res.arrays and "f1_hi" in res.arrays else None)
    support = _probe_support(res)
    inputs = _probe_inputs(source)
    planned = []
    for k, tag in enumerate(res.tags):
        if support is not None and support[k] <= 0:
            continue

        def draw(k=k, tag=tag):
            return draw_tag_detail(
                f1[..., k], {PROBE_CONTROLS[a][1]: c[..., k] for a, c in controls.items()},
                sites, tag, None if support is None else int(support[k]),
                sel=None if sel is None else sel[..., k], sel_control=sel_control,
                layers=list(res.layers),
                interval=None if bounds is None else (bounds[0][..., k], bounds[1][..., k]))

        planned.append(Planned(f"f1:{tag}", draw, inputs))
    return planned


# ---------------------------------------------------------------- ablation, statistics


@register("ablation", "ablate",
          "per-tag loss change when the chosen heads are ablated, against random heads")
def plan_ablation(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "tags", "ablated_delta", "random_delta")
    a = st.arrays
    tags = [str(t) for t in a["tags"]]
    heads = ", ".join(head_label(*h) for h in a["heads"]) if "heads" in a else str(
        st.meta.get("heads", "heads"))
    mode = st.meta.get("mode", "zero")
    title = (f"{str(mode).capitalize()}-ablation of {heads}: loss change on predicted tokens "
             f"by tag\n({st.meta.get('n_stories', '?')} {st.meta.get('split', '')} stories; "
             f"overall {st.meta.get('ablated_delta_all', float('nan')):+.3f} nats)")
    return [Planned("ablation", lambda: draw_ablation(
        tags, a["ablated_delta"], a["random_delta"], heads, title, counts=a.get("count")),
        _inputs(st))]


STATS_SITES = {"attn_out": "attention output (hook_attn_out)",
               "ln2_out": "residual after attention + LayerNorm (ln2.hook_out)",
               "mlp": "MLP neurons after the activation (mlp.hook_post)"}
BOX_STATS = ("min", "q25", "median", "q75", "max")


def _layer_labels(st: StudyResults, n: int) -> list[str]:
    return [f"L{i}" for i in range(n)]


def _prompt_title(st: StudyResults, what: str) -> str:
    prompt = str(st.meta.get("prompt", ""))
    short = prompt if len(prompt) <= 70 else prompt[:67] + "..."
    short = short.replace("\n", "\\n")
    return f"{what} on \u2018{short}\u2019" if prompt else what


@register("activation_stats", "stats",
          "per-layer box plots (min, quartiles, max, mean) of the attention output, the "
          "normalised residual and the MLP neurons")
def plan_stats(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "summary_names")
    names = [str(n) for n in st.arrays["summary_names"]]
    missing = [n for n in (*BOX_STATS, "mean") if n not in names]
    if missing:
        raise MissingData(f"study {st.study!r} at {st.path}: summary_names lacks "
                          f"{', '.join(missing)}")
    panels = {}
    for site, label in STATS_SITES.items():
        if f"{site}_summary" in st.arrays:
            table = st.arrays[f"{site}_summary"]
            panels[label] = (table[:, [names.index(n) for n in BOX_STATS]],
                             table[:, names.index("mean")])
    if not panels:
        raise MissingData(f"study {st.study!r} at {st.path} lacks array(s) attn_out_summary, "
                          "ln2_out_summary")
    n_layers = next(iter(panels.values()))[0].shape[0]
    title = _prompt_title(st, "Activations per layer")
    return [Planned("activation_stats", lambda: draw_site_boxes(
        panels, _layer_labels(st, n_layers), title), _inputs(st))]


@register("activation_hist", "stats",
          "per-layer histograms (ridgelines) of the attention output and the normalised "
          "residual")
def plan_stats_hist(source: Source) -> list[Planned]:
    st = _study(source)
    panels = {}
    for site in ("attn_out", "ln2_out"):
        if f"{site}_hist" in st.arrays:
            _need(st, f"{site}_hist_edges")
            panels[STATS_SITES[site]] = (st.arrays[f"{site}_hist"],
                                         st.arrays[f"{site}_hist_edges"])
    if not panels:
        _need(st, "attn_out_hist", "ln2_out_hist")
    n_layers = next(iter(panels.values()))[0].shape[0]
    title = _prompt_title(st, "Histograms per layer")
    return [Planned("activation_hist", lambda: draw_site_histograms(
        panels, _layer_labels(st, n_layers), title), _inputs(st))]


@register("mlp_sparsity", "stats", "fraction of MLP neuron values near zero, per layer")
def plan_mlp_sparsity(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "mlp_near_zero", "mlp_below")
    thr = st.meta.get("threshold", "threshold")
    fractions = {f"|x| < {thr}": st.arrays["mlp_near_zero"],
                 f"x < {thr}": st.arrays["mlp_below"]}
    layers = _layer_labels(st, len(st.arrays["mlp_near_zero"]))
    title = _prompt_title(st, "MLP neurons (post-activation)")
    return [Planned("mlp_sparsity", lambda: draw_layer_fractions(
        fractions, layers, "fraction of neuron values", title), _inputs(st))]


# ---------------------------------------------------------------- chat studies


@register("next_token_table", "next-token",
          "next-token probabilities: one row per prompt (or --vary value), one column per token")
def plan_next_token(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "values", "tokens", "probs")
    a = st.arrays
    vary = st.meta.get("vary")
    rows = [str(v) for v in a["values"]] if vary else ["prompt"]
    prompt = str(st.meta.get("prompt", ""))
    prompt = prompt if len(prompt) <= 80 else "..." + prompt[-77:]
    title = f"Next-token probabilities\n{prompt!r}"
    return [Planned("next_token_table", lambda: draw_prob_table(
        a["probs"], rows, [str(t) for t in a["tokens"]], str(vary or ""), title), _inputs(st))]


@register("time_order_mass", "time-order",
          "probability of an earlier, the same or a later timestamp digit, by previous digit")
def plan_time_mass(source: Source) -> list[Planned]:
    st = _study(source)
    names = ("past_mass", "same_mass", "future_mass", "non_digit_mass")
    _need(st, "previous_digit", *names)
    previous = st.arrays["previous_digit"]
    digits = sorted({int(d) for d in previous})
    parts = {n.removesuffix("_mass").replace("_", "-"): np.array(
        [st.arrays[n][previous == d].mean() for d in digits]) for n in names}
    counts = [int((previous == d).sum()) for d in digits]
    field = st.meta.get("field", "minute")
    title = (f"Next {field} tens digit after a message: earlier, same or later than the "
             f"previous one\n(mean past mass {st.meta.get('mean_past_mass', float('nan')):.1%})")
    return [Planned("time_order_mass", lambda: draw_stacked_fractions(
        parts, [str(d) for d in digits], f"previous {field} tens digit", title, counts),
        _inputs(st))]


@register("time_order_hist", "time-order",
          "histogram of the time between consecutive generated timestamps (negative: "
          "backwards)")
def plan_time_order(source: Source) -> list[Planned]:
    st = _study(source)
    _need(st, "gen_deltas")
    deltas = st.arrays["gen_deltas"]
    if deltas.size == 0:
        raise MissingData(f"study {st.study!r} at {st.path} has no consecutive generated "
                          "timestamps (gen_deltas is empty)")
    counts, edges = histogram_of(deltas, symlog=True)
    back = st.meta.get("gen_backward", float((deltas < 0).mean()))
    title = (f"Generated chats: next minus previous timestamp ({len(deltas)} pairs, "
             f"{back:.1%} backwards)")
    return [Planned("time_order_hist", lambda: draw_histogram(
        counts, edges, "next minus previous timestamp (s, symmetric log scale)", title,
        marker_label="same time", symlog=True), _inputs(st))]
