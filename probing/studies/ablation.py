"""Head ablation: which predictions get worse when some heads are switched off?

The chosen heads' outputs are replaced on ``blocks.L.attn.hook_z`` by zero (``zero``) or by
their mean over the test tokens (``mean``, BOS left out). For every fine tag T, the change
in next-token loss over the tokens *predicted* that carry tag T, against the same change
when random heads are ablated instead: the same number of heads in each layer (drawn from
the heads not chosen), over several draws.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from headprobe.cli import split_list
from headprobe.errors import UsageError, opt
from headprobe.heads import head_label, parse_heads
from headprobe.hooks import hook_name, hook_pattern, layer_hooks
from headprobe.stories import Story, read_stories
from probing.studies.common import (
    add_output_arguments,
    add_story_arguments,
    check_context,
    finish_study,
    format_table,
    load_study_model,
    model_batches,
    model_name,
    next_token_loss,
    padded,
    run_hooked,
    store_study,
)
from probing.study_io import Array, Layout

HELP = "per-tag loss change when heads are ablated, against random heads of the same layers"
STUDY = "ablate"
MODES = ("zero", "mean")

Heads = Sequence[tuple[int, int]]

TAGS = Array("tags", ("tag",), "str", "fine tags the predicted tokens carry")
COUNT = Array("count", ("tag",), "int", "predicted tokens of each tag")
BASE_LOSS = Array("base_loss", ("tag",), "float",
                  "mean loss (nats) of the unablated model on predicted tokens of each tag")
ABLATED_DELTA = Array("ablated_delta", ("tag",), "float",
                      "mean loss change (nats) on predicted tokens of each tag when the chosen "
                      "heads are ablated")
RANDOM_DELTA = Array("random_delta", ("draw", "tag"), "float",
                     "the same for each draw of random heads (same count per layer)")
RANDOM_HEADS = Array("random_heads", ("draw",), "str",
                     "the random heads of each draw, as LAYER.HEAD,...")
HEADS = Array("heads", ("head", "layer/head"), "int", "(layer, head) of the ablated heads")
LAYOUT = Layout(STUDY, (TAGS, COUNT, BASE_LOSS, ABLATED_DELTA, RANDOM_DELTA, RANDOM_HEADS,
                        HEADS))


def ablation_hooks(heads: Heads, mode: str, mean_z: torch.Tensor | None = None
                   ) -> list[tuple[str, Any]]:
    """Hooks on ``hook_z`` that ablate ``heads``; mean_z [n_layers, n_heads, d_head] for mean."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    hooks = []
    for layer, hs in by_layer.items():
        idx = torch.tensor(hs)

        def hook(z: torch.Tensor, hook: Any, layer=layer, idx=idx) -> torch.Tensor:
            if mode == "zero":
                z[:, :, idx] = 0.0
            else:
                z[:, :, idx] = mean_z[layer, idx].to(z.dtype)
            return z

        hooks.append((hook_name("z", layer), hook))
    return hooks


def story_losses(model: Any, stories: list[Story], n_rows: int,
                 hooks: Sequence[tuple[str, Any]] = (), device: str = "cpu") -> np.ndarray:
    """Loss of predicting every story token from its prefix, by store row: [n_rows].

    Rows not predicted (BOS, rows of other stories) are NaN.
    """
    out = np.full(n_rows, np.nan)
    for group in model_batches(model, stories):
        tokens = padded([s.input_ids for s in group], device)
        loss = next_token_loss(run_hooked(model, tokens, hooks), tokens).cpu().numpy()
        for i, s in enumerate(group):
            out[s.rows[1:]] = loss[i, :len(s.input_ids) - 1]
    return out


def mean_z(model: Any, stories: list[Story], device: str = "cpu") -> torch.Tensor:
    """Mean of ``hook_z`` over the stories' tokens (BOS left out): [n_layers, n_heads, d_head]."""
    cfg = model.cfg
    total = torch.zeros(cfg.n_layers, cfg.n_heads, cfg.d_head, dtype=torch.float64)
    count = 0
    for group in model_batches(model, stories):
        tokens = padded([s.input_ids for s in group], device)
        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        for i, s in enumerate(group):
            mask[i, 1:len(s.input_ids)] = True
        count += int(mask.sum())

        def keep(z: torch.Tensor, hook: Any, mask=mask) -> None:
            total[hook.layer()] += z[mask.to(z.device)].double().sum(0).cpu()

        run_hooked(model, tokens, [(name, keep) for name in layer_hooks("z", cfg.n_layers)])
    return (total / max(count, 1)).float()


def random_head_sets(heads: Heads, n_heads: int, draws: int, seed: int = 0
                     ) -> list[list[tuple[int, int]]]:
    """``draws`` sets with as many heads per layer as ``heads``, drawn from the other heads."""
    rng = np.random.default_rng(seed)
    by_layer: dict[int, set[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, set()).add(head)
    sets = []
    for _ in range(draws):
        chosen = []
        for layer, hs in sorted(by_layer.items()):
            others = [h for h in range(n_heads) if h not in hs]
            if len(others) < len(hs):
                raise UsageError(f"layer {layer} has too few other heads for a random control "
                                 f"({len(hs)} chosen of {n_heads})")
            chosen += [(layer, int(h)) for h in rng.choice(others, len(hs), replace=False)]
        sets.append(chosen)
    return sets


def per_tag(delta: np.ndarray, tags: np.ndarray, n_tags: int) -> np.ndarray:
    """Mean of ``delta`` [n_rows] per tag id (NaN rows ignored): [n_tags]."""
    ok = ~np.isnan(delta)
    sums = np.bincount(tags[ok], weights=delta[ok], minlength=n_tags)
    counts = np.bincount(tags[ok], minlength=n_tags)
    return sums / np.where(counts > 0, counts, np.nan)


def ablation_study(store: Any, model: Any, heads: Heads, mode: str = "zero", draws: int = 5,
                   split: str = "test", max_stories: int = 200, seed: int = 0
                   ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run the study; returns (arrays, meta, report).

    arrays are named and shaped as declared in LAYOUT: per-tag numbers [n_tags] over the tags
    that occur, random-head controls [draws, n_tags], the ablated heads [n, 2].
    """
    if mode not in MODES:
        raise UsageError(f"unknown {opt('mode')} {mode!r}; choose from {', '.join(MODES)}")
    if draws < 1:
        raise UsageError(f"{opt('draws')} must be at least 1")
    if model.cfg.n_layers != store.n_layers or model.cfg.n_heads != store.n_heads:
        raise UsageError("the model's layers/heads do not match the store's")
    store.check_vocabulary(model.tokenizer, "the model")
    stories = [s for s in read_stories(store, split) if len(s.input_ids) > 1][:max_stories]
    if not stories:
        raise UsageError(f"the store has no stories in split {split!r}")
    check_context(model, stories)
    tags = store.tokens(["fine_tag"])["fine_tag"].astype(np.int64)
    names = list(store.tags["fine"])
    n_tags = max(len(names), int(tags.max()) + 1)
    means = mean_z(model, stories) if mode == "mean" else None
    base = story_losses(model, stories, store.n_tokens)
    ablated = story_losses(model, stories, store.n_tokens, ablation_hooks(heads, mode, means))
    random_sets = random_head_sets(heads, model.cfg.n_heads, draws, seed)
    random_delta, random_total = [], []
    for hs in random_sets:
        loss = story_losses(model, stories, store.n_tokens, ablation_hooks(hs, mode, means))
        random_delta.append(per_tag(loss - base, tags, n_tags))
        random_total.append(float(np.nanmean(loss - base)))
    counts = np.bincount(tags[~np.isnan(base)], minlength=n_tags)
    present = np.flatnonzero(counts > 0)
    delta = per_tag(ablated - base, tags, n_tags)[present]
    rand = np.stack(random_delta)[:, present]
    label = ",".join(f"{layer}.{head}" for layer, head in heads)
    arrays = {
        "tags": np.array([names[i] if i < len(names) else str(i) for i in present]),
        "count": counts[present], "base_loss": per_tag(base, tags, n_tags)[present],
        "ablated_delta": delta, "random_delta": rand,
        "random_heads": np.array([",".join(f"{layer}.{h}" for layer, h in hs)
                                  for hs in random_sets]),
        "heads": np.array(heads),
    }
    meta = {
        "study": STUDY, "store": str(store.path), "heads": label, "mode": mode,
        "random_draws": draws, "seed": seed, "split": split, "n_stories": len(stories),
        "n_predictions": int(counts.sum()),
        "ablated_delta_all": float(np.nanmean(ablated - base)),
        "random_delta_all": random_total, "base_loss_all": float(np.nanmean(base)),
        "hook": hook_pattern("z"),
    }
    return arrays, meta, report(meta, arrays)


def report(meta: dict[str, Any], arrays: dict[str, Any]) -> str:
    rand_mean = arrays["random_delta"].mean(0)
    excess = arrays["ablated_delta"] - rand_mean
    order = np.argsort(-excess, kind="stable")
    heads = ", ".join(head_label(int(a), int(b)) for a, b in arrays["heads"])
    rows = [(arrays["tags"][i], int(arrays["count"][i]), arrays["base_loss"][i],
             arrays["ablated_delta"][i], rand_mean[i], excess[i]) for i in order]
    lines = [f"{meta['mode'].capitalize()}-ablation of {heads} on {meta['n_stories']} "
             f"{meta['split']} stories ({meta['n_predictions']} predicted tokens).",
             f"overall loss {meta['base_loss_all']:.4f}; change {meta['ablated_delta_all']:+.4f} "
             f"(random heads, {meta['random_draws']} draws: "
             f"{np.mean(meta['random_delta_all']):+.4f})", "",
             "Per tag of the predicted token, sorted by excess over random heads:",
             format_table(["tag", "tokens", "loss", "change", "random change", "excess"], rows)]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_story_arguments(parser, split="test", max_stories=200, top=False)
    parser.add_argument("--heads", required=True, metavar="L.H,...", help="heads to ablate")
    parser.add_argument("--mode", default="zero", choices=list(MODES),
                        help="replace the heads' output by zero or by its mean (default zero)")
    parser.add_argument("--random-draws", type=int, default=5,
                        help="random head sets for the control (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with store_study(args, STUDY) as (out, store):
        heads = parse_heads(split_list(args.heads), store.n_layers, store.n_heads)
        name = model_name(args, store.attrs)
        model = load_study_model(name, args.device, args.model_dtype)
        arrays, meta, text = ablation_study(store, model, heads, args.mode, args.random_draws,
                                            args.split, args.max_stories, args.seed)
    meta["model"] = name
    return finish_study(out, LAYOUT, arrays, meta, text, args.overwrite)
