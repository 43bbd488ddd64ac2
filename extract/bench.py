"""Benchmark: extraction throughput against plain Hugging Face forward passes.

``python -m extract bench [--stories 300] [--rss-check]`` tokenizes the first N stories of
the shared validation text with the model's tokenizer and measures, side by side in one run:

  (a) one story per forward pass through a plain HF model, with ``register_forward_hook``
      on every layer's k/q projections and on the input of ``out_proj``, results collected
      in Python lists (the straightforward way of collecting head activations);
  (b) the plain HF forward with no hooks, at its best batch size;
  (c) this package's extractor writing a complete store (fast path; gzip level 1, the
      default, and uncompressed).

``--rss-check`` also extracts 1000 and 3000 stories in fresh subprocesses and compares
their peak resident memory (the extractor streams, so the ratio should stay near 1).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets_build.cli_support import Parser, UsageError
from datasets_build.dataset import write_dataset
from datasets_build.sources import read_separated
from datasets_build.tokenizer import bos_id, load_tokenizer, vocab_hash

DEFAULT_TEXT = "../shared/data/tinystories/valid-3117.txt"
DEFAULT_BENCH_MODEL = "../shared/models/tinystories-8L"


def read_stories(path: str | Path, limit: int) -> list[str]:
    """The first ``limit`` non-empty stories of a ``<|endoftext|>``-separated file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"text file {path} does not exist")
    stories = []
    for text in read_separated(path):
        if text.strip():
            stories.append(text.strip())
        if len(stories) >= limit:
            break
    return stories


def write_untagged_dataset(out_dir: str | Path, texts: Sequence[str], tokenizer: Any,
                           test_every: int = 5, max_tokens: int | None = None) -> Path:
    """Write a dataset of ``texts`` tokenized by ``tokenizer`` (BOS prepended) with no tags.

    Every token gets fine/coarse tag 0 ('X'); every ``test_every``-th story is in the test
    split. For benchmarks and tests of stages that ignore tags.
    """
    bos = bos_id(tokenizer)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "input_id", "story_id", "position", "char_start", "char_end")}
    stories: dict[str, list[Any]] = {"story_id": [], "text": [], "split": [],
                                     "token_start": [], "n_tokens": []}
    row = 0
    for sid, text in enumerate(texts):
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        ids = list(enc["input_ids"])
        spans = [tuple(s) for s in enc["offset_mapping"]]
        if bos is not None:
            ids, spans = [bos, *ids], [(-1, -1), *spans]
        if max_tokens is not None:
            ids, spans = ids[:max_tokens], spans[:max_tokens]
        n = len(ids)
        cols["input_id"].append(np.asarray(ids))
        cols["story_id"].append(np.full(n, sid))
        cols["position"].append(np.arange(n))
        cols["char_start"].append(np.asarray([s[0] for s in spans]))
        cols["char_end"].append(np.asarray([s[1] for s in spans]))
        split = int(sid % test_every == test_every - 1)
        for key, value in (("story_id", sid), ("text", text), ("split", split),
                           ("token_start", row), ("n_tokens", n)):
            stories[key].append(value)
        row += n
    tokens = {k: np.concatenate(v) for k, v in cols.items()}
    n_rows = len(tokens["input_id"])
    splits = np.repeat(np.asarray(stories["split"]), np.asarray(stories["n_tokens"]))
    tokens.update({"fine_tag": np.zeros(n_rows), "coarse_tag": np.zeros(n_rows),
                   "quoted": np.zeros(n_rows, bool), "straddle": np.zeros(n_rows, bool),
                   "split": splits})
    manifest = {"stage": "untagged", "tokenizer": {"vocab_hash": vocab_hash(tokenizer),
                                                   "bos_id": bos},
                "n_stories": len(texts), "n_tokens": n_rows}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_dataset(out_dir, tokens, stories, {"fine": ["X"], "coarse": ["X"]}, manifest)
    return out_dir


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hf_model(model_dir: str) -> Any:
    from extract.models import load_hf_model

    return load_hf_model(model_dir)


def bench_hooked_hf(hf: Any, stories: Sequence[np.ndarray]) -> float:
    """(a) one story per forward, forward hooks on k/q projections and out_proj input."""
    keys: list[torch.Tensor] = []
    queries: list[torch.Tensor] = []
    zs: list[torch.Tensor] = []
    handles = []
    for block in hf.transformer.h:
        att = block.attn.attention
        handles.append(att.k_proj.register_forward_hook(lambda m, i, o: keys.append(o)))
        handles.append(att.q_proj.register_forward_hook(lambda m, i, o: queries.append(o)))
        handles.append(att.out_proj.register_forward_hook(lambda m, i, o: zs.append(i[0])))
    t0 = time.perf_counter()
    with torch.no_grad():
        for ids in stories:
            hf(torch.from_numpy(ids)[None])
    seconds = time.perf_counter() - t0
    for handle in handles:
        handle.remove()
    return seconds


def bench_plain_hf(hf: Any, stories: Sequence[np.ndarray], batch: int) -> float:
    """(b) the plain HF forward, right-padded batches of ``batch`` stories (no hooks)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(stories), batch):
            part = stories[i:i + batch]
            ids = np.zeros((len(part), max(len(s) for s in part)), dtype=np.int64)
            for row, story in enumerate(part):
                ids[row, :len(story)] = story
            hf(torch.from_numpy(ids))
    return time.perf_counter() - t0


def bench_extractor(dataset: Path, model_dir: str, out: Path, **options: Any) -> float:
    from extract.extractor import extract_store

    t0 = time.perf_counter()
    extract_store(dataset, model_dir, out, overwrite=True, **options)
    return time.perf_counter() - t0


def _rss_child(args: argparse.Namespace, n_stories: int, workdir: Path) -> float:
    """Peak RSS (MiB) of a fresh process that extracts ``n_stories`` stories."""
    code = ("import sys, json; from extract.bench import _rss_run; "
            "print(json.dumps(_rss_run(*sys.argv[1:])))")
    result = subprocess.run(
        [sys.executable, "-c", code, args.text, args.model, str(n_stories), str(workdir),
         str(torch.get_num_threads())],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def _rss_run(text: str, model_dir: str, n_stories: str, workdir: str,
             threads: str) -> dict[str, float]:
    torch.set_num_threads(int(threads))
    work = Path(workdir) / f"rss-{n_stories}"
    tok = load_tokenizer(model_dir)
    dataset = write_untagged_dataset(work / "dataset", read_stories(text, int(n_stories)), tok)
    bench_extractor(dataset, model_dir, work / "store.h5")
    return {"peak_rss_mb": peak_rss_mb()}


def run_bench(args: argparse.Namespace) -> int:
    tok = load_tokenizer(args.model)
    texts = read_stories(args.text, args.stories)
    with tempfile.TemporaryDirectory(prefix="headprobe-bench-") as tmp:
        work = Path(tmp)
        dataset = write_untagged_dataset(work / "dataset", texts, tok)
        from datasets_build.dataset import load_tagged_dataset

        stories = [ids for _, ids, _ in load_tagged_dataset(dataset).iter_stories()]
        n_tokens = sum(len(s) for s in stories)
        print(f"{len(stories)} stories, {n_tokens} tokens, model {args.model}, "
              f"{torch.get_num_threads()} torch threads")
        hf = _hf_model(args.model)
        bench_plain_hf(hf, stories[:20], 1)                      # warm-up
        t_a = bench_hooked_hf(hf, stories)
        plain = {b: bench_plain_hf(hf, stories, b) for b in args.hf_batches}
        best_b = min(plain, key=plain.get)
        runs = {}
        for bt in args.batch_tokens:
            runs[bt] = bench_extractor(dataset, args.model, work / f"store-{bt}.h5",
                                       batch_tokens=bt, sites=args.sites.split(","))
        best_bt = min(runs, key=runs.get)
        raw = bench_extractor(dataset, args.model, work / "store-raw.h5", batch_tokens=best_bt,
                              sites=args.sites.split(","), compression=0)
        rate = {"a": n_tokens / t_a, "b": n_tokens / plain[best_b],
                "c": n_tokens / runs[best_bt], "c0": n_tokens / raw}
        print(f"(a) HF + forward hooks, one story per pass : {rate['a']:9.0f} tokens/s")
        for b, sec in plain.items():
            print(f"(b) plain HF forward, batch {b:<3d}           : "
                  f"{n_tokens / sec:9.0f} tokens/s")
        for bt, sec in runs.items():
            print(f"(c) extract, gzip-1 store, batch-tokens {bt:<5d}: "
                  f"{n_tokens / sec:9.0f} tokens/s")
        print(f"(c0) extract, uncompressed store, batch-tokens {best_bt}: "
              f"{rate['c0']:9.0f} tokens/s")
        for key, label in (("c", "gzip-1 (default)"), ("c0", "uncompressed")):
            print(f"ratios, {label}: extract / (a) = {rate[key] / rate['a']:.2f}x   "
                  f"extract / (b, batch {best_b}) = {rate[key] / rate['b']:.2f}x")
        for name in (f"store-{best_bt}.h5", "store-raw.h5"):
            print(f"{name}: {(work / name).stat().st_size / 2**20:.1f} MiB")
        print(f"peak RSS of this process {peak_rss_mb():.0f} MiB")
        if args.rss_check:
            small, large = (_rss_child(args, n, work) for n in (1000, 3000))
            print(f"peak RSS extracting 1000 stories {small:.0f} MiB, 3000 stories "
                  f"{large:.0f} MiB: ratio {large / small:.2f}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stories", type=int, default=300, help="stories to time (default 300)")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="<|endoftext|>-separated stories")
    parser.add_argument("--model", default=DEFAULT_BENCH_MODEL, help="local GPT-Neo HF dir")
    parser.add_argument("--sites", default="key,query,activity")
    parser.add_argument("--batch-tokens", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1024, 2048, 8192], help="comma list to try")
    parser.add_argument("--hf-batches", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4, 16], help="batch sizes to try for (b)")
    parser.add_argument("--threads", type=int, help="torch CPU threads for every measurement")
    parser.add_argument("--rss-check", action="store_true",
                        help="also compare peak RSS for 1000 vs 3000 stories")


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="python -m extract bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.stories < 1:
        raise UsageError("--stories must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_bench(args)
