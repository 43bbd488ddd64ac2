"""Command line of the extract stage.

    python -m extract --dataset DIR --model MODEL --out FILE.h5 [options]
    python -m extract --run runs/NAME [options]
    python -m extract merge OUT.h5 SHARD.h5 ...
    python -m extract bench [--stories 300] [--rss-check]
    python -m extract train --corpus SOURCE --out MODEL_DIR [options]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from extract.models import DEFAULT_MODEL
from extract.options import DEFAULT_BATCH_TOKENS
from extract.store.codec import COMPRESSIONS, DEFAULT_COMPRESSION
from extract.store.schema import DEFAULT_SITES, DTYPES, SITES
from headprobe.cli import Parser, run_main, split_list
from headprobe.errors import UsageError
from headprobe.rundir import resolve

PROG = "python -m extract"


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Store per-head keys, queries and activity of a "
                    "causal LM for every token of a tagged dataset (HDF5).",
                    epilog="Subcommands: 'merge OUT.h5 SHARD...' joins shard stores; "
                    "'bench' measures throughput; 'train' trains a small model.")
    parser.add_argument("--dataset", help="tagged dataset directory (python -m datasets_build)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"hub name or local HF directory (default {DEFAULT_MODEL})")
    parser.add_argument("--out", help="output store, e.g. activations.h5")
    parser.add_argument("--run", help="run directory: reads RUN/dataset, writes "
                        "RUN/activations.h5 unless given explicitly")
    parser.add_argument("--split", default="all", choices=("train", "test", "all"))
    parser.add_argument("--sites", default=",".join(DEFAULT_SITES),
                        help=f"comma list from {', '.join(SITES)} (default: %(default)s)")
    parser.add_argument("--dtype", default="float16", choices=DTYPES,
                        help="storage dtype of float sites (default float16)")
    parser.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                        help="padded tokens per forward pass (default %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--path", default="auto", choices=("auto", "fast", "general"),
                        help="forward path: fused GPT-Neo/GPT-2 ('fast') or TransformerLens "
                        "hooks ('general'); auto picks fast when supported")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--chunk-rows", type=int, help="tokens per HDF5 chunk (default: sized "
                        "so one block of rows takes about 64 MiB)")
    parser.add_argument("--compression", default=DEFAULT_COMPRESSION, choices=COMPRESSIONS,
                        metavar="fast|none|1-9", help="per-head datasets: 'fast' (default, "
                        "Huffman-only deflate), 'none', or a gzip level 1-9 for archives")
    parser.add_argument("--resume", action="store_true", help="continue OUT.partial")
    parser.add_argument("--shard", help="i/n: extract the i-th of n parts of the stories")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--reinit-seed", type=int,
                        help="use freshly re-initialised random weights (seeded) instead of "
                        "the trained ones")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _file_size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def extract_main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    dataset = resolve(args.dataset, args.run, "dataset", "dataset")
    out = resolve(args.out, args.run, "store", "out")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be positive")
        import torch

        torch.set_num_threads(args.threads)
    from extract.extractor import extract_store
    from extract.store import open_store

    t0 = time.perf_counter()
    extract_store(dataset, args.model, out, split=args.split, sites=split_list(args.sites),
                  dtype=args.dtype, batch_tokens=args.batch_tokens, device=args.device,
                  reinit_seed=args.reinit_seed, resume=args.resume, overwrite=args.overwrite,
                  shard=args.shard, path=args.path, chunk_rows=args.chunk_rows,
                  compression=args.compression, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    with open_store(out) as store:
        n = store.n_tokens
    print(f"wrote {out}: {n} tokens in {seconds:.1f} s ({n / max(seconds, 1e-9):.0f} tokens/s), "
          f"{_file_size(out)}")
    return 0


def merge_main(argv: Sequence[str]) -> int:
    parser = Parser(prog=f"{PROG} merge", description="Join shard stores into one file "
                    "through HDF5 virtual datasets (no copy).")
    parser.add_argument("out", help="merged store to write")
    parser.add_argument("shards", nargs="+", help="shard stores (python -m extract --shard i/n)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    from extract.merge import merge_stores

    merge_stores(args.out, args.shards, overwrite=args.overwrite)
    print(f"wrote {args.out}: virtual join of {len(args.shards)} shards")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":
        return merge_main(argv[1:])
    if argv and argv[0] == "bench":
        from extract.bench import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "train":  # model organisms: extract/training/
        from extract.training.cli import add_train_arguments, parse_train_args, run_train

        train_parser = Parser(prog=f"{PROG} train", description="Train a small causal LM "
                              "and save it as a Hugging Face directory.")
        add_train_arguments(train_parser)
        return run_train(parse_train_args(train_parser, argv[1:]))
    return extract_main(argv)


if __name__ == "__main__":
    sys.exit(run_main(main, prog=PROG))
