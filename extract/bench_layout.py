"""Benchmark: what the netCDF-4 coordinates cost the store's writer, in time and in bytes.

``python -m extract bench-layout [--stories 200] [--model DIR] [--repeat 3]`` extracts the
first N stories of the shared validation text once, then writes the same rows again
through :class:`extract.store.StoreWriter` the way the extractor does (token table, then
blocks of ``chunk_rows`` rows, each with its checksums and progress), in the current
layout (version 3: dimension scales and coordinates) and in the previous one (version 2:
none), alternating which goes first, ``--repeat`` times. Only the writer's calls are timed
(reading the rows back from the first store is not), in wall-clock and CPU seconds. It
prints each round's times, each layout's file size, and the ratios current / previous:
of the sizes, and of the times as the median of the rounds' ratios (each round writes
both layouts back to back, so a machine busy with other work slows both alike).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from extract.bench import DEFAULT_BENCH_MODEL, DEFAULT_TEXT, Timing, read_stories
from extract.store.codec import stored_level
from extract.store.integrity import create_checksums, record_block
from extract.store.json_attrs import decode_attrs
from extract.store.reader import open_store
from extract.store.schema import DTYPES, SCHEMA_VERSION, SITES
from extract.store.writer import PREVIOUS_VERSION, create_store
from headprobe.cli import Parser, split_list
from headprobe.errors import UsageError, opt

LAYOUTS = {SCHEMA_VERSION: "coordinates (current)", PREVIOUS_VERSION: "no coordinates (previous)"}


def _blocks(src: h5py.File, sites: list[str], chunk_rows: int, n_tokens: int):
    """(start, site -> rows in the stored dtype) for each block of ``chunk_rows`` rows."""
    for start in range(0, n_tokens, chunk_rows):
        stop = min(n_tokens, start + chunk_rows)
        yield start, {s: src[SITES[s].dataset][start:stop] for s in sites}


def _setting(level: int) -> str:
    """The ``compression`` setting that gives ``level`` (negative: "fast")."""
    return "fast" if level < 0 else str(level)


def write_copy(source: Path, out: Path, version: int) -> float:
    """Write the rows of store ``source`` into a new store ``out`` of layout ``version`` as
    the extractor writes them; return the time spent in the writer."""
    with open_store(source) as store:
        table, attrs = store.tokens(), decode_attrs(store.file.attrs)
    sites, n_tokens = list(attrs["sites"]), int(attrs["n_tokens"])
    spent = np.zeros(2)    # wall, CPU
    with h5py.File(source, "r") as src:
        start_clock = _now()
        writer = create_store(out, n_tokens, attrs["architecture"], sites, attrs["dtype"],
                              tags=attrs["tags"], chunk_rows=int(attrs["chunk_rows"]),
                              compression=_setting(stored_level(attrs)),
                              version=version)
        create_checksums(writer.file, n_tokens, writer.chunk_rows, len(sites))
        writer.write_tokens(table)
        writer.set_progress(0)
        spent += _now() - start_clock
        for start, block in _blocks(src, sites, writer.chunk_rows, n_tokens):
            start_clock = _now()
            writer.write_block(start, block)
            record_block(writer.file, start, block, sites, writer.chunk_rows)
            writer.set_progress(start + len(next(iter(block.values()))))
            spent += _now() - start_clock
        start_clock = _now()
        writer.finish()
        spent += _now() - start_clock
    return Timing(*spent)


def _now() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])


def _source_store(args: argparse.Namespace, work: Path) -> Path:
    from datasets_build.untagged import write_untagged_dataset
    from extract.extractor import extract_store
    from headprobe.tokenization import load_tokenizer

    texts = read_stories(args.text, args.stories)
    dataset = write_untagged_dataset(work / "dataset", texts, load_tokenizer(args.model))
    return extract_store(dataset, args.model, work / "source.h5", sites=args.sites,
                         dtype=args.dtype, split="all")


def run_bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="headprobe-bench-layout-") as tmp:
        work = Path(tmp)
        source = _source_store(args, work)
        with open_store(source) as store:
            print(f"{args.stories} stories, {store.n_tokens} tokens, sites "
                  f"{','.join(store.sites)}, {store.attrs['dtype']}, chunk_rows "
                  f"{store.attrs['chunk_rows']}, model {args.model}")
        seconds: dict[int, list[Timing]] = {v: [] for v in LAYOUTS}
        sizes: dict[int, int] = {}
        for index in range(args.repeat):
            order = list(LAYOUTS) if index % 2 == 0 else list(reversed(LAYOUTS))
            for version in order:
                out = work / f"v{version}.h5"
                seconds[version].append(write_copy(source, out, version))
                sizes[version] = out.stat().st_size
                out.unlink()
            print(f"round {index + 1}: " + "   ".join(
                f"version {v} {seconds[v][-1].wall:.3f} s wall, {seconds[v][-1].cpu:.3f} s CPU"
                for v in LAYOUTS))
        _print_summary(seconds, sizes)
    return 0


def _print_summary(seconds: dict[int, list[Timing]], sizes: dict[int, int]) -> None:
    new, old = SCHEMA_VERSION, PREVIOUS_VERSION
    print(f"medians over {len(seconds[new])} rounds:")
    for version, label in LAYOUTS.items():
        wall, cpu = (float(np.median([getattr(t, f) for t in seconds[version]]))
                     for f in Timing._fields)
        print(f"  version {version}, {label:<26s}: write {wall:.3f} s wall, {cpu:.3f} s CPU, "
              f"{sizes[version]:,d} bytes")
    ratio = {f: float(np.median([getattr(a, f) / getattr(b, f) for a, b in
                                 zip(seconds[new], seconds[old], strict=True)]))
             for f in Timing._fields}
    print(f"  ratios version {new} / version {old}: write time {ratio['wall']:.3f} wall, "
          f"{ratio['cpu']:.3f} CPU; file size {sizes[new] / sizes[old]:.4f}")


def build_parser() -> Parser:
    """The parser of ``python -m extract bench-layout``."""
    parser = Parser(prog="python -m extract bench-layout",
                    description=__doc__.split("\n\n")[0])
    parser.add_argument("--stories", type=int, default=200,
                        help="stories to extract and write (default 200)")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="<|endoftext|>-separated stories")
    parser.add_argument("--model", default=DEFAULT_BENCH_MODEL,
                        help="local HF causal LM directory (default: the shared GPT-Neo)")
    parser.add_argument("--sites", type=split_list, default=["key", "query", "activity"],
                        help="sites to store (default key,query,activity)")
    parser.add_argument("--dtype", default="float16", choices=DTYPES,
                        help="storage dtype (default float16)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds, each writing both layouts (default 3)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stories < 1:
        raise UsageError(f"{opt('stories')} must be positive")
    if args.repeat < 1:
        raise UsageError(f"{opt('repeat')} must be positive")
    return run_bench(args)
