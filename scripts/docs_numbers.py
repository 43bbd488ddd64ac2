"""Regenerate every number that docs/*.md and README.md quote about the shared model and the
demo run, each printed beside the words it stands next to in the docs.

    python scripts/docs_numbers.py [--work DIR] [--demo runs/demo] [--shared ../shared]
                                   [--stories 1000] [--fresh]

The shared model's numbers come from the first ``--stories`` stories of ``valid-3117.txt``
with each command's default options (and the controls the README's reviewer command asks
for), run into ``--work`` (default ``runs/docs-numbers``)::

    python -m datasets_build --source SHARED/data/tinystories/valid-3117.txt \\
        --tokenizer SHARED/models/tinystories-8L --limit 1000 --run WORK/shared
    python -m datasets_build ... --align first|last|mid --out WORK/align-RULE/dataset
    python -m extract --run WORK/shared --model SHARED/models/tinystories-8L
    python -m probing fit --run WORK/shared --controls control-task,lexical-lower
    python -m probing summary --run WORK/shared
    python -m probing repeated --model SHARED/models/tinystories-8L --no-mlp-grid \\
        --out WORK/shared/studies/repeated

The README's 300-story block runs into ``WORK/ts`` the same way (``--limit 300``; the
random-weights store, ``probing fit --control-store ... --controls CONTROLS``, ``probing
quote`` and ``probing repeated --no-mlp-grid``), and its numbers are read from ``probing
summary``. A step whose output is already in ``--work`` is reused (``--fresh`` runs every
step again). The demo's numbers are read from the summary of ``--demo`` (``bash
scripts/demo.sh``); when it has not been run they are skipped, and the script says so.

Each number prints as ``FILE | label: value``. To quote a new number, add one ``Quote`` to
``QUOTES``: the file it appears in, the words beside it, and how to compute it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RULES = ("first", "last", "mid", "priority")
# added to the defaults (majority, shuffled, lexical, bootstrap)
CONTROLS = "control-task,lexical-lower"
OPENING, CLOSING = "``", "''"
HEADLINE_TAGS = (OPENING, CLOSING, "VBD", "PRP$")
# the summary lines the README quotes
FINDINGS = ("quotation head", "induction head", "previous-token head", "tag probe")


@dataclass
class Runs:
    """The runs the numbers come from, each made (or reused) on first use."""

    work: Path
    shared: Path
    demo: Path
    stories: int
    fresh: bool
    done: set[str] = field(default_factory=set)

    @property
    def model(self) -> Path:
        return self.shared / "models" / "tinystories-8L"

    @property
    def run_dir(self) -> Path:
        return self.work / "shared"

    def step(self, output: Path, *argv: str, overwrite: str | None = "--overwrite") -> Path:
        """Run ``python -m ARGV`` unless ``output`` exists (and --fresh is off); return it.
        ``overwrite``: the flag that lets the command replace ``output`` (None: not needed)."""
        key = str(output)
        if output.exists() and (not self.fresh or key in self.done):
            return output
        print(f"# python -m {' '.join(argv)}", file=sys.stderr, flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        flags = [overwrite] if overwrite and output.exists() else []
        subprocess.run([sys.executable, "-m", *argv, *flags], check=True, env=env,
                       cwd=REPO, stdout=subprocess.DEVNULL)
        self.done.add(key)
        return output

    def dataset(self, rule: str = "priority") -> Any:
        """The tagged dataset under alignment ``rule`` (priority is the default)."""
        from datasets_build.dataset import load_tagged_dataset

        out = (self.run_dir if rule == "priority" else self.work / f"align-{rule}") / "dataset"
        self.step(out, "datasets_build", "--source",
                  str(self.shared / "data" / "tinystories" / "valid-3117.txt"),
                  "--tokenizer", str(self.model), "--limit", str(self.stories),
                  "--out", str(out), *([] if rule == "priority" else ["--align", rule]))
        return load_tagged_dataset(out)

    @cached_property
    def probes(self) -> Any:
        from probing.results import read_results

        self.dataset()
        self.step(self.run_dir / "activations.h5", "extract", "--run", str(self.run_dir),
                  "--model", str(self.model), "--quiet")
        out = self.step(self.run_dir / "probes", "probing", "fit", "--run", str(self.run_dir),
                        "--controls", CONTROLS)
        return read_results(out)

    @cached_property
    def shared_summary(self) -> list[str]:
        """The lines of ``probing summary`` of the 1,000-story run."""
        assert self.probes is not None   # fits the grid first
        return summary_lines(self.run_dir)

    @cached_property
    def repeated(self) -> Any:
        from probing.study_io import read_study

        out = self.step(self.run_dir / "studies" / "repeated", "probing", "repeated",
                        "--model", str(self.model), "--no-mlp-grid", "--out",
                        str(self.run_dir / "studies" / "repeated"))
        return read_study(out)

    @cached_property
    def atlas(self) -> Path:
        """The head atlas of the 1,000-story run: its probe grid, repeated, quote and
        tag-induction (``--before VBD``) results and the store's activity trace."""
        assert self.probes is not None and self.repeated is not None
        studies = self.run_dir / "studies"
        self.step(studies / "quote", "probing", "quote", "--run", str(self.run_dir))
        self.step(studies / "tag-induction", "probing", "tag-induction", "--run",
                  str(self.run_dir), "--before", "VBD")
        return self.step(self.run_dir / "figures" / "atlas.html", "figures", "atlas", "--run",
                         str(self.run_dir), overwrite=None)

    @cached_property
    def ts_summary(self) -> list[str]:
        """The lines of ``probing summary`` of the README's 300-story run."""
        run, model = self.work / "ts", str(self.model)
        self.step(run / "dataset", "datasets_build", "--source",
                  str(self.shared / "data" / "tinystories" / "valid-3117.txt"),
                  "--tokenizer", model, "--limit", "300", "--run", str(run))
        self.step(run / "activations.h5", "extract", "--run", str(run), "--model", model,
                  "--quiet")
        random = self.step(run / "activations-random.h5", "extract", "--run", str(run),
                           "--model", model, "--reinit-seed", "0", "--out",
                           str(run / "activations-random.h5"), "--quiet")
        self.step(run / "probes", "probing", "fit", "--run", str(run), "--control-store",
                  str(random), "--controls", CONTROLS)
        self.step(run / "studies" / "quote", "probing", "quote", "--run", str(run))
        self.step(run / "studies" / "repeated", "probing", "repeated", "--run", str(run),
                  "--model", model, "--no-mlp-grid")
        return summary_lines(run)

    @cached_property
    def demo_summary(self) -> list[str] | None:
        """The lines of ``probing summary --run DEMO``; None when the demo has not run."""
        return summary_lines(self.demo) if (self.demo / "probes").is_dir() else None


def summary_lines(run: Path) -> list[str]:
    """The lines ``probing summary --run RUN`` prints."""
    from probing.summary import summarize

    return [line.strip() for line in summarize(run).splitlines()]


@dataclass(frozen=True)
class Quote:
    """One number the docs quote: the file, the words beside it, how to compute it."""

    file: str
    label: str
    value: Callable[[Runs], Any]
    demo: bool = False  # comes from the demo run


# ------------------------------------------------------------------ helpers


def tag_count(runs: Runs, rule: str, tag: str) -> int:
    """Tokens whose fine tag is ``tag`` in the dataset aligned with ``rule``."""
    ds = runs.dataset(rule)
    return int(np.sum(ds.token_table()["fine_tag"] == ds.tags["fine"].index(tag)))


def rule_entry(runs: Runs, rule: str) -> dict[str, Any]:
    """manifest["alignment"]["rules"][rule] of the default build."""
    return runs.dataset().manifest["alignment"]["rules"][rule]


def change(runs: Runs, rule: str, pair: str) -> int:
    """How many tokens one fine change (``"from -> to"``) of ``rule`` moved (0 if not among
    the commonest)."""
    return int(rule_entry(runs, rule)["changes"].get(pair, 0))


def control_zeros(runs: Runs, tag: str) -> str:
    """Cells whose control-task F1 for ``tag`` is 0, of all cells."""
    res = runs.probes
    grids = [res.grid("f1_control_task", site, tag) for site in res.sites]
    zeros = sum(int(np.sum(g == 0)) for g in grids)
    return f"{zeros} of {sum(g.size for g in grids)} cells"


def high_cells(runs: Runs, tag: str, above: float = 0.9) -> str:
    """Cells whose F1 for ``tag`` is above ``above``, and how many of them have control-task
    F1 0; with the best cell."""
    res = runs.probes
    n = zero = 0
    best = (-1.0, "")
    for site in res.sites:
        f1, control = res.grid("f1", site, tag), res.grid("f1_control_task", site, tag)
        n += int(np.sum(f1 > above))
        zero += int(np.sum((f1 > above) & (control == 0)))
        layer, head = np.unravel_index(int(np.nanargmax(f1)), f1.shape)
        if f1[layer, head] > best[0]:
            best = (float(f1[layer, head]), f"{site} {res.cell_label(site, layer, head)}")
    return (f"{n} cells above {above} ({zero} of them with control-task F1 0); best "
            f"{best[1]} {best[0]:.3f}")


def best_key(runs: Runs, tag: str) -> str:
    """The best key cell for ``tag`` by F1, beside the lexical baseline's F1."""
    res = runs.probes
    f1 = res.grid("f1", "key", tag)
    layer, head = np.unravel_index(int(np.nanargmax(f1)), f1.shape)
    lexical = float(res.grid("f1_lexical", "key", tag)[layer, head])
    cell = res.cell_label("key", layer, head)
    return f"key {cell} F1 {f1[layer, head]:.3f}, lexical {lexical:.3f}"


def beyond_cells(runs: Runs, tag: str) -> str:
    """How many key and query cells of ``tag`` go beyond word identity (lexical_gain_lo > 0)."""
    res = runs.probes
    grids = [res.grid("lexical_gain_lo", site, tag) for site in res.sites]
    return f"{sum(int(np.sum(g > 0)) for g in grids)} of {sum(g.size for g in grids)} cells"


def circuit_line(meta: dict[str, Any]) -> str:
    """The first line of the study's report (its verdict)."""
    from probing.studies.repeated import circuit_line as line

    return line(meta)


def circuit(runs: Runs) -> dict[str, Any]:
    return runs.repeated.meta["circuit"]


def best_head(runs: Runs, array: str) -> str:
    scores = runs.repeated.arrays[array]
    layer, head = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return f"L{layer}H{head} {scores[layer, head]:.2f}"


def composition(runs: Runs, suffix: str) -> str:
    k = circuit(runs)["k_composition" + suffix]
    pair = " -> ".join(f"L{a}H{b}" for a, b in k["strongest_pair"])
    return (f"{pair} {k['strongest_score']:.3f} against {k['baseline']:.3f} ± "
            f"{k['baseline_sd']:.3f}")


def summary_line(lines: list[str] | None, start: str) -> str:
    """The summary line that starts with ``start``."""
    found = [line for line in lines or [] if line.startswith(start)]
    return found[0] if found else f"(no line starting {start!r} in the summary)"


def rule_row(rule: str) -> list[Quote]:
    """The row of ``rule`` in the table of docs/dataset-format.md."""
    doc, row = "docs/dataset-format.md", f"rule table, {rule}:"
    return [
        Quote(doc, f"{row} tokens tagged ''", lambda r: tag_count(r, rule, CLOSING)),
        Quote(doc, f"{row} tagged ``", lambda r: tag_count(r, rule, OPENING)),
        Quote(doc, f"{row} fine / coarse tag differs from first", lambda r: (
            f"{rule_entry(r, rule)['changed_fine']} / {rule_entry(r, rule)['changed_coarse']}")),
        Quote(doc, f"{row} commonest fine changes", lambda r: rule_entry(r, rule)["changes"]),
        Quote(doc, f"{row} hidden spaCy tokens", lambda r: rule_entry(r, rule)["hidden"]),
        Quote(doc, f"{row} mean share kept", lambda r: rule_entry(r, rule)["visible_share"]),
        Quote(doc, f"{row} least kept tags", lambda r: rule_entry(r, rule)["least_visible"]),
    ]


# ------------------------------------------------------------------ the numbers

DATASET = "docs/dataset-format.md"
QUOTES: list[Quote] = [
    Quote(DATASET, "first 1,000 stories: tokens",
          lambda r: r.dataset().manifest["counts"]["tokens"]),
    Quote(DATASET, "first 1,000 stories: straddling",
          lambda r: r.dataset().manifest["alignment"]["straddle_tokens"]),
    Quote(DATASET, "quotation marks / spaCy's label corrected from the text",
          lambda r: r.dataset().manifest["quote_labels"]),
    *(quote for rule in RULES for quote in rule_row(rule)),
    Quote(DATASET, "`first` drops N% of the closing quotes", lambda r: (
        f"{100 - 100 * tag_count(r, 'first', CLOSING) / tag_count(r, 'priority', CLOSING):.0f}%")),
    Quote(DATASET, "`last` ... N coarse tags change", lambda r: rule_entry(r, "last")[
        "changed_coarse"]),
    Quote(DATASET, "`mid` still loses the closing quote of `\".` (N tokens)",
          lambda r: change(r, "mid", "'' -> .")),
    Quote(DATASET, "`mid`: ` cannot` -> RB (N tokens)", lambda r: change(r, "mid", "MD -> RB")),
    Quote(DATASET, "`priority`: `.` and `,` each still carried by N% and M% of its spaCy tokens",
          lambda r: {t: r.dataset().manifest["alignment"]["rules"]["priority"][
              "least_visible"].get(t) for t in (".", ",")}),
    Quote(DATASET, "`priority` keeps every quotation mark (N tokens '', M times as many as first)",
          lambda r: f"{tag_count(r, 'priority', CLOSING)} tokens, "
                    f"{tag_count(r, 'priority', CLOSING) / tag_count(r, 'first', CLOSING):.0f}x"),
    Quote("docs/probe-results.md", "control-task F1 of `` is 0 in N of M cells",
          lambda r: control_zeros(r, OPENING)),
    Quote("docs/probe-results.md", "cells whose F1 for `` is above 0.9",
          lambda r: high_cells(r, OPENING)),
    *(Quote("docs/probe-results.md", f"1,000 stories: best key cell and lexical baseline of "
            f"{tag}", lambda r, tag=tag: best_key(r, tag)) for tag in HEADLINE_TAGS),
    *(Quote("docs/probe-results.md", f"1,000 stories: cells beyond word identity for {tag}",
            lambda r, tag=tag: beyond_cells(r, tag)) for tag in HEADLINE_TAGS),
    Quote("docs/probe-results.md", "1,000 stories: summary header (ambiguous test tokens)",
          lambda r: summary_line(r.shared_summary, "probe grid")),
    Quote("docs/probe-results.md", "1,000 stories: summary line of ``",
          lambda r: summary_line(r.shared_summary, OPENING)),
    Quote("docs/case-studies.md", "shared model, repeated: circuit line",
          lambda r: circuit_line(r.repeated.meta)),
    Quote("docs/case-studies.md", "shared model, repeated: best induction score",
          lambda r: best_head(r, "induction_score")),
    Quote("docs/case-studies.md", "shared model, repeated: best previous-token score",
          lambda r: best_head(r, "prev_token_score")),
    Quote("docs/case-studies.md", "shared model, repeated: top-1 accuracy first / second copy",
          lambda r: " / ".join(f"{v:.3f}" for v in r.repeated.arrays["accuracy"])),
    Quote("docs/case-studies.md", "shared model, repeated: mean log-probability first / second",
          lambda r: " / ".join(f"{v:.1f}" for v in r.repeated.arrays["logprob"])),
    Quote("docs/case-studies.md", "shared model, repeated: K-composition, processed weights",
          lambda r: composition(r, "")),
    Quote("docs/case-studies.md", "shared model, repeated: K-composition, raw weights",
          lambda r: composition(r, "_raw")),
    Quote("docs/figures.md", "1,000 stories: bytes of the head atlas",
          lambda r: r.atlas.stat().st_size),
    *(Quote("README.md", f"run on 300 stories, its summary ({start})",
            lambda r, start=start: summary_line(r.ts_summary, start)) for start in FINDINGS),
    *(Quote("README.md", f"demo summary ({start})",
            lambda r, start=start: summary_line(r.demo_summary, start), demo=True)
      for start in FINDINGS),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "docs-numbers",
                        help="where the shared model's runs go (default runs/docs-numbers)")
    parser.add_argument("--demo", type=Path, default=REPO / "runs" / "demo",
                        help="the demo's run directory (default runs/demo)")
    parser.add_argument("--shared", type=Path, default=Path(
        os.environ.get("HEADPROBE_SHARED", REPO.parent / "shared")),
        help="the shared assets (default $HEADPROBE_SHARED or ../shared)")
    parser.add_argument("--stories", type=int, default=1000,
                        help="stories of valid-3117.txt (default 1000)")
    parser.add_argument("--fresh", action="store_true", help="run every step again")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    runs = Runs(args.work.resolve(), args.shared.resolve(), args.demo.resolve(), args.stories,
                args.fresh)
    if runs.demo_summary is None:
        print(f"# {args.demo} holds no demo run (bash scripts/demo.sh): its numbers are "
              "skipped")
    for quote in QUOTES:
        if quote.demo and runs.demo_summary is None:
            continue
        print(f"{quote.file} | {quote.label}: {quote.value(runs)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
