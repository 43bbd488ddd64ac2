"""What the head atlas shows, gathered from stored results into one JSON-able dict.

The atlas (:mod:`figures.atlas`) draws a layers x heads grid coloured by one metric, a
card per head and a search. Everything it shows comes from here, read from the results
``figures`` finds (:mod:`figures.sources`); nothing is recomputed except rankings of the
stored numbers. The payload:

- ``n_layers``, ``n_heads``, ``heads`` ([n_layers * n_heads] names, layer-major,
  :func:`headprobe.heads.head_label`), ``kv_head`` ([n_heads], grouped-query models only);
- ``metrics``: one entry per colouring of the grid: ``id``, ``group`` (probes, or the
  study), ``label``, ``description``, ``values`` [n_layers][n_heads] (None where the
  results hold nothing), optionally ``control`` (label and values of the number the value
  is judged against), ``lo`` / ``hi`` (its 95% interval), ``tag`` / ``site`` and
  ``lower_first`` (heads ranked from the lowest value: p-values);
- ``probe``: sites, tags and, per tag, the ranked cells of :func:`probing.top.top_cells`
  for each ranking the results hold (``search``);
- ``partners``: per head, its strongest composition partners (``repeated`` results);
- ``examples``: per head, the attention examples and activity traces studies stored for it;
- ``trace``: every head's activity on one story of the run's store (:func:`store_trace`),
  when the run has a store with activity.

Cells of a key/value site of a grouped-query model are shown on every query head that
reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures.sources import PROBES, Source
from headprobe.errors import UsageError
from headprobe.heads import head_label, kv_heads
from headprobe.rundir import make_command, model_of_store, run_of
from headprobe.stories import find_story, read_stories
from headprobe.tokens import display_text, token_strings
from probing.controls import array_suffix, strongest_control
from probing.results import ProbeResults
from probing.studies import ablation, patching, quote, repeated, tag_induction
from probing.study_io import LAYER_HEAD, StudyResults
from probing.top import ranking_words, top_cells

DIGITS = 4          # decimals kept for every number embedded in the page
TOP_K = 10          # ranked cells kept per tag and ranking (``probing top --k``)
TRACE_TOKENS = 200  # tokens of the story whose activity trace every card shows
PARTNERS = 3        # composition partners kept per head, mode and role
SEARCH_RANKINGS = ("f1", "selectivity", "beyond-lexical", "compression")
# study array -> the array it is judged against (hover shows both)
STUDY_CONTROLS = {(tag_induction.STUDY, tag_induction.SCORE_BEFORE.name):
                  tag_induction.SCORE_RANDOM, (tag_induction.STUDY,
                                               tag_induction.ACTIVITY_BEFORE.name):
                  tag_induction.ACTIVITY_ALL, (quote.STUDY, quote.MEAN_IN.name): quote.MEAN_OUT}
COMPOSITION = {"Q": repeated.Q_COMPOSITION, "K": repeated.K_COMPOSITION,
               "V": repeated.V_COMPOSITION}
# meta entries naming the head a study's example belongs to, most specific first
EXAMPLE_HEAD_KEYS = ("best_head", "best_induction_head")


def rounded(values: Any) -> Any:
    """Nested lists of ``values`` rounded to DIGITS decimals, NaN as None."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        return round(float(arr), DIGITS) if np.isfinite(arr) else None
    out = np.round(arr, DIGITS).astype(object)
    out[~np.isfinite(arr)] = None
    return out.tolist()


class Grid:
    """The shape of the atlas grid: layers x query heads, and the key/value head each reads."""

    def __init__(self, n_layers: int, n_heads: int, n_kv_heads: int | None = None):
        self.n_layers, self.n_heads = n_layers, n_heads
        self.kv_head = kv_heads(n_heads, n_kv_heads) if n_kv_heads else None

    def place(self, layers: Sequence[int], values: np.ndarray, kv: bool = False) -> np.ndarray:
        """[n_layers, n_heads] with ``values`` [len(layers), heads] on the given model
        layers (NaN elsewhere); key/value cells (``kv``) spread to the query heads."""
        out = np.full((self.n_layers, self.n_heads), np.nan)
        if kv and self.kv_head is not None:
            values = values[:, self.kv_head]
        out[list(layers), :values.shape[1]] = values[:, :self.n_heads]
        return out


def grid_of(sources: Sequence[Source]) -> Grid:
    """The grid every source fits in: the most layers and heads any result holds."""
    n_layers = n_heads = 0
    n_kv = None
    for source in sources:
        data = source.data()
        if source.kind == PROBES:
            n_layers = max(n_layers, max(data.layers) + 1)
            for axis, count in zip(data.head_axes, data.site_heads, strict=True):
                if axis == "head":
                    n_heads = max(n_heads, count)
                else:
                    n_kv = count
            continue
        for entry in data.layout:
            if entry.dims == LAYER_HEAD and entry in data:
                shape = data[entry].shape
                n_layers, n_heads = max(n_layers, shape[0]), max(n_heads, shape[1])
    return Grid(n_layers, n_heads, n_kv if n_kv and n_kv < n_heads else None)


def metric(mid: str, group: str, label: str, description: str, values: np.ndarray,
           **extra: Any) -> dict[str, Any]:
    """One colouring of the grid; ``extra``: control, lo, hi, tag, site."""
    entry = {"id": mid, "group": group, "label": label, "description": description,
             "values": rounded(values)}
    for key, value in extra.items():
        if isinstance(value, dict):
            value = {**value, "values": rounded(value["values"])}
        elif isinstance(value, np.ndarray):
            value = rounded(value)
        entry[key] = value
    return entry


class SiteCells:
    """Cells of one site of a probe grid placed on the atlas grid."""

    def __init__(self, results: ProbeResults, grid: Grid, site: str):
        self.results, self.grid, self.site = results, grid, site
        self.s = results.site_index(site)
        self.kv = results.head_axes[self.s] == "kv_head"

    def __call__(self, name_or_array: str | np.ndarray, t: int | None = None) -> np.ndarray:
        """A per-cell array (or tag ``t`` of a per-tag one), [n_layers, n_heads]."""
        a = (self.results.arrays[name_or_array] if isinstance(name_or_array, str)
             else name_or_array)
        value = a[self.s, :, :self.results.site_heads[self.s]]
        return self.grid.place(self.results.layers, value if t is None else value[..., t],
                               self.kv)

    def bounds(self, name: str, t: int) -> dict[str, np.ndarray]:
        """``lo`` / ``hi`` of the interval of ``name`` where the results hold it."""
        return {end: self(f"{name}_{end}", t) for end in ("lo", "hi")
                if f"{name}_{end}" in self.results.arrays}


def _tag_metrics(cells: SiteCells, tag: str, control: str | None,
                 selectivity: np.ndarray | None) -> list[dict[str, Any]]:
    """F1 (interval, strongest control), selectivity and the lexical-baseline margin
    (interval, the lexical baseline's F1) of one tag at one site."""
    t, site, arrays = cells.results.tag_index(tag), cells.site, cells.results.arrays
    where = {"tag": tag, "site": site}
    extra: dict[str, Any] = dict(where, **cells.bounds("f1", t))
    if control:
        extra["control"] = {"label": f"{control} F1",
                            "values": cells(f"f1_{array_suffix(control)}", t)}
    out = [metric(f"f1|{site}|{tag}", "probes", "probe F1", "test F1 of the probe for the "
                  "tag (95% bootstrap interval)", cells("f1", t), **extra)]
    if selectivity is not None:
        out.append(metric(f"selectivity|{site}|{tag}", "probes", "selectivity",
                          f"F1 minus the {control} control's F1", cells(selectivity, t),
                          **where))
    if "lexical_gain" in arrays:
        gain = dict(where, control={"label": "lexical F1 on ambiguous tokens",
                                    "values": cells("f1_lexical_ambiguous", t)},
                    **cells.bounds("lexical_gain", t))
        out.append(metric(f"lexical|{site}|{tag}", "probes", "lexical-baseline margin",
                          "probe F1 minus the lexical baseline's F1 on ambiguous tokens (95% "
                          "bootstrap interval)", cells("lexical_gain", t), **gain))
    return out


def _compression_metric(cells: SiteCells) -> dict[str, Any]:
    """MDL compression of one site, against the random-weights (else control-task) one."""
    extra: dict[str, Any] = {"site": cells.site}
    for suffix in ("random", "control_task"):
        if f"compression_{suffix}" in cells.results.arrays:
            extra["control"] = {"label": f"compression, {suffix.replace('_', ' ')}",
                                "values": cells(f"compression_{suffix}")}
            break
    return metric(f"compression|{cells.site}", "probes", "MDL compression",
                  "uniform code length / online code length of the train tags",
                  cells("compression"), **extra)


def _probe_metrics(results: ProbeResults, grid: Grid) -> list[dict[str, Any]]:
    """Per site: every tag's F1, selectivity and lexical-baseline margin, and MDL
    compression, each with its control and, where stored, its interval."""
    control = strongest_control(results.controls)
    selectivity = results.selectivity(control) if control else None
    out = []
    for site in results.sites:
        cells = SiteCells(results, grid, site)
        for tag in results.tags:
            out += _tag_metrics(cells, tag, control, selectivity)
        if "compression" in results.arrays:
            out.append(_compression_metric(cells))
    return out


def _cell_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"site": row["site"], "cell": row["cell"], "layer": row["layer"], "head": row["head"],
            "value": rounded(row["value"])}


def probe_search(results: ProbeResults) -> dict[str, Any]:
    """Per ranking and tag: the cells ``probing top`` lists (``top_cells``, every site),
    and what each ranking is in words."""
    search: dict[str, Any] = {}
    words: dict[str, str] = {}
    for by in SEARCH_RANKINGS:
        try:
            ranked = {tag: top_cells(results, tag, k=TOP_K, by=by) for tag in results.tags}
        except UsageError:
            continue          # the results hold nothing to rank by this way
        first = next(rows[0] for rows in ranked.values())
        words[by] = ranking_words(by, first["control"], first["acc_control"])
        search[by] = {tag: [_cell_row(r) for r in rows] for tag, rows in ranked.items()}
    return {"sites": results.sites, "tags": results.tags, "head_axes": results.head_axes,
            "rankings": words, "search": search}


def _study_metrics(results: StudyResults, grid: Grid) -> list[dict[str, Any]]:
    """Every float [layer, head] array of a study (patching's grid when it patched heads;
    ablation's loss change per tag on the ablated heads)."""
    study = results.study
    out = []
    for entry in results.layout:
        head_grid = entry.dims == LAYER_HEAD or (
            entry == patching.GRID and results.meta.get("site") == "head")
        if not head_grid or entry.kind != "float" or entry not in results:
            continue
        value = results[entry]
        extra = {}
        control = STUDY_CONTROLS.get((study, entry.name))
        if control is not None and control in results:
            extra["control"] = {"label": control.name, "values": grid.place(
                range(results[control].shape[0]), results[control])}
        if entry.name.endswith("pvalue"):
            extra["lower_first"] = True       # ranked from the smallest p-value
        out.append(metric(f"{study}|{entry.name}", study, f"{study}: {entry.name}",
                          entry.description, grid.place(range(value.shape[0]), value), **extra))
    if study == ablation.STUDY:
        out += _ablation_metrics(results, grid)
    return out


def _ablation_metrics(results: StudyResults, grid: Grid) -> list[dict[str, Any]]:
    """Loss change per tag when the ablated heads are ablated, shown on those heads, with
    the mean over the random draws as control."""
    heads = results[ablation.HEADS]
    random = results[ablation.RANDOM_DELTA].mean(0)
    out = []
    for t, tag in enumerate(results[ablation.TAGS]):
        value, control = value_like(grid), value_like(grid)
        for layer, head in heads:
            value[layer, head] = results[ablation.ABLATED_DELTA][t]
            control[layer, head] = random[t]
        out.append(metric(f"{ablation.STUDY}|{tag}", ablation.STUDY,
                          f"{ablation.STUDY}: loss change", ablation.ABLATED_DELTA.description,
                          value, tag=str(tag), control={"label": "random heads, mean",
                                                        "values": control}))
    return out


def value_like(grid: Grid) -> np.ndarray:
    """An empty [n_layers, n_heads] grid (NaN)."""
    return np.full((grid.n_layers, grid.n_heads), np.nan)


def composition_partners(results: StudyResults, grid: Grid) -> dict[str, list[dict[str, Any]]]:
    """Head name -> its strongest partners in each composition mode, as writer (heads of
    later layers reading it) and as reader (heads of earlier layers it reads)."""
    partners: dict[str, list[dict[str, Any]]] = {}
    for mode, entry in COMPOSITION.items():
        if entry not in results:
            continue
        scores = np.nan_to_num(results[entry], nan=-np.inf)    # [wl, wh, rl, rh]
        n_l, n_h = scores.shape[:2]
        for layer in range(n_l):
            for head in range(n_h):
                for role, block in (("writer", scores[layer, head]),
                                    ("reader", scores[:, :, layer, head])):
                    best = np.argsort(-block, axis=None, kind="stable")[:PARTNERS]
                    for flat in best:
                        pl, ph = divmod(int(flat), block.shape[1])
                        if np.isfinite(block[pl, ph]):
                            partners.setdefault(head_label(layer, head), []).append(
                                {"mode": mode, "role": role, "partner": head_label(pl, ph),
                                 "score": rounded(block[pl, ph])})
    return partners


def _example_head(results: StudyResults, name: str) -> str | None:
    named = results.meta.get("example_heads", {}).get(name)
    for key in EXAMPLE_HEAD_KEYS:
        named = named or results.meta.get(key)
    return head_label(*named) if named else None


def example_story(sources: Sequence[Source]) -> int | None:
    """The story a study shows as its example (the activity trace's default story)."""
    for source in sources:
        if source.kind != PROBES and "example_story_id" in source.data().meta:
            return int(source.data().meta["example_story_id"])
    return None


def study_examples(results: StudyResults) -> dict[str, list[dict[str, Any]]]:
    """Head name -> the attention patterns [T, T] (causal rows) and activity traces [T]
    a study stored for it, with the tokens they are over."""
    tokens = results.get("example_tokens")
    if tokens is None:
        return {}
    shown = [display_text(str(t)) for t in tokens]
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in results.layout:
        if entry not in results or not entry.name.startswith("example_"):
            continue
        head = _example_head(results, entry.name)
        value = results[entry]
        if head is None or value.dtype.kind != "f":
            continue
        item = {"study": results.study, "array": entry.name, "description": entry.description,
                "tokens": shown, "story": results.meta.get("example_story_id")}
        if value.ndim == 2:
            item["pattern"] = [rounded(row[:i + 1]) for i, row in enumerate(value)]
        else:
            item["activity"] = rounded(value)
        out.setdefault(head, []).append(item)
    return out


def _nothing_per_head(sources: Sequence[Source]) -> UsageError:
    """The error for results without one number per head, naming the command to run."""
    path = sources[0].path if sources else Path("RUN")
    run = run_of(path, "study") or path
    return UsageError(f"no per-head results in {', '.join(str(s.path) for s in sources) or run} "
                      "(a probe grid, or a study of heads such as quote or repeated); run "
                      f"first: {make_command('probes', run, run=run)}")


def atlas_payload(sources: Sequence[Source], title: str,
                  trace: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dict the atlas page embeds (see the module docstring); ``trace``: from
    :func:`store_trace`."""
    grid = grid_of(sources)
    if not grid.n_layers or not grid.n_heads:
        raise _nothing_per_head(sources)
    payload: dict[str, Any] = {
        "title": title, "n_layers": grid.n_layers, "n_heads": grid.n_heads,
        "heads": [head_label(la, h) for la in range(grid.n_layers) for h in range(grid.n_heads)],
        "metrics": [], "probe": None, "partners": {}, "examples": {}, "trace": trace}
    if grid.kv_head is not None:
        payload["kv_head"] = grid.kv_head.tolist()
    for source in sources:
        data = source.data()
        if source.kind == PROBES:
            payload["metrics"] += _probe_metrics(data, grid)
            payload["probe"] = payload["probe"] or probe_search(data)
            continue
        payload["metrics"] += _study_metrics(data, grid)
        payload["partners"].update(composition_partners(data, grid))
        for head, items in study_examples(data).items():
            payload["examples"].setdefault(head, []).extend(items)
    return payload


def store_trace(store_path: str | Path, story_id: int | None = None,
                run: str | Path | None = None, default_story: int | None = None
                ) -> dict[str, Any] | None:
    """Every head's activity on one story of the activation store: ``story``, ``tokens``
    [T] (shown as :func:`headprobe.tokens.display_text` does) and ``values`` [n_layers]
    [n_heads][T], the story's first TRACE_TOKENS tokens. Without ``story_id``: story
    ``default_story`` where the store holds it, else the store's first story. None when
    the store holds no activity or names no model whose tokenizer shows its tokens."""
    from extract.store import open_store
    from headprobe.tokenization import load_tokenizer

    with open_store(store_path) as store:
        model = model_of_store(store.attrs, run)
        if "activity" not in store.sites or model is None:
            return None
        stories = read_stories(store)
        story = find_story(stories, story_id) if story_id is not None else stories[0]
        if default_story is not None and story_id is None:
            story = next((s for s in stories if s.story_id == default_story), story)
        rows = story.rows[:TRACE_TOKENS]
        values = np.stack([store.read_layer("activity", layer, rows)
                           for layer in range(store.n_layers)])       # [L, T, H]
    tokens = token_strings(load_tokenizer(model), story.input_ids[:TRACE_TOKENS])
    return {"story": story.story_id, "tokens": [display_text(t) for t in tokens],
            "values": rounded(values.transpose(0, 2, 1))}
