"""Benchmark: tagged tokens per second, the tagging path of a build vs a plain loop.

Both sides run in one process on the same stories and the same pipeline package:

* plain loop: ``nlp(text)`` per story with every component of the pipeline;
* headprobe: ``nlp.pipe`` in batches with only tok2vec and tagger, the attribute_ruler's
  rules applied as a lookup table (``tagging.RulerTable``), optionally in several processes.

The two sides alternate for a few rounds and each keeps its fastest round, so a burst of
load from other programs does not favour either side.

A third side times what a build adds for stories longer than ``--max-tokens``: the
pipeline's sentence recogniser run alone (``tagging.sentence_starts``), reported as a rate
and as a share of the build's tagging time (the cost when every story needs cutting).

Per core, side by side: the whole tagging work of a build shard
(:func:`datasets_build.build.tag_and_align`: tag, tokenize for the model, align, cut) against
a plain ``nlp.pipe`` loop with the full pipeline that reads each token's tag, both in
tokens per CPU second of one process (the rate one core of a ``--shard``/``--ray`` run
gives; n cores give about n times it).

``--shard-rss K`` adds the peak memory of one tagging shard on a source and on one ten times
larger, each in a fresh process (:mod:`datasets_build.bench_shard`).

Both tagging sides convert their Docs with the same code. The benchmark checks that the fine
tags are identical and reports how often the coarse tags agree (a few attribute_ruler rules look at
dependency labels, which only the parser sets). Outside the timing it also tags the stories
once with the reduced pipeline running the attribute_ruler itself and checks that the table
gives the same fine and coarse tags.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.build import DEFAULT_BATCH_SIZE
from datasets_build.sources import collect_stories, open_source
from datasets_build.tagging import (
    DocConverter,
    StoryTags,
    load_pipeline,
    ruler_name,
    sentence_component,
    sentence_starts,
    tag_stories,
)
from headprobe.cli import Parser
from headprobe.errors import UsageError

WARMUP_STORIES = 8


def default_corpus() -> Path:
    """valid-3117.txt in the shared folder ($HEADPROBE_SHARED, else ../shared)."""
    shared = os.environ.get("HEADPROBE_SHARED") or Path(__file__).resolve().parents[2] / "shared"
    return Path(shared) / "data" / "tinystories" / "valid-3117.txt"


def _same_fine_tags(a: list[StoryTags], b: list[StoryTags]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x.start, y.start) and np.array_equal(x.fine, y.fine)
        for x, y in zip(a, b, strict=True))


def _same_tags(a: list[StoryTags], b: list[StoryTags]) -> bool:
    return _same_fine_tags(a, b) and all(
        np.array_equal(x.coarse, y.coarse) for x, y in zip(a, b, strict=True))


def _ruler_reference(spacy_model: str | None, texts: list[str],
                     batch_size: int) -> list[StoryTags] | None:
    """Tags from the reduced pipeline with its attribute_ruler running; None when the build
    path runs the ruler anyway (no table to check)."""
    nlp = load_pipeline(spacy_model)
    ruler = ruler_name(nlp)
    if ruler is None or ruler not in nlp.disabled:
        return None
    nlp.enable_pipe(ruler)
    return list(tag_stories(nlp, texts, batch_size=batch_size))


def _coarse_agreement(a: list[StoryTags], b: list[StoryTags]) -> float:
    same = sum(int(np.sum(x.coarse == y.coarse)) for x, y in zip(a, b, strict=True))
    return same / max(1, sum(len(x) for x in a))


def default_tokenizer() -> Path:
    """The shared model's directory (its tokenizer), beside the default corpus."""
    return default_corpus().parents[2] / "models" / "tinystories-8L"


def _shard_work(source: str, tokenizer: str, texts: list[str], batch_size: int,
                spacy_model: str | None) -> Callable[[], Any]:
    """What a build shard does to ``texts`` but the writing, ready to time."""
    from datasets_build.build import (
        BuildOptions,
        context_limit,
        open_tagger,
        prepare_tokenizer,
        tag_and_align,
    )

    opts = BuildOptions(source, tokenizer, Path(), batch_size=batch_size,
                        spacy_model=spacy_model, sharded=True)
    prepared = prepare_tokenizer(opts, open_source(source), texts)
    nlp, vocab = open_tagger(opts)
    limit = context_limit(opts, prepared)["max_tokens"]
    return lambda: tag_and_align(opts, texts, prepared, nlp, vocab, limit)


def per_core(source: str, tokenizer: str, texts: list[str], batch_size: int,
             spacy_model: str | None, rounds: int) -> dict[str, float]:
    """Tokens per CPU second of a build shard's tagging and of a plain full-pipeline
    ``nlp.pipe`` loop over ``texts``, each its best of ``rounds``."""
    full = load_pipeline(spacy_model, full=True)
    shard = _shard_work(source, tokenizer, texts, batch_size, spacy_model)

    def pipe() -> list[list[str]]:
        return [[t.tag_ for t in doc] for doc in full.pipe(texts, batch_size=batch_size)]

    pipe()                                    # first calls allocate; keep them out
    cpu = {"pipe": np.inf, "shard": np.inf}
    for _ in range(rounds):
        tags, _, seconds = _timed(pipe)
        cpu["pipe"] = min(cpu["pipe"], seconds)
        stories, _, seconds = _timed(shard)
        cpu["shard"] = min(cpu["shard"], seconds)
    n_spacy = sum(len(t) for t in tags)
    n_model = sum(len(ids) for ids in stories.ids)
    return {"pipe_per_core": n_spacy / cpu["pipe"], "shard_per_core": n_spacy / cpu["shard"],
            "shard_model_per_core": n_model / cpu["shard"], "model_tokens": n_model,
            "per_core_speedup": cpu["pipe"] / cpu["shard"]}


def _timed(fn: Callable[[], list[Any]]) -> tuple[list[Any], float, float]:
    """(result, wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_bench(source: str, stories: int = 200, batch_size: int = DEFAULT_BATCH_SIZE,
              n_process: int = 1, spacy_model: str | None = None,
              rounds: int = 2) -> dict[str, Any]:
    """Time both tagging paths on the first ``stories`` stories, alternating for ``rounds``
    rounds and keeping each side's fastest round; return rates and the speedup."""
    texts, _ = collect_stories(open_source(source), stories)
    full = load_pipeline(spacy_model, full=True)
    fast = load_pipeline(spacy_model)
    convert = DocConverter(full)
    for text in texts[:WARMUP_STORIES]:  # first calls allocate; keep them out of the timing
        full(text)
    list(tag_stories(fast, texts[:WARMUP_STORIES], batch_size=batch_size))
    sentence_starts(fast, texts[:WARMUP_STORIES], batch_size)

    best = {"plain": (np.inf, np.inf), "batched": (np.inf, np.inf),
            "sentences": (np.inf, np.inf)}
    for _ in range(rounds):
        plain, wall, cpu = _timed(lambda: [convert(full(text)) for text in texts])
        best["plain"] = min(best["plain"], (wall, cpu))
        batched, wall, cpu = _timed(lambda: list(tag_stories(
            fast, texts, batch_size=batch_size, n_process=n_process)))
        best["batched"] = min(best["batched"], (wall, cpu))
        _, wall, cpu = _timed(lambda: sentence_starts(fast, texts, batch_size))
        best["sentences"] = min(best["sentences"], (wall, cpu))

    reference = _ruler_reference(spacy_model, texts, batch_size)
    n_tokens = sum(len(t) for t in plain)
    (plain_wall, plain_cpu), (batched_wall, batched_cpu) = best["plain"], best["batched"]
    return {"stories": len(texts), "tokens": n_tokens,
            "plain_tokens_per_s": n_tokens / plain_wall,
            "batched_tokens_per_s": n_tokens / batched_wall,
            "speedup": plain_wall / batched_wall,
            "sentence_component": sentence_component(fast),
            "sentences_tokens_per_s": n_tokens / best["sentences"][0],
            # share of the tagging time, in CPU time with one process (robust to other load)
            "sentences_share": (best["sentences"][1] / batched_cpu if n_process == 1
                                else best["sentences"][0] / batched_wall),
            # with one process the CPU time is the work done, whatever else the machine runs
            "cpu_speedup": plain_cpu / batched_cpu if n_process == 1 else None,
            "same_fine_tags": _same_fine_tags(plain, batched),
            "coarse_agreement": _coarse_agreement(plain, batched),
            "same_as_ruler": None if reference is None else _same_tags(reference, batched)}


def build_parser() -> Parser:
    """The parser of ``python -m datasets_build bench``."""
    p = Parser(prog="python -m datasets_build bench",
               description="Tagged tokens per second: batched, reduced spaCy pipeline vs a "
                           "plain nlp(text)-per-story loop with the full pipeline.")
    p.add_argument("--stories", type=int, default=200, help="stories to tag (default: 200)")
    p.add_argument("--source", default=str(default_corpus()),
                   help="corpus (default: valid-3117.txt in the shared folder)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="texts per nlp.pipe batch of the batched side")
    p.add_argument("--n-process", type=int, default=1,
                   help="spaCy worker processes of the batched side")
    p.add_argument("--spacy-model", help="spaCy pipeline (default as for a build)")
    p.add_argument("--tokenizer", default=str(default_tokenizer()),
                   help="model tokenizer of the shard side (default: the shared "
                        "tinystories-8L model)")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternating timing rounds; each side keeps its best (default: 2)")
    p.add_argument("--shard-rss", type=int, default=0, metavar="K",
                   help="also tag, in a fresh process each, shard 0 of K of a source of K x "
                        "--stories stories and shard 0 of R x K of one R times larger "
                        "(--rss-scale), both holding the first --stories stories, and print "
                        "their peak RSS (default: 0, not measured)")
    p.add_argument("--rss-scale", type=int, default=10, metavar="R",
                   help="how many times larger the second --shard-rss source is (default: 10)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.stories, args.batch_size, args.n_process, args.rounds) < 1:
        raise UsageError("--stories, --batch-size, --n-process and --rounds must be at least 1")
    if args.shard_rss < 0 or (args.shard_rss and args.rss_scale < 2):
        raise UsageError("--shard-rss must be at least 0 and --rss-scale at least 2")
    rss_texts = _shard_rss_texts(args) if args.shard_rss else None
    r = run_bench(args.source, args.stories, args.batch_size, args.n_process, args.spacy_model,
                  args.rounds)
    print(f"{r['stories']} stories, {r['tokens']} spaCy tokens")
    print(f"plain loop (nlp(text), full pipeline): {r['plain_tokens_per_s']:10.0f} tokens/s")
    print(f"headprobe (nlp.pipe, batch {args.batch_size}, {args.n_process} process, tok2vec + "
          f"tagger): {r['batched_tokens_per_s']:10.0f} tokens/s")
    cpu = f", {r['cpu_speedup']:.2f}x in CPU time" if r["cpu_speedup"] else ""
    print(f"speedup: {r['speedup']:.2f}x in wall-clock time{cpu}")
    print(f"sentence boundaries (spaCy {r['sentence_component']} alone, run only on stories "
          f"longer than --max-tokens): {r['sentences_tokens_per_s']:10.0f} tokens/s, "
          f"{100 * r['sentences_share']:.0f}% of the tagging time if every story is cut")
    print(f"fine tags identical: {'yes' if r['same_fine_tags'] else 'NO'}; coarse tags agree "
          f"on {100 * r['coarse_agreement']:.1f}% (the rest need the parser, see "
          f"docs/dataset-format.md)")
    c = per_core(args.source, args.tokenizer, collect_stories(open_source(args.source),
                                                               args.stories)[0],
                 args.batch_size, args.spacy_model, args.rounds)
    print("per core (tokens per CPU second, one process; a --shard/--ray run scales it by the "
          "cores):")
    print(f"  plain nlp.pipe loop (full pipeline, batch {args.batch_size}): "
          f"{c['pipe_per_core']:10.0f} spaCy tokens/s")
    print(f"  build shard (tag, tokenize, align, cut):  {c['shard_per_core']:10.0f} spaCy "
          f"tokens/s = {c['shard_model_per_core']:.0f} model tokens/s "
          f"({c['per_core_speedup']:.2f}x)")
    if r["same_as_ruler"] is not None:
        print(f"tags from the attribute_ruler table identical to running the ruler: "
              f"{'yes' if r['same_as_ruler'] else 'NO'}")
    if rss_texts is not None:
        from datasets_build.bench_shard import print_shard_rss, shard_rss

        with tempfile.TemporaryDirectory(prefix="headprobe-shard-rss-") as work:
            print_shard_rss(shard_rss(rss_texts, args.tokenizer, args.shard_rss,
                                      args.rss_scale, Path(work)), args.rss_scale)
    return 0


def _shard_rss_texts(args: argparse.Namespace) -> list[str]:
    """The K x --stories stories of the ``--shard-rss`` sources; UsageError when the corpus
    holds fewer."""
    wanted = args.stories * args.shard_rss
    texts, _ = collect_stories(open_source(args.source), wanted)
    if len(texts) < wanted:
        raise UsageError(f"--shard-rss {args.shard_rss} needs {wanted} stories and "
                         f"{args.source} holds {len(texts)}; use a smaller K or --stories")
    return texts
