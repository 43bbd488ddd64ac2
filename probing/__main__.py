"""Command line of the probing stage.

    python -m probing fit --store FILE.h5 --out RESULTS [options]
    python -m probing export --results RESULTS --format seed004 --out DIR
    python -m probing export --results RESULTS --format parquet|csv --out FILE
    python -m probing top --results RESULTS --tag VBD [--site key] [-k 5] [--by MEASURE]
    python -m probing summary --run runs/NAME [--by MEASURE] | summary --run RUN RUN ...
    python -m probing bench [--stories N] | bench --rss [--small N --large N]
    python -m probing <study> ...        (case studies, see --help)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from contextlib import nullcontext

from headprobe.cli import Parser, run_main, split_list
from headprobe.errors import UsageError
from headprobe.rundir import resolve, run_path
from probing.controls import (
    CONTROLS,
    DEFAULT_AMBIGUOUS_MIN_COUNT,
    DEFAULT_CONTROLS,
    WORD_TYPES,
    parse_controls,
)
from probing.solvers import SOLVERS
from probing.studies import STUDY_MODULES

PROG = "python -m probing"
DEFAULT_BOOTSTRAP = 1000


def _add_fit(sub) -> None:
    p = sub.add_parser("fit", help="fit the probe grid: one probe per (site, layer, head)",
                       description="Fit a multinomial logistic-regression probe per (site, "
                                   "layer, head) on the train split and score it on the test "
                                   "split, with controls. BOS tokens are left out.")
    p.add_argument("--store", help="activation store (python -m extract; default: "
                                   "RUN/activations.h5 with --run)")
    p.add_argument("--out", help="results directory to write (default: RUN/probes with --run)")
    p.add_argument("--run", help="run directory: read RUN/activations.h5, write RUN/probes "
                                 "(default: none)")
    p.add_argument("--sites", default="key,query",
                   help="sites to probe: key, query, and key_rot, query_rot where stored "
                        "(default key,query)")
    p.add_argument("--tagset", default="fine", choices=("fine", "coarse"),
                   help="fine (Penn Treebank tags) or coarse (universal parts of speech)")
    p.add_argument("--tags", help="comma-separated tags to keep; every other tag becomes OTHER "
                                        "(default: every tag)")
    p.add_argument("--merge-verbs", action="store_true",
                   help="fold VB, VBD, VBG, VBN, VBP, VBZ into VB")
    p.add_argument("--min-support", type=int, default=1,
                   help="fold tags with fewer training tokens into OTHER (default 1)")
    p.add_argument("--exclude", default="BOS",
                   help="tags whose tokens are left out (default BOS; '' keeps all)")
    p.add_argument("--multilabel", action="store_true",
                   help="one-vs-rest probes per tag on every tag a token covers (a token "
                        "'.\"' holds both . and ''), instead of one multinomial probe on its "
                        "own tag")
    p.add_argument("--layers", help="comma-separated layers (default: all)")
    p.add_argument("--solver", default="fast", choices=SOLVERS,
                   help="fast (batched torch, default) or sklearn (reference)")
    p.add_argument("-C", type=float, default=1.0, help="inverse L2 strength (default 1.0)")
    p.add_argument("--controls", default="",
                   help=f"controls to run besides the defaults ({','.join(DEFAULT_CONTROLS)}), "
                        f"among {', '.join(CONTROLS)}; random is on with --control-store")
    p.add_argument("--no-intervals", action="store_true",
                   help="drop the bootstrap intervals (on by default)")
    p.add_argument("--ambiguous-min-count", type=int, default=DEFAULT_AMBIGUOUS_MIN_COUNT,
                   metavar="N",
                   help="a test token is ambiguous when its token id carries two or more tags "
                        "in training, each on at least N training tokens; every score is also "
                        f"given on those tokens (default {DEFAULT_AMBIGUOUS_MIN_COUNT})")
    p.add_argument("--control-store",
                   help="store extracted from the re-initialised model (extract "
                        "--reinit-seed); turns on the random control (default: none; "
                        "RUN/activations-random.h5 when --controls names random with --run)")
    p.add_argument("--word-types", default="token", choices=WORD_TYPES,
                   help="word types of the control task: token (model token id, default) or "
                        "lower (lowercased token text)")
    p.add_argument("--tokenizer", help="tokenizer for --word-types lower (default: the "
                                       "store's model)")
    p.add_argument("--mdl", action="store_true",
                   help="also measure the online code length (MDL) of every cell, and of the "
                        "random-weights store and the control task when those run")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP,
                   help=f"bootstrap resamples of test stories (default {DEFAULT_BOOTSTRAP})")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the shuffled labels, the control task and the bootstrap")
    _add_scale(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_fit)


def _add_scale(p: argparse.ArgumentParser) -> None:
    """How much of the store ``fit`` reads at a time and where it fits the blocks."""
    from probing.stream import DEFAULT_CHUNK_ROWS

    p.add_argument("--max-train-tokens", type=int, metavar="N",
                   help="train on whole train stories, drawn in an order seeded by --seed, up "
                        "to N tokens (default: every train story)")
    p.add_argument("--max-test-tokens", type=int, metavar="N",
                   help="score on whole test stories, ranked by a hash of their story id "
                        "seeded by --seed, up to N tokens; the same sample whatever the "
                        "story order or shard count (default: every test story)")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, metavar="ROWS",
                   help="token rows of a (site, layer) block held in memory at a time; "
                        f"memory does not grow with the store (default {DEFAULT_CHUNK_ROWS})")
    p.add_argument("--jobs", type=int, default=1,
                   help="local processes, each fitting one (site, layer) block at a time "
                        "(default 1); results are the same for any number")
    p.add_argument("--ray", metavar="auto|ADDRESS|local:N",
                   help="fit the (site, layer) blocks as tasks on a Ray cluster: 'auto' (the "
                        "cluster this machine belongs to), a head node's address, or local:N "
                        "(a local instance with N CPUs); needs the ray extra; default: no cluster")
    p.add_argument("--no-verify", action="store_true",
                   help="read the store without checking each block against its checksum "
                        "(the same as HEADPROBE_VERIFY=0; default: verify)")


def _fit(args: argparse.Namespace) -> int:
    from headprobe.atomic import check_target
    from headprobe.checksums import verification
    from headprobe.locks import claim_output
    from probing.grid import GridConfig, run_grid
    from probing.multilabel import DESCRIPTIONS as MULTILABEL_DESCRIPTIONS
    from probing.results import write_results

    store = resolve(args.store, args.run, "store", "store")
    out = claim_output(resolve(args.out, args.run, "probes", "out"))
    check_target(out, args.overwrite, "directory")
    if args.no_intervals and args.bootstrap != DEFAULT_BOOTSTRAP:
        raise UsageError("--bootstrap sets the resamples of the intervals that --no-intervals "
                         "drops; leave one of them out")
    control_store = _control_store(args)
    controls = parse_controls(split_list(args.controls), bool(control_store),
                              intervals=not args.no_intervals, add_defaults=True)
    config = GridConfig(
        sites=tuple(split_list(args.sites)), tagset=args.tagset,
        tags=split_list(args.tags) or None, merge_verbs=args.merge_verbs,
        min_support=args.min_support, exclude=tuple(split_list(args.exclude)),
        solver=args.solver, controls=controls,
        layers=[_int(x, "--layers") for x in split_list(args.layers)] or None, C=args.C,
        n_boot=args.bootstrap, seed=args.seed, jobs=args.jobs, mdl=args.mdl,
        word_types=args.word_types, tokenizer=args.tokenizer, multilabel=args.multilabel,
        ray=args.ray, chunk_rows=args.chunk_rows, max_train_tokens=args.max_train_tokens,
        max_test_tokens=args.max_test_tokens,
        ambiguous_min_count=args.ambiguous_min_count)
    with verification(False) if args.no_verify else nullcontext():
        result = run_grid(str(store), config, control_store)
    labels = result.labels
    if labels.folded:
        print("folded tags: " + ", ".join(f"{a}->{b}" for a, b in labels.folded.items()),
              file=sys.stderr)
    params = {"store": str(store), "control_store": control_store, "tagset": args.tagset,
              "merge_verbs": args.merge_verbs, "min_support": args.min_support,
              "kept_tags": config.tags, "excluded_tags": labels.excluded,
              "folded_tags": labels.folded, "solver": args.solver, "C": args.C,
              "controls": [c.name for c in controls], "bootstrap": args.bootstrap,
              "seed": args.seed,
              "mdl": args.mdl, "word_types": args.word_types, **result.info}
    if args.multilabel:
        params.update(multilabel=True, not_probed_tags=labels.not_probed)
    write_results(out, result.sites, result.layers, result.tags, result.arrays, params,
                  {"inputs": {"store": str(store), "control_store": control_store},
                   "params": params}, overwrite=args.overwrite, site_heads=result.site_heads,
                  head_axes=result.head_axes,
                  descriptions=MULTILABEL_DESCRIPTIONS if args.multilabel else None)
    print(f"wrote {out}")
    return 0


def _control_store(args: argparse.Namespace) -> str | None:
    """``--control-store``; else, when the random-weights control is asked for with
    ``--run``, the run's RUN/activations-random.h5."""
    if args.control_store:
        return str(args.control_store)
    if args.run and "random" in split_list(args.controls):
        return str(run_path(args.run, "control_store"))
    return None


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{flag} takes integers, got {text!r}") from None


def _add_export(sub) -> None:
    from probing.export import FORMATS as REPORT_FORMATS
    from probing.tidy import FORMATS as TIDY_FORMATS

    p = sub.add_parser("export", help="export probe results (seed004: per-site JSON reports; "
                                      "parquet, csv: a tidy table, one row per number)",
                       description="Export the results of probing fit: seed004 writes one "
                                   "JSON report per site into the directory --out; parquet "
                                   "and csv write the grid as one tidy table (site, layer, "
                                   "head, kv_head, tag, metric, value, low, high, control) "
                                   "to the file --out.")
    _add_results(p)
    p.add_argument("--format", default="seed004", choices=(*REPORT_FORMATS, *TIDY_FORMATS),
                   help="export format")
    p.add_argument("--out", required=True, help="directory (seed004) or file (parquet, csv) "
                                                "to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from headprobe.atomic import check_target
    from headprobe.locks import claim_output
    from probing.export import export
    from probing.results import read_results
    from probing.tidy import FORMATS as TIDY_FORMATS
    from probing.tidy import export_tidy

    results = resolve(args.results, args.run, "probes", "results")
    claim_output(args.out)
    if args.format in TIDY_FORMATS:
        check_target(args.out, args.overwrite, "file")
        print(f"wrote {export_tidy(read_results(results), args.out, args.format, args.overwrite)}")
        return 0
    for path in export(results, args.format, args.out, args.overwrite):
        print(f"wrote {path}")
    return 0


def _add_top(sub) -> None:
    from probing.top import columns_help

    p = sub.add_parser("top", help="best cells for a tag, with their controls",
                       description="The best (site, layer, head) cells of the probe grid for "
                                   "one tag, ranked by --by (the table's header names the "
                                   "measure), with the tag's F1, its bootstrap "
                                   "interval, each control's F1 (the lexical baseline "
                                   "included), selectivity, the comparison with the lexical "
                                   "baseline on ambiguous tokens and MDL compression beside "
                                   "them; then, in words, whether each cell goes beyond word "
                                   "identity.",
                       epilog=columns_help())
    _add_results(p)
    p.add_argument("--tag", required=True, help="tag name (quote it: --tag '``')")
    p.add_argument("--site", help="only this site (default: all)")
    p.add_argument("-k", type=int, default=5, help="how many cells (default 5)")
    _add_ranking(p)
    p.set_defaults(func=_top)


def _add_results(p: argparse.ArgumentParser) -> None:
    """``--results`` or ``--run``: where the probe results are read."""
    p.add_argument("--results", help="results directory of probing fit (default: RUN/probes "
                                     "with --run)")
    p.add_argument("--run", help="run directory: read RUN/probes (default: none)")


def _add_ranking(p: argparse.ArgumentParser) -> None:
    from probing.controls import SELECTIVITY_CONTROLS
    from probing.top import RANKINGS

    p.add_argument("--by", default="f1", choices=RANKINGS,
                   help="rank by the tag's F1 (f1, default); selectivity: F1 minus one "
                        "control's F1 (--control); selectivity-accuracy: the probe's accuracy "
                        "minus the control task's (Hewitt & Liang); selectivity-f1: F1 minus "
                        "the highest control F1 of the cell, lexical baseline included; "
                        "beyond-lexical: on ambiguous tokens, F1 minus the lexical baseline's "
                        "(lower end of its 95%% interval); compression: MDL")
    p.add_argument("--control", choices=SELECTIVITY_CONTROLS,
                   help="control selectivity is measured against (default: the strongest "
                        "fitted per cell that the fit ran: random weights, else the control "
                        "task, else shuffled labels; accuracy selectivity: the control task)")


def _top(args: argparse.Namespace) -> int:
    from probing.results import read_results
    from probing.top import format_top, top_cells

    results = read_results(resolve(args.results, args.run, "probes", "results"))
    rows = top_cells(results, args.tag, [args.site] if args.site else None, args.k,
                     by=args.by, control=args.control)
    print(format_top(rows, args.tag, args.by))
    return 0


def _add_summary(sub) -> None:
    p = sub.add_parser("summary", help="headline findings of a run directory, or in how "
                                       "many of several runs each holds",
                       description="Headline findings of a run directory: the best probe "
                                   "heads per tag with their controls, and one line per case "
                                   "study. With several run directories (seeds, thread "
                                   "counts): per finding and per criterion, in how many runs "
                                   "it holds, with the spread of its score.")
    p.add_argument("--run", required=True, nargs="+", metavar="RUN",
                   help="run directory (runs/NAME), or several")
    _add_ranking(p)
    p.set_defaults(func=_summary)


def _summary(args: argparse.Namespace) -> int:
    from probing.summary import summarize, summarize_runs

    if len(args.run) > 1:
        if args.by != "f1" or args.control:
            raise UsageError("--by and --control rank one run's probe lines; several runs "
                             "print the k-of-n table only")
        print(summarize_runs(args.run))
        return 0
    print(summarize(args.run[0], by=args.by, control=args.control))
    return 0


def _add_bench(sub) -> None:
    from probing import bench

    p = sub.add_parser("bench", help=bench.HELP, description=bench.HELP[:1].upper() +
                       bench.HELP[1:] + ".")
    bench.add_arguments(p)
    p.set_defaults(func=bench.run_bench)


def _add_studies(sub) -> None:
    for name, module_name in STUDY_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not written yet: leave it out
                continue
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(func=module.run)


def build_parser() -> Parser:
    """The parser of ``python -m probing`` and its subcommands."""
    p = Parser(prog=PROG, description="Probe what attention heads encode.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_fit(sub)
    _add_export(sub)
    _add_top(sub)
    _add_summary(sub)
    _add_bench(sub)
    _add_studies(sub)
    return p


def parsers() -> list[Parser]:
    """Every parser of the stage (the subcommands hang under the one parser)."""
    return [build_parser()]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; library errors propagate (``run_main`` reports them)."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(run_main(main, prog=PROG))
