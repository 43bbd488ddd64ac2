"""``python -m figures``: redraw figures from stored results, list them, or build the viewer.

    python -m figures --results DIR... --out FIGDIR [--run runs/NAME]
                      [--format png,pdf,svg] [--only NAME,...] [--force]
    python -m figures list [--results DIR...] [--run runs/NAME]
    python -m figures viewer --store FILE.h5 --model M --story ID [--layer L] --out page.html
    python -m figures atlas [--results DIR...] [--run runs/NAME] [--out FIGDIR|page.html]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from figures.index import INDEX_FILE, write_index
from figures.registry import PAGES, Planned, figure_types, matches, plan_all
from figures.sources import discover
from figures.writer import FORMATS, input_hashes, save_figure, up_to_date
from headprobe.cli import Parser, run_main, split_list
from headprobe.errors import UsageError, opt
from headprobe.failures import DamagedFile
from headprobe.locks import claim_output
from headprobe.rundir import model_of_store, require_input, run_path

PROG = "python -m figures"
COMMANDS = ("list", "viewer", "atlas")


def draw_parser() -> Parser:
    p = Parser(prog=PROG, description="Redraw figures from stored results (nothing is "
               "recomputed). Subcommands: 'list' (what can be drawn), 'viewer' (attention page), "
               "'atlas' (head atlas page).")
    p.add_argument("--results", nargs="+", metavar="DIR", default=[],
                   help="probe results dirs, study dirs, or run dirs holding probes/ and studies/ "
                   "(default: --run's results)")
    p.add_argument("--run", metavar="DIR", help="run directory: its results, figures into "
                   "RUN/figures unless --out is given (default: none)")
    p.add_argument("--out", metavar="FIGDIR",
                   help="where figures go (default: RUN/figures with --run)")
    p.add_argument("--format", default="png,pdf", help="comma-separated formats out of "
                   f"{','.join(FORMATS)} (default png,pdf)")
    p.add_argument("--only", default="", help="comma-separated figure names or patterns "
                   "(e.g. probes_keys,f1:VBD,f1,repeated_*); see 'list' (default: every "
                   "figure the results give)")
    p.add_argument("--force", action="store_true", help="redraw even figures that are up to date")
    return p


def list_parser() -> Parser:
    p = Parser(prog=f"{PROG} list", description="Name the figures that can be drawn; with "
               "--results or --run, the concrete figures found there.")
    p.add_argument("--results", nargs="+", metavar="DIR", default=[],
                   help="probe results dirs, study dirs, or run dirs (default: none: every "
                        "figure the tool draws)")
    p.add_argument("--run", metavar="DIR", help="run directory whose results to list "
                   "(default: none)")
    return p


def viewer_parser() -> Parser:
    p = Parser(prog=f"{PROG} viewer", description="Write a self-contained HTML page showing "
               "where every head attends on one story (no network needed to view it).")
    p.add_argument("--store", metavar="FILE.h5", help="activation store (its token table; default: "
                   "RUN/activations.h5 with --run)")
    p.add_argument("--run", metavar="DIR", help="run directory (store RUN/activations.h5; default: "
                   "none)")
    p.add_argument("--model", metavar="M", help="model the patterns come from (hub name or "
                   "local HF directory; default: the model named in the store, or RUN/model)")
    p.add_argument("--story", type=int, metavar="ID", help="story id (default: the quote "
                   "study's example story of --run, else the store's first story; the page "
                   "names the story and how to pick another)")
    p.add_argument("--layer", type=int, default=0, help="layer shown first (default 0)")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="keep only the story's first N tokens (default: all)")
    p.add_argument("--out", required=True, metavar="page.html", help="output HTML file")
    return p


def atlas_parser() -> Parser:
    p = Parser(prog=f"{PROG} atlas", description="Write the head atlas: one offline HTML page "
               "with a layers x heads grid coloured by any stored metric, a card per head and "
               "a search (from stored results only).")
    p.add_argument("--results", nargs="+", metavar="DIR", default=[],
                   help="probe results dirs, study dirs, or run dirs (default: --run's results)")
    p.add_argument("--run", metavar="DIR", help="run directory: its results, the page into "
                   "RUN/figures/atlas.html unless --out is given (default: none)")
    p.add_argument("--out", metavar="FIGDIR|page.html", help="the page (a .html path) or the "
                   "folder it goes into as atlas.html (default: RUN/figures with --run)")
    p.add_argument("--store", metavar="FILE.h5", help="activation store: every card shows its "
                   "head's activity on one story (default: RUN/activations.h5 when there)")
    p.add_argument("--story", type=int, metavar="ID", help="the story of that trace (default: "
                   "the studies' example story, else the store's first)")
    return p


def _result_dirs(results: Sequence[str], run: str | None) -> list[str]:
    dirs = list(results)
    if run:
        require_input("run", run)
        dirs.append(run)
    if not dirs:
        raise UsageError(f"give {opt('results')} DIR... or {opt('run')} runs/NAME")
    return dirs


def _formats(text: str) -> list[str]:
    formats = [f.lower().lstrip(".") for f in split_list(text)]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"unknown {opt('format')} {','.join(bad) or text!r}; choose from "
                         f"{','.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def draw_main(argv: Sequence[str]) -> int:
    args = draw_parser().parse_args(argv)
    formats = _formats(args.format)
    only = split_list(args.only)
    if args.out:
        out = Path(args.out)
    elif args.run:
        out = run_path(args.run, "figures")
    else:
        raise UsageError("give --out FIGDIR or --run runs/NAME")
    claim_output(out)
    sources = discover(_result_dirs(args.results, args.run))
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    planned, not_planned = plan_all(sources, only)
    pages = [name for name in PAGES if only and matches(name, only)]
    if only and not planned and not pages:
        reasons = "; ".join(f"{n}: {why}" for n, why in not_planned)
        raise UsageError(f"no figure matches --only {args.only}"
                         + (f" ({reasons})" if reasons else "; see 'python -m figures list'"))
    out.mkdir(parents=True, exist_ok=True)
    written = fresh = 0
    for item in planned:
        if _draw_one(item, out, formats, args.force, argv):
            written += 1
        else:
            fresh += 1
    if pages:
        print(f"wrote       {_write_atlas(sources, out, args.run).name}")
        written += 1
    for name, why in not_planned:
        print(f"not planned {name}: {why}", file=sys.stderr)
    index = write_index(out)
    print(f"{written} figure(s) written, {fresh} up to date, {len(not_planned)} not planned "
          f"-> {out} (index: {index})")
    return 0


def _draw_one(item: Planned, out: Path, formats: list[str], force: bool,
              argv: Sequence[str]) -> bool:
    """Draw and save one figure unless it is up to date; True when written."""
    inputs = input_hashes(item.inputs)
    params = {"name": item.name, **item.params}
    if not force and up_to_date(out, item.stem, formats, inputs, params):
        print(f"up to date  {item.stem}")
        return False
    fig = item.draw()
    paths = save_figure(fig, out, item.stem, formats, inputs, params,
                        argv=[PROG, *argv])
    print(f"wrote       {item.stem} ({', '.join(p.suffix[1:] for p in paths)})")
    return True


def _write_atlas(sources: Sequence, out: Path, run: str | None, store: str | None = None,
                 story: int | None = None) -> Path:
    """The atlas of ``sources``; its activity trace from ``store``, else from the run's store
    when there (skipped, in one line, when that store cannot give one)."""
    from figures.atlas import write_atlas
    from figures.atlas_data import example_story, store_trace

    trace = None
    if store is not None:
        trace = store_trace(store, story, run, example_story(sources))
    elif run and run_path(run, "store").is_file():
        try:
            trace = store_trace(run_path(run, "store"), story, run, example_story(sources))
        except DamagedFile:
            raise                  # a damaged store is refused, never drawn around
        except UsageError as exc:
            print(f"atlas without an activity trace: {exc}", file=sys.stderr)
    title = f"head atlas: {Path(run).resolve().name}" if run else "head atlas"
    return write_atlas(sources, out, title, trace)


def atlas_main(argv: Sequence[str]) -> int:
    args = atlas_parser().parse_args(argv)
    if args.out:
        out = Path(args.out)
    elif args.run:
        out = run_path(args.run, "figures")
    else:
        raise UsageError("give --out FIGDIR or --run runs/NAME")
    sources = discover(_result_dirs(args.results, args.run))
    if args.store:
        require_input("store", args.store)
    elif args.story is not None and not (args.run and run_path(args.run, "store").is_file()):
        raise UsageError(f"{opt('story')} names a story of the store: give {opt('store')} "
                         "FILE.h5 (or a --run with activations.h5)")
    claim_output(out)
    page = _write_atlas(sources, out, args.run, args.store, args.story)
    print(f"wrote {page}")
    if (page.parent / INDEX_FILE).is_file():      # a figures directory: link the page
        write_index(page.parent)
    return 0


def list_main(argv: Sequence[str]) -> int:
    args = list_parser().parse_args(argv)
    if not args.results and not args.run:
        width = max(len(t.name) for t in figure_types())
        for ftype in figure_types():
            print(f"{ftype.name.ljust(width)}  [{ftype.source}]  {ftype.help}")
        for name, text in PAGES.items():
            print(f"{name.ljust(width)}  [run]  {text}")
        return 0
    sources = discover(_result_dirs(args.results, args.run))
    planned, not_planned = plan_all(sources)
    for item in planned:
        print(f"{item.name}\t{item.stem}\t{', '.join(str(p) for p in item.inputs)}")
    for name, why in not_planned:
        print(f"{name}\t(not planned: {why})")
    for name in PAGES:
        print(f"{name}\t{name}.html\t{', '.join(str(s.path) for s in sources)}")
    return 0


def viewer_main(argv: Sequence[str]) -> int:
    from figures.viewer import build_viewer

    args = viewer_parser().parse_args(argv)
    store = args.store or (str(run_path(args.run, "store")) if args.run else None)
    if store is None:
        raise UsageError("give --store FILE.h5 or --run runs/NAME")
    model = args.model or _model_of(Path(store), args.run)
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    claim_output(args.out)
    story = args.story if args.story is not None else _pick_story(Path(store), args.run)
    page = build_viewer(store, model, story, args.out, args.layer, args.max_tokens)
    print(f"wrote {page}")
    if (Path(page).parent / INDEX_FILE).is_file():      # a figures directory: link the page
        write_index(Path(page).parent)
    return 0


def _pick_story(store: Path, run: str | None) -> int:
    """The story to show when none is given (the quote study's example of ``run``, else
    the store's first), said on stderr with a few ids to choose from instead."""
    from extract.store import open_store
    from headprobe.reprs import few
    from headprobe.stories import read_stories

    with open_store(store) as st:
        ids = [s.story_id for s in read_stories(st)]
    if not ids:
        raise UsageError(f"{store} holds no stories")
    study = Path(run, "studies", "quote") if run else None
    why = "the store's first story"
    story = ids[0]
    if study is not None and study.is_dir():
        from probing.study_io import read_study

        example = read_study(study).meta.get("example_story_id")
        if example in ids:
            story, why = int(example), "the quote study's example"
    print(f"no --story given: showing story {story} ({why}); the store holds {len(ids)} "
          f"stories, ids {few(ids, shown=10)}; pick one with --story ID", file=sys.stderr)
    return story


def _model_of(store: Path, run: str | None) -> str:
    """The model named in the store's attributes, else RUN/model."""
    from extract.store import open_store

    with open_store(store) as st:
        name = model_of_store(st.attrs, run)
    if name is None:
        raise UsageError(f"give {opt('model')} M (the store does not name its model)")
    return name


def parsers() -> list[Parser]:
    """Every parser of the stage: drawing, list, viewer and atlas."""
    return [draw_parser(), list_parser(), viewer_parser(), atlas_parser()]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "list":
        return list_main(argv[1:])
    if argv and argv[0] == "viewer":
        return viewer_main(argv[1:])
    if argv and argv[0] == "atlas":
        return atlas_main(argv[1:])
    return draw_main(argv)


if __name__ == "__main__":
    sys.exit(run_main(main, prog=PROG))
