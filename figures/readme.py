"""The README's pictures, redrawn from a stored run.

    python -m figures.readme --run runs/demo [--out DIR]      # into RUN/figures/readme
    python -m figures.readme --run runs/demo --update-readme  # maintainers: docs/images

Draws the figures named in :data:`README_FIGURES` from the run's results (nothing is
recomputed) as PNGs as wide as the README's column (:func:`readme_dpi`), so that a
picture is shown at its own resolution, not shrunk, under the README's own file names.
They go into the run directory unless ``--update-readme`` asks, in so many words, to
replace the pictures the checkout's README shows (tracked files).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from figures.registry import plan_all
from figures.sources import discover
from headprobe.atomic import atomic_file
from headprobe.cli import Parser, run_main
from headprobe.errors import UsageError
from headprobe.rundir import run_path

PROG = "python -m figures.readme"
README_WIDTH_PX = 880      # the width a README page gives a picture (GitHub's column)
README_DPI_RANGE = (70, 200)
# the README's pictures in this checkout (what --update-readme replaces)
README_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
# figure name (as in ``python -m figures list``) -> file name under docs/images
README_FIGURES = {
    "quote_heads": "quote-heads.png",
    "repeated_scores": "induction-scores.png",
    "f1:``": "probe-f1-openquote.png",
}


def readme_parser() -> Parser:
    p = Parser(prog=PROG, description="Redraw the README's pictures from a stored run "
               f"({', '.join(README_FIGURES)}) as small PNGs.")
    p.add_argument("--run", required=True, metavar="DIR",
                   help="run directory holding probes/ and studies/ (e.g. runs/demo)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="DIR",
                       help="where the pictures go (default RUN/figures/readme)")
    where.add_argument("--update-readme", action="store_true",
                       help="maintainers: replace the README's pictures in this checkout "
                       f"({README_IMAGES}; tracked files)")
    return p


def readme_out(run: str | Path, out: str | Path | None, update_readme: bool) -> Path:
    """Where the pictures go: ``out``, the checkout's docs/images with ``update_readme``,
    else ``RUN/figures/readme``."""
    if update_readme:
        return README_IMAGES
    return Path(out) if out else run_path(run, "figures") / "readme"


def readme_dpi(fig: Any) -> float:
    """The resolution that makes ``fig`` README_WIDTH_PX wide (within README_DPI_RANGE): a
    narrow figure is drawn sharper instead of being shown small, a wide one is not drawn
    at more pixels than the page shows."""
    lo, hi = README_DPI_RANGE
    return float(min(hi, max(lo, README_WIDTH_PX / fig.get_size_inches()[0])))


def write_readme_figures(run: str | Path, out: str | Path) -> list[Path]:
    """Draw README_FIGURES from run directory ``run`` into ``out``; the paths written.

    A UsageError names the figures the run cannot give (a study that was not run).
    """
    if not Path(run).is_dir():
        raise UsageError(f"run directory {run} does not exist (make it with "
                         "bash scripts/demo.sh)")
    planned, _ = plan_all(discover([str(run)]), list(README_FIGURES))
    by_name = {p.name: p for p in planned}
    missing = [name for name in README_FIGURES if name not in by_name]
    if missing:
        raise UsageError(f"{run} cannot give the README figure(s) {', '.join(missing)}; "
                         "run the whole demo (bash scripts/demo.sh) first")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, file_name in README_FIGURES.items():
        fig = by_name[name].draw()
        with atomic_file(out / file_name) as tmp:
            # no metadata: the same results give the same bytes
            fig.savefig(tmp, format="png", dpi=readme_dpi(fig), metadata={"Software": None})
        plt.close(fig)
        written.append(out / file_name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = readme_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    out = readme_out(args.run, args.out, args.update_readme)
    for path in write_readme_figures(args.run, out):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    if args.update_readme:
        print("replaced the README's pictures (tracked files): review and commit them")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, prog=PROG))
