"""Benchmark: the peak memory of one tagging shard, on a source and one 10x larger.

``python -m datasets_build bench --shard-rss K`` writes two text sources: the first
K × ``--stories`` stories of the corpus, and the same stories ``--rss-scale`` times over
(a corpus ten times larger by default). In a fresh process each, it builds the shard that
holds the first ``--stories`` stories (shard 0 of K of the small source, shard 0 of
``--rss-scale`` × K of the large one: the same stories, tagged the same way, while the
source around them grows) and prints each process's peak resident memory side by side,
with their ratio. A shard streams the source (a count pass, then up to its own last story)
and keeps only its own stories, so the ratio stays near 1; what grows is the split's
permutation over all source stories, 8 bytes a story while it is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets_build.sources import STORY_SEPARATOR
from headprobe.errors import UsageError
from headprobe.memory import run_child


def write_source(path: Path, texts: list[str], times: int = 1) -> Path:
    """A text source of ``texts``, ``times`` times over, in the file format of
    TinyStories (stories separated by ``<|endoftext|>``)."""
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(times):
            for text in texts:
                f.write(text + STORY_SEPARATOR)
    return path


def shard_child(source: str, tokenizer: str, out: str, shards: str) -> dict[str, Any]:
    """In a fresh process: build shard 0 of ``shards`` of ``source``; its memory, MiB."""
    from datasets_build.build import BuildOptions
    from datasets_build.shards import build_shard, shard_path
    from headprobe.manifest import read_json
    from headprobe.memory import current_rss_mb, peak_rss_mb

    before = current_rss_mb()
    opts = BuildOptions(source, tokenizer, Path(out), sharded=True)
    run = build_shard(opts, 0, int(shards))
    counts = read_json(shard_path(out, 0, int(shards)) / "manifest.json")["counts"]
    return {"imports_rss_mb": before, "peak_rss_mb": peak_rss_mb(), "n_tokens": run.n_tokens,
            "shard_stories": counts["parents"]}


def _measure(source: Path, tokenizer: str, work: Path, shards: int) -> dict[str, Any]:
    return run_child("datasets_build.bench_shard.shard_child",
                     [str(source), tokenizer, str(work / f"{source.stem}-dataset"), str(shards)],
                     f"tagging a shard of {source}")


def shard_rss(texts: list[str], tokenizer: str, shards: int, scale: int,
              work: Path) -> list[tuple[str, dict[str, Any]]]:
    """[("small", result), ("large", result)]: shard 0 of ``shards`` of a source of
    ``texts`` and shard 0 of ``scale`` × ``shards`` of ``texts`` ``scale`` times over,
    each tagged in a fresh process (:func:`shard_child`)."""
    if scale < 2 or shards < 1:
        raise UsageError("--rss-scale must be at least 2 and --shard-rss at least 1")
    small = write_source(work / "small.txt", texts)
    large = write_source(work / "large.txt", texts, scale)
    return [("small", {**_measure(small, tokenizer, work, shards),
                       "source_stories": len(texts)}),
            ("large", {**_measure(large, tokenizer, work, shards * scale),
                       "source_stories": len(texts) * scale})]


def print_shard_rss(rows: list[tuple[str, dict[str, Any]]], scale: int) -> None:
    """The two tagging shards' peak RSS side by side, and their ratio."""
    print("tagging one shard (datasets_build --shard), one fresh process each:")
    for name, res in rows:
        print(f"  {name:5s}: source {res['source_stories']:>7,d} stories, shard "
              f"{res['shard_stories']:>5,d} stories ({res['n_tokens']:,d} tokens), peak RSS "
              f"{res['peak_rss_mb']:6.0f} MiB (+{res['peak_rss_mb'] - res['imports_rss_mb']:.0f}"
              " MiB after imports)")
    (_, a), (_, b) = rows
    print(f"  ratio of peak RSS, {scale}x larger source: "
          f"{b['peak_rss_mb'] / a['peak_rss_mb']:.3f}")
