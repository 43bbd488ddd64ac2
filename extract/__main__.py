"""Command line of the extract stage.

    python -m extract --dataset DIR --model MODEL --out FILE.h5 [options]
    python -m extract --run runs/NAME [options]
    python -m extract --run runs/NAME --ray auto|ADDRESS|local:N --shards N [options]
    python -m extract --run runs/NAME --shard i/n [options]     # one shard (job arrays)
    python -m extract merge OUT.h5 [SHARD.h5 ...]
    python -m extract bench [--model DIR | --llama] [--stories 300] [--rss-check]
    python -m extract bench-layout [--stories 200] [--repeat 3]
    python -m extract train --corpus SOURCE --out MODEL_DIR [options]
    python -m extract export --format hf|hl --out DIR [--store FILE.h5 | --run runs/NAME]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from extract.models import DEFAULT_MODEL
from extract.options import DEFAULT_BATCH_TOKENS
from extract.store.codec import COMPRESSIONS, DEFAULT_COMPRESSION
from extract.store.schema import DEFAULT_SITES, DTYPES, SITES
from headprobe.cli import Parser, add_device_arguments, run_main, split_list
from headprobe.errors import UsageError
from headprobe.rundir import resolve
from headprobe.shards import add_cluster_arguments, check_cluster_arguments

PROG = "python -m extract"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Store per-head keys, queries and activity of a "
                    "causal LM for every token of a tagged dataset (HDF5).",
                    epilog="Subcommands: 'merge OUT.h5 SHARD...' joins shard stores; "
                    "'bench' measures throughput; 'bench-layout' what the netCDF "
                    "coordinates cost the writer; 'train' trains a small model; 'export' "
                    "writes a store for other tools.")
    parser.add_argument("--dataset", help="tagged dataset directory (python -m datasets_build; "
                        "default: RUN/dataset with --run)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"hub name or local HF directory (default {DEFAULT_MODEL})")
    parser.add_argument("--out", help="output store, e.g. activations.h5 (default: "
                        "RUN/activations.h5 with --run)")
    parser.add_argument("--run", help="run directory: reads RUN/dataset, writes "
                        "RUN/activations.h5 unless given explicitly (default: none)")
    parser.add_argument("--split", default="all", choices=("train", "test", "all"),
                        help="stories of this split only")
    parser.add_argument("--sites", default=",".join(DEFAULT_SITES),
                        help=f"comma list from {', '.join(SITES)} (default: %(default)s); "
                        "key_rot and query_rot are after the rotary embedding (rotary models)")
    parser.add_argument("--dtype", default="float16", choices=DTYPES,
                        help="storage dtype of float sites (default float16); the model "
                        "computes in --model-dtype")
    parser.add_argument("--batch-tokens", default=DEFAULT_BATCH_TOKENS,
                        help="padded tokens per forward pass, or 'auto': sized from the free "
                        "memory on CUDA, elsewhere the fastest of 512, 1024 and 2048 in a short "
                        "timed trial (default %(default)s)")
    add_device_arguments(parser, resolve=False)
    parser.add_argument("--path", default="auto", choices=("auto", "fast", "general"),
                        help="forward path: fused GPT-Neo/GPT-2/Llama-family ('fast') or "
                        "TransformerLens hooks ('general', every family the bridge supports); "
                        "auto picks fast when it supports the model and agrees with it")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--chunk-rows", type=int, help="tokens per HDF5 chunk (default: sized "
                        "so one block of rows takes about 64 MiB)")
    parser.add_argument("--group-tokens", type=int, help="tokens per group of consecutive "
                        "stories, sorted by length into batches (default: sized to a 128 MiB "
                        "budget, at most 16 batches); shards batch a group they cut whole")
    parser.add_argument("--compression", default=DEFAULT_COMPRESSION, choices=COMPRESSIONS,
                        metavar="fast|none|1-9", help="per-head datasets: 'fast' (default, "
                        "deflate of the high byte planes by ISA-L), 'none', or a gzip level 1-9 "
                        "for archives")
    parser.add_argument("--resume", action="store_true", help="continue OUT.partial")
    parser.add_argument("--shard", help="i/n: extract the i-th of n parts of the stories into "
                        "OUT.shards/ (a complete shard is kept, an unfinished one continued); "
                        "then 'merge OUT' (default: the whole store at once)")
    add_cluster_arguments(parser, "extract", cpus_note="; also its torch threads")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--reinit-seed", type=int,
                        help="use freshly re-initialised random weights (seeded) instead of "
                        "the trained ones (default: the trained weights); the "
                        "random-weights control store of probing fit --control-store")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _file_size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The extraction settings the flags give (those of ``extract_store`` but the paths)."""
    return dict(split=args.split, sites=split_list(args.sites), dtype=args.dtype,
                batch_tokens=args.batch_tokens, device=args.device,
                model_dtype=args.model_dtype, reinit_seed=args.reinit_seed, path=args.path,
                chunk_rows=args.chunk_rows, group_tokens=args.group_tokens,
                compression=args.compression)


def _wrote(out: Path, n: int, seconds: float, what: str = "") -> None:
    """Say what was written: ``n`` tokens extracted by this run in ``seconds``."""
    print(f"wrote {out}{what}: {n} tokens extracted in {seconds:.1f} s "
          f"({n / max(seconds, 1e-9):.0f} tokens/s), {_file_size(out)}")


def _run_on_ray(args: argparse.Namespace, dataset: Path, out: Path) -> int:
    from extract.distributed import extract_on_ray

    if args.shards is None:
        raise UsageError("--ray needs --shards N (how many shard tasks)")
    if args.shard:
        raise UsageError("--ray runs every shard; leave out --shard")
    run = extract_on_ray(dataset, args.model, out, args.shards, args.ray,
                         cpus_per_shard=args.cpus_per_shard, gpus_per_shard=args.gpus_per_shard,
                         retries=args.retries, overwrite=args.overwrite,
                         progress=not args.quiet, **_settings(args))
    if run.kept == run.n_shards:
        done = "every shard was already complete"
    else:
        done = (f"{run.n_tokens} tokens extracted in {run.seconds:.1f} s "
                f"({run.tokens_per_second:.0f} tokens/s)"
                + (f", {run.kept} complete shard(s) kept" if run.kept else ""))
    print(f"wrote {out}: virtual join of {run.n_shards} shards; {done}")
    return 0


def _run_shard(args: argparse.Namespace, dataset: Path, out: Path) -> int:
    from extract.shards import extract_shard, shard_file
    from headprobe.shards import parse_shard

    index, n = parse_shard(args.shard)
    run = extract_shard(dataset, args.model, out, index, n, overwrite=args.overwrite,
                        progress=not args.quiet, **_settings(args))
    path = shard_file(out, index, n)
    if run.kept:
        print(f"kept {path}: shard {index}/{n} is already complete ({run.n_tokens} tokens)")
    else:
        _wrote(path, run.tokens_done, run.seconds, f" (shard {index}/{n})")
    return 0


def extract_main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    dataset = resolve(args.dataset, args.run, "dataset", "dataset")
    out = resolve(args.out, args.run, "store", "out")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be positive")
        import torch

        torch.set_num_threads(args.threads)
    if args.resume and (args.ray or args.shard):
        raise UsageError("--resume is implied with --ray and --shard: a rerun keeps complete "
                         "shards and continues unfinished ones; leave out --resume")
    if args.ray:
        return _run_on_ray(args, dataset, out)
    if args.shards is not None:
        raise UsageError("--shards needs --ray; for one shard give --shard i/n")
    check_cluster_arguments(args)
    if args.shard:
        return _run_shard(args, dataset, out)
    from extract.extractor import extract_store
    from extract.shards import stored_rows

    t0 = time.perf_counter()
    extract_store(dataset, args.model, out, resume=args.resume, overwrite=args.overwrite,
                  progress=not args.quiet, **_settings(args))
    _wrote(out, stored_rows(out)[1], time.perf_counter() - t0)
    return 0


def merge_parser() -> Parser:
    """The parser of ``python -m extract merge``."""
    parser = Parser(prog=f"{PROG} merge", description="Join shard stores into one file "
                    "through HDF5 virtual datasets (no copy).")
    parser.add_argument("out", nargs="?", help="merged store to write (default "
                        "RUN/activations.h5)")
    parser.add_argument("shards", nargs="*", help="shard stores (default: every shard in "
                        "OUT.shards/, written by python -m extract --shard i/n)")
    parser.add_argument("--run", help="run directory: merge into RUN/activations.h5 "
                        "(default: none; give OUT or --run)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    return parser


def train_parser() -> Parser:
    """The parser of ``python -m extract train``."""
    from extract.training.cli import add_train_arguments

    parser = Parser(prog=f"{PROG} train", description="Train a small causal LM and save it as "
                    "a Hugging Face directory.")
    add_train_arguments(parser)
    return parser


def export_parser() -> Parser:
    """The parser of ``python -m extract export``."""
    from extract.exports import DEFAULT_SITES, FORMATS

    parser = Parser(prog=f"{PROG} export", description="Write a store in a layout other tools "
                    "read: 'hf', a Hugging Face datasets directory with one row per token "
                    "(load_from_disk, or streaming); 'hl', Hewitt & Liang's per-sentence HDF5 "
                    "([layers, tokens, dim] per story) with a CoNLL-U label file.")
    parser.add_argument("--format", required=True, choices=FORMATS, help="export layout")
    parser.add_argument("--out", required=True, help="directory to write")
    parser.add_argument("--store", help="activation store (default: RUN/activations.h5 with "
                        "--run)")
    parser.add_argument("--run", help="run directory: read RUN/activations.h5 (default: none)")
    parser.add_argument("--sites", default=",".join(DEFAULT_SITES),
                        help="comma list of stored sites to export")
    parser.add_argument("--layers", help="comma list of layers (default: all)")
    parser.add_argument("--split", default="all", choices=("train", "test", "all"),
                        help="tokens (hf) or stories (hl) of this split only")
    parser.add_argument("--tokenizer", help="tokenizer for the token text of the hl label "
                        "file (default: the store's model)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def export_main(argv: Sequence[str]) -> int:
    args = export_parser().parse_args(argv)
    import numpy as np

    from extract.exports import select
    from extract.store import open_store
    from headprobe.atomic import check_target
    from headprobe.locks import claim_output

    store_path = resolve(args.store, args.run, "store", "store")
    out = check_target(claim_output(args.out), args.overwrite, "directory")
    layers = []
    for text in split_list(args.layers):
        if not text.lstrip("-").isdigit():
            raise UsageError(f"--layers takes integers, got {text!r}")
        layers.append(int(text))
    with open_store(store_path) as store:
        selection = select(store, split_list(args.sites), layers, args.split)
        if args.format == "hf":
            from extract.exports.hf import export_hf

            export_hf(store, selection, out, overwrite=args.overwrite)
            what = f"{len(selection.rows(store))} tokens"
        else:
            from extract.exports.hl import export_hl
            from headprobe.rundir import model_of_store
            from headprobe.tokenization import load_tokenizer

            name = args.tokenizer or model_of_store(store.attrs, args.run)
            if name is None:
                raise UsageError("the store names no model; give --tokenizer for the label file")
            export_hl(store, selection, load_tokenizer(name), out, overwrite=args.overwrite)
            story_ids = store.tokens(["story_id"], index=selection.rows(store))["story_id"]
            what = f"{len(np.unique(story_ids))} stories"
        print(f"wrote {out} ({args.format}): {what}, sites {', '.join(selection.sites)}, "
              f"{len(selection.layers)} layer(s)")
    return 0


def parsers() -> list[Parser]:
    """Every parser of the stage: extraction, merge, bench, bench-layout, train and export."""
    from extract.bench import build_parser as bench_parser
    from extract.bench_layout import build_parser as bench_layout_parser

    return [build_parser(), merge_parser(), bench_parser(), bench_layout_parser(),
            train_parser(), export_parser()]


def merge_main(argv: Sequence[str]) -> int:
    args = merge_parser().parse_args(argv)
    from extract.merge import merge_stores
    from extract.shards import merge_shard_dir
    from extract.store import open_store

    out = resolve(args.out, args.run, "store", "out")
    before = out.stat().st_mtime_ns if out.is_file() else None
    if args.shards:
        merge_stores(out, args.shards, overwrite=args.overwrite)
    else:
        merge_shard_dir(out, overwrite=args.overwrite)
    with open_store(out) as store:
        n_shards = len(store.attrs["merged_from"])
    if before is not None and out.stat().st_mtime_ns == before:
        print(f"kept {out}: already the virtual join of its {n_shards} unchanged shards")
    else:
        print(f"wrote {out}: virtual join of {n_shards} shards")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":
        return merge_main(argv[1:])
    if argv and argv[0] == "bench":
        from extract.bench import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "bench-layout":
        from extract.bench_layout import main as bench_layout_main

        return bench_layout_main(argv[1:])
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    if argv and argv[0] == "train":  # model organisms: extract/training/
        from extract.training.cli import parse_train_args, run_train

        return run_train(parse_train_args(train_parser(), argv[1:]))
    return extract_main(argv)


if __name__ == "__main__":
    sys.exit(run_main(main, prog=PROG))
