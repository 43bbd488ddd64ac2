"""Part-of-speech induction heads: active just before a tag, attending to earlier tokens of it.

For a tag set T (``--before VBD``, ``--before NN,NNS``), the *before* positions of a story
are the tokens whose next token has a tag in T and which have at least one earlier token
(at or before them) tagged T. At each such position and for every head, the score is the
attention paid to all earlier T tokens (patterns from ``blocks.L.attn.hook_pattern``).
The same score at the other positions that also have an earlier T token is the
random-position baseline (the expectation of the score at a random such position); the
score a uniform head would get is reported too.

The activation store gives each head's activity at the before positions against its
mean activity over all tokens (BOS left out).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from headprobe.cli import split_list
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
    load_study_model,
    model_name,
    store_study,
    top_heads,
    visit_patterns,
)
from probing.study_io import LAYER_HEAD, PATTERN, Array, Layout

HELP = "heads active before a part-of-speech tag that attend to earlier tokens of that tag"
STUDY = "tag-induction"

SCORE_BEFORE = Array("score_before", LAYER_HEAD, "float",
                     "mean attention from tokens just before a tag token to all earlier "
                     "tokens of the tag")
SCORE_RANDOM = Array("score_random", LAYER_HEAD, "float",
                     "the same at the other positions that have an earlier tag token")
SCORE_DIFF = Array("score_diff", LAYER_HEAD, "float", "score_before - score_random")
ACTIVITY_BEFORE = Array("activity_before", LAYER_HEAD, "float",
                        "mean activity at the before positions")
ACTIVITY_ALL = Array("activity_all", LAYER_HEAD, "float",
                     "mean activity over all tokens of the stories (BOS left out)")
ACTIVITY_RATIO = Array("activity_ratio", LAYER_HEAD, "float", "activity_before / activity_all")
TOP_HEADS = Array("top_heads", ("rank", "layer/head"), "int",
                  "(layer, head) of the best heads by score_diff, best first")
EXAMPLE_TOKENS = Array("example_tokens", ("position",), "str",
                       "text of each token of the example story")
EXAMPLE_TAGS = Array("example_tags", ("position",), "str",
                     "tag of each token of the example story")
EXAMPLE_IS_TAG = Array("example_is_tag", ("position",), "bool",
                       "whether each token of the example story carries a studied tag")
EXAMPLE_BEFORE = Array("example_before", ("position",), "bool",
                       "whether each token of the example story is a before position")
EXAMPLE_ACTIVITY = Array("example_activity", ("position",), "float",
                         "activity of the best head on each token of the example story")
EXAMPLE_PATTERN = Array("example_pattern", PATTERN, "float",
                        "attention pattern of the best head on the example story")
EXAMPLE_ATTN_TARGET = Array("example_attn_target", ("position",), "int",
                            "the position each token of the example story attends to most "
                            "under the best head")
LAYOUT = Layout(STUDY, (
    SCORE_BEFORE, SCORE_RANDOM, SCORE_DIFF, ACTIVITY_BEFORE, ACTIVITY_ALL, ACTIVITY_RATIO,
    TOP_HEADS, EXAMPLE_TOKENS, EXAMPLE_TAGS, EXAMPLE_IS_TAG, EXAMPLE_BEFORE, EXAMPLE_ACTIVITY,
    EXAMPLE_PATTERN, EXAMPLE_ATTN_TARGET))


def resolve_tags(tags: dict[str, list[str]], text: str) -> tuple[str, list[int], list[str]]:
    """``"VBD"`` or ``"NN,NNS"`` -> (kind 'fine' or 'coarse', tag ids, tag names)."""
    names = split_list(text)
    if not names:
        raise UsageError(f"give {opt('before')} TAG[,TAG...]")
    for kind in ("fine", "coarse"):
        if all(n in tags.get(kind, []) for n in names):
            return kind, [tags[kind].index(n) for n in names], names
    known = ", ".join(tags.get("fine", []))
    raise UsageError(f"unknown tag(s) in {text!r}; fine tags of this store: {known}")


def positions_of(is_tag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(before positions, other positions) of one story; is_tag [n_tok] bool.

    Both only hold positions i with an earlier tag token j <= i; before positions are
    those whose next token carries the tag.
    """
    n = len(is_tag)
    seen = np.cumsum(is_tag) > 0                                  # a tag token at j <= i
    eligible = seen[:n - 1]
    nxt = is_tag[1:]
    idx = np.arange(n - 1)
    return idx[eligible & nxt], idx[eligible & ~nxt]


def tag_attention(pattern: Any, is_tag: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Attention from each of ``positions`` to earlier tag tokens, summed over them.

    pattern: [..., n_tok, n_tok] tensor (causal, so later tokens get no attention), e.g.
    [L, H, n, n] or one layer's [H, n, n]; returns the leading axes ([L, H] or [H]).
    """
    if len(positions) == 0:
        return np.zeros(pattern.shape[:-2])
    cols = np.flatnonzero(is_tag)
    block = pattern[..., positions, :][..., cols]                 # [..., n_pos, n_tag]
    return block.sum(-1).sum(-1).numpy()


def induction_scores(model: Any, stories: list[Story], is_tag: list[np.ndarray]
                     ) -> dict[str, Any]:
    """Mean attention to earlier tag tokens at before positions and at the other positions."""
    n_l, n_h = model.cfg.n_layers, model.cfg.n_heads
    sums = {"before": np.zeros((n_l, n_h)), "other": np.zeros((n_l, n_h))}
    counts = {"before": 0, "other": 0}
    uniform = 0.0
    positions = [positions_of(tag) for tag in is_tag]
    for tag, (before, other) in zip(is_tag, positions, strict=True):
        counts["before"] += len(before)
        counts["other"] += len(other)
        uniform += float(np.sum(np.cumsum(tag)[before] / (before + 1)))

    def visit(i: int, layer: int, pattern: Any) -> None:
        for name, pos in zip(("before", "other"), positions[i], strict=True):
            sums[name][layer] += tag_attention(pattern, is_tag[i], pos)

    visit_patterns(model, stories, visit)
    return {"score_before": sums["before"] / max(counts["before"], 1),
            "score_random": sums["other"] / max(counts["other"], 1),
            "n_before": counts["before"], "n_other": counts["other"],
            "uniform": uniform / max(counts["before"], 1)}


def activity_means(store: Any, stories: list[Story], is_tag: list[np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean activity [L, H] at before positions and over all non-BOS tokens of ``stories``
    (the store is read a block of stories at a time)."""
    before = np.zeros(store.n_tokens, dtype=bool)
    later = np.zeros(store.n_tokens, dtype=bool)
    for s, t in zip(stories, is_tag, strict=True):
        before[s.rows[positions_of(t)[0]]] = True
        later[s.start + 1:s.stop] = True
    sum_before, sum_all = (total.sum(0) for total in activity_sums(store, stories,
                                                                   [before, later]))
    n_before, n_all = int(before.sum()), int(later.sum())
    mean_before = sum_before / n_before if n_before else np.full(sum_before.shape, np.nan)
    return mean_before, sum_all / max(n_all, 1)


def pick_example(stories: list[Story], is_tag: list[np.ndarray], max_len: int = 120) -> int:
    """A short story with many before positions."""
    keys = [(len(positions_of(t)[0]) if len(s.input_ids) <= max_len else -len(s.input_ids))
            for s, t in zip(stories, is_tag, strict=True)]
    return int(np.argmax(keys))


def example_arrays(store: Any, model: Any, story: Story, is_tag: np.ndarray,
                   tag_column: np.ndarray, tag_names: list[str], head: tuple[int, int]
                   ) -> dict[str, Any]:
    """The example story under ``head``: per-token arrays [n_tok] (is_tag and tag_column are
    [n_tok] too) and the head's attention pattern [n_tok, n_tok] (destination x source)."""
    example_pattern = head_pattern(model, story, head)
    return {
        "example_tokens": np.array(token_strings(model.tokenizer, story.input_ids)),
        "example_tags": np.array([tag_names[int(t)] for t in tag_column]),
        "example_is_tag": is_tag,
        "example_before": np.isin(np.arange(len(story.input_ids)), positions_of(is_tag)[0]),
        "example_activity": store.read("activity", head[0], head[1], index=story.rows),
        "example_pattern": example_pattern,
        "example_attn_target": example_pattern.argmax(-1),
    }


def tag_induction_study(store: Any, model: Any, before: str, split: str = "all",
                        max_stories: int = 300, top_k: int = 10
                        ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run the study; returns (arrays, meta, report).

    arrays are named and shaped as declared in LAYOUT: per-head grids [n_layers, n_heads],
    the example story [n_tok] and its pattern under the best head [n_tok, n_tok].
    """
    if "activity" not in store.sites:
        raise UsageError(f"{store.path} has no 'activity' site (it has {', '.join(store.sites)})")
    if model.cfg.n_layers != store.n_layers or model.cfg.n_heads != store.n_heads:
        raise UsageError("the model's layers/heads do not match the store's")
    store.check_vocabulary(model.tokenizer, "the model")
    kind, ids, names = resolve_tags(store.tags, before)
    column = store.tokens([f"{kind}_tag"])[f"{kind}_tag"]
    stories = [s for s in read_stories(store, split) if len(s.input_ids) > 1][:max_stories]
    is_tag = [np.isin(column[s.rows], ids) for s in stories]
    scores = induction_scores(model, stories, is_tag)
    if scores["n_before"] == 0:
        raise UsageError(f"no token before a {before} token with an earlier {before} token in "
                         f"the {len(stories)} stories")
    act_before, act_all = activity_means(store, stories, is_tag)
    diff = scores["score_before"] - scores["score_random"]
    ranked = top_heads(diff, top_k)
    best = ranked[0]
    ex = pick_example(stories, is_tag)
    story = stories[ex]
    arrays: dict[str, Any] = {
        "score_before": scores["score_before"], "score_random": scores["score_random"],
        "score_diff": diff, "activity_before": act_before, "activity_all": act_all,
        "activity_ratio": act_before / np.where(act_all > 0, act_all, np.nan),
        "top_heads": np.array(ranked),
        **example_arrays(store, model, story, is_tag[ex], column[story.rows],
                         store.tags[kind], best),
    }
    meta = {
        "study": STUDY, "store": str(store.path), "before": names, "tag_kind": kind,
        "split": split, "n_stories": len(stories), "n_before": scores["n_before"],
        "n_other": scores["n_other"], "uniform_score": scores["uniform"],
        "best_head": list(best), "example_story_id": story.story_id,
        "best": {k: float(arrays[k][best]) for k in
                 ("score_before", "score_random", "score_diff", "activity_before",
                  "activity_all", "activity_ratio")},
    }
    return arrays, meta, report(meta, arrays, ranked)


def report(meta: dict[str, Any], arrays: dict[str, Any], ranked: list[tuple[int, int]]) -> str:
    tags = ",".join(meta["before"])
    rows = [(head_label(*h), arrays["score_before"][h], arrays["score_random"][h],
             arrays["score_diff"][h], arrays["activity_ratio"][h]) for h in ranked]
    lines = [f"Induction heads for {tags}: {meta['n_before']} positions before a {tags} token "
             f"in {meta['n_stories']} stories ({meta['n_other']} other positions as baseline; "
             f"a uniform head would score {meta['uniform_score']:.3f}).",
             format_table(["head", "attn before", "attn random", "difference",
                           "activity before/all"], rows), "",
             f"Example story {meta['example_story_id']} under "
             f"{head_label(*meta['best_head'])} (* = before position):"]
    tokens = arrays["example_tokens"]
    cells = []
    for i in example_window(np.asarray(arrays["example_before"])):
        tok = tokens[i]
        j = int(arrays["example_attn_target"][i])
        cells.append((i, repr(str(tok)), arrays["example_tags"][i],
                      "*" if arrays["example_before"][i] else "",
                      float(arrays["example_activity"][i]), f"{j} {str(tokens[j])!r}"))
    lines.append(format_table(["pos", "token", "tag", "before", "activity", "attends most to"],
                              cells))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_story_arguments(parser)
    parser.add_argument("--before", required=True, metavar="TAG[,TAG]",
                        help="tag(s) whose preceding tokens are studied, e.g. VBD or NN,NNS")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with store_study(args, STUDY) as (out, store):
        name = model_name(args, store.attrs)
        model = load_study_model(name, args.device, args.model_dtype)
        arrays, meta, text = tag_induction_study(store, model, args.before, args.split,
                                                 args.max_stories, args.top)
    meta["model"] = name
    return finish_study(out, LAYOUT, arrays, meta, text, args.overwrite)
