"""Benchmark: the memory of planning one extraction shard, on a dataset and one 10x larger.

``python -m extract bench --plan-rss [--stories 3000] [--plan-shards 50]`` tokenizes the
first N stories of the shared validation text (no tags: :mod:`datasets_build.untagged`),
writes a second dataset holding those stories ``--plan-scale`` times over (ids renumbered,
so it is a corpus ten times larger), and plans shard 0 of ``--plan-shards`` of each in a
fresh process (:func:`extract.plan.plan_extraction`: the model loaded, the shard's stories
read). It prints each process's peak resident memory side by side, with the increase over
the same process after its imports, and their ratio: a shard reads only its own rows of
the token table and a few integers per story, so the ratio stays near 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.dataset import load_tagged_dataset, write_dataset
from headprobe.atomic import atomic_dir
from headprobe.errors import UsageError
from headprobe.memory import current_rss_mb, peak_rss_mb, run_child


def repeat_dataset(source: Path, out: Path, times: int) -> Path:
    """Write ``out``: the dataset ``source`` ``times`` times over, each copy's stories
    renumbered after the last (token ids, tags and splits as in the source)."""
    dataset = load_tagged_dataset(source)
    tokens, stories = dataset.token_table(), dataset.story_table()
    n_ids, n_rows = int(stories["story_id"].max()) + 1, dataset.n_tokens
    shifted = {"story_id": n_ids, "parent_id": n_ids, "token_start": n_rows}
    rep_tokens = {k: np.concatenate([v + shifted.get(k, 0) * i for i in range(times)])
                  for k, v in tokens.items()}
    rep_stories = {k: (list(v) * times if k == "text" else np.concatenate(
        [np.asarray(v) + shifted.get(k, 0) * i for i in range(times)])) for k, v in
        stories.items()}
    manifest = {k: v for k, v in dataset.manifest.items() if k not in ("format",
                                                                       "format_version")}
    with atomic_dir(out) as tmp:
        write_dataset(tmp, rep_tokens, rep_stories, dataset.tags,
                      {**manifest, "n_tokens": len(rep_tokens["input_id"]),
                       "n_stories": len(rep_stories["story_id"])})
    return out


def plan_child(dataset: str, model: str, out: str, shards: str) -> dict[str, Any]:
    """In a fresh process: plan shard 0 of ``shards`` of ``dataset``; its memory, MiB."""
    from extract.options import ExtractOptions
    from extract.plan import plan_extraction

    before = current_rss_mb()
    options = ExtractOptions(dataset, model, out, shard=(0, int(shards)))
    plan = plan_extraction(options)
    return {"imports_rss_mb": before, "peak_rss_mb": peak_rss_mb(), "n_rows": plan.n_rows,
            "n_tokens": load_tagged_dataset(dataset).n_tokens}


def _measure(dataset: Path, model: str, work: Path, shards: int) -> dict[str, Any]:
    return run_child("extract.bench_plan.plan_child",
                     [str(dataset), model, str(work / f"{dataset.name}.h5"), str(shards)],
                     f"planning a shard of {dataset}")


def run_plan_rss(args: argparse.Namespace, work: Path) -> int:
    """Print the peak RSS of planning shard 0 of ``args.plan_shards`` on a dataset of
    ``args.stories`` stories and on the same stories ``args.plan_scale`` times over."""
    from datasets_build.untagged import write_untagged_dataset
    from extract.bench import read_stories
    from headprobe.tokenization import load_tokenizer

    if args.plan_scale < 2 or args.plan_shards < 1:
        raise UsageError("--plan-scale must be at least 2 and --plan-shards positive")
    texts = read_stories(args.text, args.stories)
    small = write_untagged_dataset(work / "small", texts, load_tokenizer(args.model))
    large = repeat_dataset(small, work / "large", args.plan_scale)
    rows = [(name, _measure(path, args.model, work, args.plan_shards))
            for name, path in (("small", small), ("large", large))]
    print(f"planning shard 0 of {args.plan_shards}, model {args.model}, one fresh process "
          "each:")
    for name, res in rows:
        print(f"  {name:5s}: dataset {res['n_tokens']:>9,d} tokens, shard {res['n_rows']:>8,d} "
              f"rows, peak RSS {res['peak_rss_mb']:6.0f} MiB "
              f"(+{res['peak_rss_mb'] - res['imports_rss_mb']:.0f} MiB after imports)")
    (_, a), (_, b) = rows
    print(f"  ratio of peak RSS, {args.plan_scale}x larger dataset: "
          f"{b['peak_rss_mb'] / a['peak_rss_mb']:.3f}")
    return 0
