"""Quotation heads: heads that are active inside quotations and attend to the opening mark.

From the activation store (site ``activity``), for every head and every story that has
tokens both inside and outside quotations, the mean activity inside and outside (BOS
left out). Heads are ranked by the ratio of the two (means over stories) and tested with
a paired t-test and a paired Wilcoxon signed-rank test over the per-story means.

With the model, the stories with quotations are run again and the attention patterns
are read from ``blocks.L.attn.hook_pattern``: for each quoted token, the attention it
pays to the opening quotation mark of its quotation (averaged over all such tokens),
and for contrast the attention that tokens after the closing mark still pay to it. Once
the closing mark appears, a quotation head may move its attention there (seed 004: "until
the end, when it shifts to the end-quotation mark"): ``attn_to_close`` is the attention
from the closing mark and the tokens after it to the closing mark, and ``shift_to_open``
/ ``shift_to_close`` follow both along the tokens around the closing mark.

The opening mark of a quotation (a maximal run of quoted tokens; quote marks themselves
are not quoted) is the nearest token at or before the run's start, at most two tokens
back, whose text holds a quotation mark; its closing mark the nearest token from the
run's last token on, at most two tokens ahead, whose text holds one. A closing mark fused
with the punctuation before it (``."``, ``!"``) belongs to the last quoted token.
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import stats as scipy_stats

from headprobe.errors import UsageError, opt
from headprobe.heads import head_label
from headprobe.stories import Story, read_stories
from headprobe.tokens import token_strings
from probing.studies.common import (
    activity_sums,
    add_output_arguments,
    add_story_arguments,
    example_window,
    finish_study,
    format_table,
    head_pattern,
    is_quote_mark,
    load_study_model,
    model_name,
    store_study,
    top_heads,
    visit_patterns,
)
from probing.study_io import LAYER_HEAD, PATTERN, Array, Layout

HELP = "heads active inside quotations and attending to the opening quotation mark"
STUDY = "quote"
RANK_KEYS = ("ratio", "t", "attention")
WITH_MODEL = "with the model"

RATIO = Array("ratio", LAYER_HEAD, "float",
              "mean over stories of the mean activity inside quotations / outside")
MEAN_IN = Array("mean_in", LAYER_HEAD, "float",
                "mean over stories of the mean activity inside quotations")
MEAN_OUT = Array("mean_out", LAYER_HEAD, "float",
                 "mean over stories of the mean activity outside quotations (BOS left out)")
T_STAT = Array("t_stat", LAYER_HEAD, "float",
               "paired t over stories of the (inside - outside) per-story mean activity")
T_PVALUE = Array("t_pvalue", LAYER_HEAD, "float", "two-sided p-value of that paired t-test")
WILCOXON_STAT = Array("wilcoxon_stat", LAYER_HEAD, "float",
                      "paired Wilcoxon signed-rank statistic of the same differences")
WILCOXON_PVALUE = Array("wilcoxon_pvalue", LAYER_HEAD, "float",
                        "p-value of the paired Wilcoxon signed-rank test")
EFFECT_SIZE = Array("effect_size", LAYER_HEAD, "float",
                    "mean / sd of the per-story differences (Cohen's d_z)")
STORY_IDS = Array("story_ids", ("story",), "int",
                  "ids of the stories with tokens both inside and outside quotations")
STORY_MEAN_IN = Array("story_mean_in", ("story", *LAYER_HEAD), "float",
                      "mean activity inside quotations in each story")
STORY_MEAN_OUT = Array("story_mean_out", ("story", *LAYER_HEAD), "float",
                       "mean activity outside quotations in each story (BOS left out)")
ATTN_TO_OPEN = Array("attn_to_open", LAYER_HEAD, "float",
                     "mean attention from quoted tokens to their opening mark", WITH_MODEL)
ATTN_AFTER_TO_OPEN = Array("attn_after_to_open", LAYER_HEAD, "float",
                           "mean attention from tokens after a quotation (up to the next one) "
                           "to its opening mark", WITH_MODEL)
ATTN_TO_CLOSE = Array("attn_to_close", LAYER_HEAD, "float",
                      "mean attention from the closing mark of a quotation and the tokens "
                      "after it (up to the next quotation) to that closing mark", WITH_MODEL)
SHIFT_OFFSET = Array("shift_offset", ("offset",), "int",
                     "position relative to the closing mark of a quotation (0: the token "
                     "holding it)", WITH_MODEL)
SHIFT_TO_OPEN = Array("shift_to_open", ("offset", *LAYER_HEAD), "float",
                      "mean attention to the opening mark from the token at each offset from "
                      "the closing mark (tokens after the opening mark, before the next "
                      "quotation)", WITH_MODEL)
SHIFT_TO_CLOSE = Array("shift_to_close", ("offset", *LAYER_HEAD), "float",
                       "mean attention to the closing mark from the token at each offset "
                       "from it (NaN before it: no token attends ahead)", WITH_MODEL)
TOP_HEADS = Array("top_heads", ("rank", "layer/head"), "int",
                  "(layer, head) of the best heads by the chosen ranking, best first")
EXAMPLE_IDS = Array("example_ids", ("position",), "int", "token ids of the example story")
EXAMPLE_TOKENS = Array("example_tokens", ("position",), "str",
                       "text of each token of the example story",
                       "with the model or its tokenizer")
EXAMPLE_QUOTED = Array("example_quoted", ("position",), "bool",
                       "whether each token of the example story is inside a quotation")
EXAMPLE_CLOSING = Array("example_closing", ("position",), "bool",
                        "whether each token of the example story holds the closing mark of a "
                        "quotation", "with the model or its tokenizer")
EXAMPLE_ACTIVITY = Array("example_activity", ("position",), "float",
                         "activity of the best head on each token of the example story")
EXAMPLE_PATTERN = Array("example_pattern", PATTERN, "float",
                        "attention pattern of the best head on the example story", WITH_MODEL)
EXAMPLE_ATTN_TARGET = Array("example_attn_target", ("position",), "int",
                            "the position each token of the example story attends to most "
                            "under the best head", WITH_MODEL)
LAYOUT = Layout(STUDY, (
    RATIO, MEAN_IN, MEAN_OUT, T_STAT, T_PVALUE, WILCOXON_STAT, WILCOXON_PVALUE, EFFECT_SIZE,
    STORY_IDS, STORY_MEAN_IN, STORY_MEAN_OUT, ATTN_TO_OPEN, ATTN_AFTER_TO_OPEN, ATTN_TO_CLOSE,
    SHIFT_OFFSET, SHIFT_TO_OPEN, SHIFT_TO_CLOSE, TOP_HEADS, EXAMPLE_IDS, EXAMPLE_TOKENS,
    EXAMPLE_QUOTED, EXAMPLE_CLOSING, EXAMPLE_ACTIVITY, EXAMPLE_PATTERN, EXAMPLE_ATTN_TARGET))
# grids whose value at the best head goes into meta["best"]
BEST_KEYS = ("ratio", "mean_in", "mean_out", "t_stat", "t_pvalue", "wilcoxon_pvalue",
             "effect_size", "attn_to_open", "attn_after_to_open", "attn_to_close")
SHIFT_WINDOW = 4  # tokens before and after the closing mark in shift_to_open/close


class Quotation(NamedTuple):
    """One quotation of a story: token positions of its opening mark (-1: none found), of
    its first quoted token, one past its last quoted token, and of its closing mark (-1)."""

    open: int
    start: int
    end: int
    close: int


def quote_spans(quoted: np.ndarray, strings: list[str]) -> list[Quotation]:
    """Quotations of one story, one per maximal run of quoted tokens (see the module
    docstring); quoted [n_tok] bool, strings [n_tok] token texts."""
    q = np.asarray(quoted, dtype=bool)
    edges = np.flatnonzero(np.diff(np.r_[0, q.astype(np.int8), 0]))
    spans = []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        mark = next((p for p in (start, start - 1, start - 2)
                     if p >= 0 and is_quote_mark(strings[p])), -1)
        close = next((p for p in (end - 1, end, end + 1)
                      if mark < p < len(strings) and is_quote_mark(strings[p])), -1)
        spans.append(Quotation(mark, int(start), int(end), close))
    return spans


def per_story_activity(store: Any, stories: list[Story], quoted: np.ndarray,
                       positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-story mean activity inside and outside quotations.

    quoted, positions: token-table columns [n_tokens] of the whole store. Keeps the stories
    with tokens on both sides. Returns (kept story indices [n_s], inside [n_s, L, H],
    outside [n_s, L, H]). The store is read a block of stories at a time.
    """
    inside, outside = quoted, ~quoted & (positions > 0)
    n_in = np.array([np.count_nonzero(inside[s.start:s.stop]) for s in stories], dtype=int)
    n_out = np.array([np.count_nonzero(outside[s.start:s.stop]) for s in stories], dtype=int)
    keep = np.flatnonzero((n_in > 0) & (n_out > 0))
    sum_in, sum_out = activity_sums(store, stories, [inside, outside])
    mean_in = sum_in / np.maximum(n_in, 1)[:, None, None]
    mean_out = sum_out / np.maximum(n_out, 1)[:, None, None]
    return keep, mean_in[keep], mean_out[keep]


def paired_tests(inside: np.ndarray, outside: np.ndarray) -> dict[str, np.ndarray]:
    """Paired tests over stories of inside vs outside means [n_s, L, H] -> each [L, H]."""
    diff = inside - outside
    shape = diff.shape[1:]
    flat = diff.reshape(len(diff), -1)
    out: dict[str, np.ndarray] = {}
    if len(diff) >= 2:
        t = scipy_stats.ttest_1samp(flat, 0.0, axis=0)
        out["t_stat"], out["t_pvalue"] = t.statistic.reshape(shape), t.pvalue.reshape(shape)
        w_stat, w_p = np.full(flat.shape[1], np.nan), np.full(flat.shape[1], np.nan)
        for j in range(flat.shape[1]):
            if np.any(flat[:, j] != 0):
                res = scipy_stats.wilcoxon(flat[:, j])
                w_stat[j], w_p[j] = res.statistic, res.pvalue
        out["wilcoxon_stat"], out["wilcoxon_pvalue"] = w_stat.reshape(shape), w_p.reshape(shape)
        sd = flat.std(axis=0, ddof=1)
        out["effect_size"] = (flat.mean(0) / np.where(sd > 0, sd, np.nan)).reshape(shape)
    else:
        for key in ("t_stat", "t_pvalue", "wilcoxon_stat", "wilcoxon_pvalue", "effect_size"):
            out[key] = np.full(shape, np.nan)
    return out


def _targets(quote: Quotation, stop: int, quoted: np.ndarray
             ) -> list[tuple[str, np.ndarray, int]]:
    """(grid, query positions [q], position attended to) of the attention one quotation adds
    up; ``stop``: where the next quotation (or the story) begins."""
    inside = np.arange(max(quote.start, quote.open + 1), quote.end)
    later = np.arange(quote.end, stop)
    out = [("attn_to_open", inside, quote.open),
           ("attn_after_to_open", later[~quoted[later]], quote.open)]
    if quote.close >= 0:
        out.append(("attn_to_close", np.arange(quote.close, stop), quote.close))
    return out


class _Attention:
    """Sums of attention to the marks of quotations over the stories of a study, one layer
    at a time: :meth:`count` each quotation once, :meth:`add` it for every layer."""

    def __init__(self, n_layers: int, n_heads: int, window: int):
        grid = (n_layers, n_heads)
        self.offsets = np.arange(-window, window + 1)
        self.sums = {k: np.zeros(grid) for k in ("attn_to_open", "attn_after_to_open",
                                                  "attn_to_close")}
        self.counts = dict.fromkeys(self.sums, 0)
        self.shift = {k: np.zeros((2 * window + 1, *grid)) for k in ("open", "close")}
        self.shift_n = np.zeros(2 * window + 1, dtype=np.int64)
        self.uniform = 0.0
        self.n_closing = 0

    def _shift_rows(self, quote: Quotation, stop: int) -> np.ndarray:
        """Rows of ``offsets`` [r] whose token lies after the opening mark, before ``stop``."""
        at = quote.close + self.offsets
        return np.flatnonzero((at > quote.open) & (at < stop))

    def count(self, quote: Quotation, stop: int, quoted: np.ndarray) -> None:
        """Count the queries of one quotation (see :func:`_targets`)."""
        for name, queries, _ in _targets(quote, stop, quoted):
            self.counts[name] += len(queries)
            if name == "attn_to_open":
                self.uniform += float(np.sum(1.0 / (queries + 1)))
        if quote.close >= 0:
            self.n_closing += 1
            self.shift_n[self._shift_rows(quote, stop)] += 1

    def add(self, layer: int, pattern: torch.Tensor, quote: Quotation, stop: int,
            quoted: np.ndarray) -> None:
        """Add one quotation's attention under ``layer``; pattern [H, n, n]."""
        for name, queries, mark in _targets(quote, stop, quoted):
            if len(queries):
                self.sums[name][layer] += pattern[:, queries, mark].sum(-1).numpy()
        if quote.close < 0:
            return
        rows = self._shift_rows(quote, stop)
        self.shift["open"][rows, layer] += pattern[:, quote.close + self.offsets[rows],
                                                   quote.open].T.numpy()
        after = rows[self.offsets[rows] >= 0]
        self.shift["close"][after, layer] += pattern[:, quote.close + self.offsets[after],
                                                     quote.close].T.numpy()

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v / max(self.counts[k], 1) for k, v in self.sums.items()}
        n = np.maximum(self.shift_n, 1)[:, None, None]
        close = self.shift["close"] / n
        close[self.offsets < 0] = np.nan
        out.update({"shift_offset": self.offsets, "shift_to_open": self.shift["open"] / n,
                    "shift_to_close": close, "n_queries": self.counts["attn_to_open"],
                    "n_after": self.counts["attn_after_to_open"],
                    "n_close_queries": self.counts["attn_to_close"],
                    "n_closing": self.n_closing,
                    "uniform": self.uniform / max(self.counts["attn_to_open"], 1)})
        return out


def quote_attention(model: Any, stories: list[Story], quoted: list[np.ndarray],
                    strings: list[list[str]], window: int = SHIFT_WINDOW) -> dict[str, Any]:
    """Mean attention to the opening mark from quoted tokens and from tokens after the quote,
    and to the closing mark once it appears.

    Returns the grids [L, H] "attn_to_open", "attn_after_to_open", "attn_to_close"; around
    the closing mark "shift_offset" [2 window + 1], "shift_to_open" and "shift_to_close"
    [2 window + 1, L, H]; the counts "n_queries", "n_after", "n_close_queries",
    "n_closing" (quotations with a closing mark) and "uniform" (mean 1 / (position + 1)
    over the quoted queries).
    """
    acc = _Attention(model.cfg.n_layers, model.cfg.n_heads, window)
    marks: list[list[tuple[Quotation, int]]] = []       # per story: (quotation, stop)
    for story, q, text in zip(stories, quoted, strings, strict=True):
        # a window of a longer story may open inside a quotation: no mark, nothing to add
        spans = [s for s in quote_spans(q, text) if s.open >= 0]
        stops = [s.open for s in spans[1:]] + [len(story.input_ids)]
        marks.append(list(zip(spans, stops[:len(spans)], strict=True)))
        for quote, stop in marks[-1]:
            acc.count(quote, stop, q)

    def visit(i: int, layer: int, pattern: torch.Tensor) -> None:
        for quote, stop in marks[i]:
            acc.add(layer, pattern, quote, stop, quoted[i])

    visit_patterns(model, stories, visit)
    return acc.result()


def pick_example(stories: list[Story], quoted: list[np.ndarray], max_len: int = 120) -> int:
    """Index of a short story with many quoted tokens (the example for the report)."""
    best, best_key = 0, (-1.0, 0)
    for i, s in enumerate(stories):
        n = len(s.input_ids)
        key = (float(quoted[i].sum()) if n <= max_len else -n, -n)
        if key > best_key:
            best, best_key = i, key
    return best


def check_inputs(store: Any, model: Any, rank_by: str) -> None:
    """Refuse a store without activity, an unknown ranking, or a model of another shape."""
    if "activity" not in store.sites:
        raise UsageError(f"{store.path} has no 'activity' site (it has {', '.join(store.sites)})")
    if rank_by not in RANK_KEYS:
        raise UsageError(f"unknown {opt('rank_by')} {rank_by!r}; choose from "
                         f"{', '.join(RANK_KEYS)}")
    if rank_by == "attention" and model is None:
        raise UsageError(f"{opt('rank_by', 'attention')} needs the model ({opt('model')})")
    if model is not None and (model.cfg.n_layers != store.n_layers
                              or model.cfg.n_heads != store.n_heads):
        raise UsageError("the model's layers/heads do not match the store's")


def activity_arrays(stories: list[Story], mean_in: np.ndarray, mean_out: np.ndarray
                    ) -> dict[str, Any]:
    """Per-head grids [n_layers, n_heads] and the per-story means [n_s, n_layers, n_heads]
    of the kept ``stories`` [n_s] (see LAYOUT)."""
    avg_in, avg_out = mean_in.mean(0), mean_out.mean(0)
    return {"ratio": avg_in / np.where(avg_out > 0, avg_out, np.nan),
            "mean_in": avg_in, "mean_out": avg_out, **paired_tests(mean_in, mean_out),
            "story_ids": np.array([s.story_id for s in stories], dtype=np.int64),
            "story_mean_in": mean_in, "story_mean_out": mean_out}


def example_arrays(store: Any, model: Any, story: Story, quoted: np.ndarray,
                   strings: list[str] | None, head: tuple[int, int]) -> dict[str, Any]:
    """The example story under ``head``: per-token arrays [n_tok] and, with the model, the
    head's attention pattern [n_tok, n_tok] (destination x source)."""
    arrays: dict[str, Any] = {
        "example_activity": store.read("activity", head[0], head[1], index=story.rows),
        "example_quoted": quoted, "example_ids": story.input_ids}
    if strings is not None:
        arrays["example_tokens"] = np.array(strings)
        arrays["example_closing"] = np.zeros(len(strings), dtype=bool)
        closes = [q.close for q in quote_spans(quoted, strings) if q.close >= 0]
        arrays["example_closing"][closes] = True
    if model is not None:
        arrays["example_pattern"] = head_pattern(model, story, head)
        arrays["example_attn_target"] = arrays["example_pattern"].argmax(-1)
    return arrays


def quote_study(store: Any, model: Any = None, tokenizer: Any = None, split: str = "all",
                max_stories: int = 300, rank_by: str = "ratio", top_k: int = 10
                ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run the study on an open store; returns (arrays, meta, report).

    arrays are named and shaped as declared in LAYOUT: per-head grids [n_layers, n_heads],
    per-story means [n_stories, n_layers, n_heads], the example story [n_tok]; the attention
    arrays only with ``model``, the token texts with ``model`` or ``tokenizer``.
    """
    check_inputs(store, model, rank_by)
    tokenizer = model.tokenizer if model is not None else tokenizer
    if tokenizer is not None:
        store.check_vocabulary(tokenizer, "the model" if model is not None else "the tokenizer")
    table = store.tokens(["quoted", "position"])
    quoted_col = table["quoted"].astype(bool)
    stories = read_stories(store, split)
    keep, mean_in, mean_out = per_story_activity(store, stories, quoted_col, table["position"])
    if len(keep) == 0:
        raise UsageError(f"no story in {store.path} has tokens both inside and outside quotations")
    kept = [stories[i] for i in keep]
    arrays = activity_arrays(kept, mean_in, mean_out)
    quoted = [quoted_col[s.rows] for s in kept]
    attn: dict[str, Any] = {}
    if model is not None:
        chosen = kept[:max_stories]
        attn = quote_attention(model, chosen, quoted[:len(chosen)],
                               [token_strings(tokenizer, s.input_ids) for s in chosen])
        arrays.update({a.name: attn[a.name] for a in LAYOUT if a.when == WITH_MODEL
                       and a.name in attn})
    key = {"ratio": "ratio", "t": "t_stat", "attention": "attn_to_open"}[rank_by]
    ranked = top_heads(arrays[key], top_k)
    best = ranked[0]
    arrays["top_heads"] = np.array(ranked)
    ex = pick_example(kept, quoted)
    arrays.update(example_arrays(store, model, kept[ex], quoted[ex],
                                 None if tokenizer is None
                                 else token_strings(tokenizer, kept[ex].input_ids), best))
    meta = {
        "study": STUDY, "store": str(store.path), "split": split, "rank_by": rank_by,
        "n_stories": len(kept), "n_source_stories": source_stories(store, kept),
        "n_stories_attention": len(kept[:max_stories]) if attn else 0,
        "n_quoted_queries": attn.get("n_queries", 0), "n_after_queries": attn.get("n_after", 0),
        "n_closing": attn.get("n_closing", 0), "n_close_queries": attn.get("n_close_queries", 0),
        "uniform_attention": attn.get("uniform"), "best_head": list(best),
        "close_head": list(top_heads(attn["attn_to_close"], 1)[0]) if attn else None,
        "example_story_id": kept[ex].story_id,
        "best": {k: float(arrays[k][best]) for k in BEST_KEYS if k in arrays},
    }
    return arrays, meta, report(meta, arrays, ranked)


def source_stories(store: Any, kept: list[Story]) -> int:
    """How many stories the studied sequences come from (a story cut into windows gives
    several sequences, all with its ``parent_id``)."""
    parents = store.tokens(["parent_id"])["parent_id"]
    return len({int(parents[s.start]) for s in kept})


def with_quotations(meta: dict[str, Any]) -> str:
    """``40 stories with quotations``, or ``796 windows of 300 stories with quotations``
    when the store holds windows of longer stories."""
    n, stories = meta["n_stories"], meta.get("n_source_stories", meta["n_stories"])
    if stories == n:
        return f"{n} stories with quotations"
    return f"{n} windows of {stories} stories with quotations"


def report(meta: dict[str, Any], arrays: dict[str, Any], ranked: list[tuple[int, int]]) -> str:
    has_attn = "attn_to_open" in arrays
    header = ["head", "in/out", "mean in", "mean out", "t", "p (Wilcoxon)"]
    header += ["attn->open", "after->open", "close->close"] if has_attn else []
    rows = []
    for h in ranked:
        row = [head_label(*h), arrays["ratio"][h], arrays["mean_in"][h], arrays["mean_out"][h],
               arrays["t_stat"][h], arrays["wilcoxon_pvalue"][h]]
        if has_attn:
            row += [arrays["attn_to_open"][h], arrays["attn_after_to_open"][h],
                    arrays["attn_to_close"][h]]
        rows.append(row)
    lines = [f"Quotation heads from {meta['store']} ({with_quotations(meta)}, "
             f"split {meta['split']}); ranked by {meta['rank_by']}.", format_table(header, rows)]
    if has_attn:
        lines += [f"attention measured on {meta['n_quoted_queries']} quoted tokens of "
                  f"{meta['n_stories_attention']} stories (uniform attention would give "
                  f"{meta['uniform_attention']:.3f})"]
        for name, what in (("attn_to_open", "the opening mark"),
                           ("attn_to_close", "the closing mark once it appears")):
            lines += [f"heads attending most to {what}: " + ", ".join(
                f"{head_label(*h)} {arrays[name][h]:.3f}" for h in top_heads(arrays[name], 3))]
        lines += ["", shift_report(meta, arrays)]
    best = tuple(meta["best_head"])
    lines += ["", f"Example story {meta['example_story_id']} under {head_label(*best)}:"]
    tokens = arrays.get("example_tokens", arrays["example_ids"].astype(str))
    cells = []
    for i in example_window(np.asarray(arrays["example_quoted"])):
        tok = tokens[i]
        mark = "q" if arrays["example_quoted"][i] else ""
        target = ""
        if "example_attn_target" in arrays:
            j = int(arrays["example_attn_target"][i])
            target = f"{j} {str(tokens[j])!r}"
        cells.append((i, repr(str(tok)), mark, float(arrays["example_activity"][i]), target))
    lines.append(format_table(["pos", "token", "quoted", "activity", "attends most to"], cells))
    return "\n".join(lines)


def shift_report(meta: dict[str, Any], arrays: dict[str, Any]) -> str:
    """Attention of the best head and of the head attending most to the closing mark,
    to both marks, along the tokens around the closing mark."""
    heads = list(dict.fromkeys([tuple(meta["best_head"]), tuple(meta["close_head"])]))
    header = ["offset"] + [f"{head_label(*h)} {to}" for h in heads for to in ("->open",
                                                                             "->close")]
    rows = []
    for i, offset in enumerate(arrays["shift_offset"]):
        rows.append([f"{int(offset):+d}"] + [
            float(arrays[name][(i, *h)]) for h in heads
            for name in ("shift_to_open", "shift_to_close")])
    return (f"Around the closing mark of {meta['n_closing']} quotations (offset 0: the token "
            "holding it; nan: before it):\n" + format_table(header, rows))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_story_arguments(parser)
    parser.add_argument("--no-model", action="store_true",
                        help="activity statistics only; do not rerun stories for attention")
    parser.add_argument("--rank-by", default="ratio", choices=list(RANK_KEYS),
                        help="order of the report's head table (default ratio)")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with store_study(args, STUDY) as (out, store):
        name = model_name(args, store.attrs, required=False)
        model = tokenizer = None
        if name and not args.no_model:
            model = load_study_model(name, args.device, args.model_dtype)
        elif name:
            from headprobe.tokenization import load_tokenizer
            tokenizer = load_tokenizer(name)
        arrays, meta, text = quote_study(store, model, tokenizer, args.split, args.max_stories,
                                         args.rank_by, args.top)
    meta["model"] = name
    return finish_study(out, LAYOUT, arrays, meta, text, args.overwrite)
