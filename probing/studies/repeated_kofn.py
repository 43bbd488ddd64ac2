"""Found in k of n: the ``repeated`` study's induction circuit over several models.

``python -m probing repeated --model A B C --out DIR`` runs the study on each model (the
seeds of one recipe, say ``RUN/model-seed*`` of ``extract train --seeds``) into
``DIR/<model directory name>`` and then writes this aggregate into ``DIR/k-of-n``;
``python -m probing repeated-k-of-n --studies DIR/a DIR/b ... --out OUT`` aggregates
results written earlier. Per criterion of the circuit line (:mod:`probing.thresholds`):
each model's value, in how many models it clears its threshold (and by the robust
margin), its minimum, median and maximum, and which heads the models picked.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headprobe.atomic import check_target
from headprobe.errors import UsageError
from headprobe.heads import head_label
from headprobe.locks import claim_output
from probing import thresholds as th
from probing.kofn import FindingTally, kofn_table, tally
from probing.studies import repeated
from probing.studies.common import (
    add_output_arguments,
    check_counts,
    finish_study,
    load_study_model,
    output_dir,
)
from probing.study_io import LAYER_HEAD, Array, Layout, StudyResults, read_study, write_study

HELP = "in how many of several models the repeated study's induction circuit holds"
STUDY = "repeated-k-of-n"
KOFN_DIR = "k-of-n"       # the aggregate's directory beside the models' results
MODEL_LAYER_HEAD = ("model", *LAYER_HEAD)


def _circuit(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda meta: meta["circuit"].get(key)


# each criterion of the circuit line: (threshold, its value in a repeated study's meta,
# the head it is measured on)
CRITERIA: tuple[tuple[th.Threshold, Callable[[dict[str, Any]], float | None], str], ...] = (
    (th.CIRCUIT_PREV_TOKEN, _circuit("prev_token_score"), "prev_token_head"),
    (th.CIRCUIT_INDUCTION, _circuit("induction_score"), "induction_head"),
    (th.CIRCUIT_ACCURACY, lambda meta: meta["accuracy_second"], ""),
    (th.CIRCUIT_ABLATION, _circuit("ablation_drop"), "prev_token_head"),
    (th.CIRCUIT_RANDOM_DROP, _circuit("random_drop"), "random_head"),
)
GRIDS = ("induction_score", "prev_token_score", "ablation_drop")
SAME_SHAPE = "when every model has the same layers and heads"

LAYOUT = Layout(STUDY, (
    Array("model_name", ("model",), "str", "the model each row of results was measured on"),
    Array("criterion_name", ("criterion",), "str", "what each criterion measures"),
    Array("bound", ("criterion",), "float", "each criterion's threshold"),
    Array("ceiling", ("criterion",), "bool",
          "true where a value must stay at or below the threshold, false where it must reach it"),
    Array("value", ("model", "criterion"), "float",
          "each model's value of each criterion (NaN: not measured)"),
    Array("holds", ("model", "criterion"), "bool", "the value clears its threshold"),
    Array("circuit_named", ("model",), "bool",
          "the study named a circuit: both heads reach its --min-score"),
    Array("circuit_holds", ("model",), "bool",
          "the circuit is named and every criterion clears its threshold"),
    Array("prev_token_head", ("model", "layer/head"), "int",
          "the circuit's previous-token head (-1, -1: none)"),
    Array("induction_head", ("model", "layer/head"), "int",
          "the circuit's induction head (-1, -1: none)"),
    *(Array(f"model_{name}", MODEL_LAYER_HEAD, "float", f"each model's {name} of every head",
            SAME_SHAPE) for name in GRIDS)))


def _head(circuit: dict[str, Any], key: str) -> str | None:
    head = circuit.get(key) if key else None
    return None if head is None else head_label(*head)


def circuit_tallies(metas: Sequence[dict[str, Any]]) -> list[FindingTally]:
    """The k-of-n rows of the circuit over the ``metas`` of repeated studies: the circuit
    as a whole (named and every criterion holds), then the study's own naming."""
    circuits = [m["circuit"] for m in metas]
    tallies = [tally(t, [get(m) for m in metas],
                     [_head(c, key) for c in circuits] if key else None)
               for t, get, key in CRITERIA]
    pairs = [f"{_head(c, 'prev_token_head')} -> {_head(c, 'induction_head')}"
             if "prev_token_head" in c else None for c in circuits]
    named = np.array([bool(c.get("found")) for c in circuits])
    whole = FindingTally("induction circuit", tallies, pairs)
    whole.found = whole.found_in() & named
    minimum = min((c.get("min_score", th.CIRCUIT_MIN_SCORE) for c in circuits),
                  default=th.CIRCUIT_MIN_SCORE)
    return [whole, FindingTally(f"circuit named (both heads >= {minimum:.2f})", [], pairs,
                                found=named)]


def aggregate(studies: Sequence[StudyResults], names: Sequence[str]
              ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(arrays as declared in LAYOUT, meta, report) of repeated ``studies`` named ``names``."""
    metas = [r.meta for r in studies]
    rows = circuit_tallies(metas)
    whole = rows[0]
    values = np.stack([t.values for t in whole.tallies], axis=1)      # [model, criterion]
    arrays: dict[str, Any] = {
        "model_name": np.array(names), "criterion_name": np.array([t.name for t, *_ in CRITERIA]),
        "bound": np.array([t.bound for t, *_ in CRITERIA]),
        "ceiling": np.array([t.ceiling for t, *_ in CRITERIA]),
        "value": values, "holds": np.stack([t.holds for t in whole.tallies], axis=1),
        "circuit_named": np.asarray(rows[1].found_in()), "circuit_holds": whole.found_in(),
        **{key: np.array([m["circuit"].get(key, [-1, -1]) for m in metas])
           for key in ("prev_token_head", "induction_head")}}
    if len({r[GRIDS[0]].shape for r in studies}) == 1:
        arrays.update({f"model_{g}": np.stack([r[g] for r in studies]) for g in GRIDS})
    report = "\n".join([
        f"induction circuit found in {int(whole.found_in().sum())} of {len(names)} models "
        f"({int(whole.robust_in().sum())} robustly)",
        kofn_table(rows), "", "models: " + ", ".join(names)])
    meta = {"study": STUDY, "models": [m.get("model") for m in metas],
            "studies": [str(r.path) for r in studies], "names": list(names),
            "thresholds": {t.name: t.words() for t, *_ in CRITERIA},
            "robust_margin": th.ROBUST_MARGIN, "found": int(whole.found_in().sum()),
            "robust": int(whole.robust_in().sum()), "n": len(names)}
    return arrays, meta, report


def read_repeated(paths: Sequence[str | Path]) -> list[StudyResults]:
    """The repeated studies in ``paths``; a UsageError names one of another study."""
    studies = [read_study(p, study=repeated.STUDY) for p in paths]
    for r in studies:
        if r.study != repeated.STUDY:
            raise UsageError(f"{r.path} holds {r.study} results, not {repeated.STUDY}")
    return studies


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--studies", nargs="+", required=True, metavar="DIR",
                        help="results directories of python -m probing repeated, one per model")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    out = output_dir(args, STUDY)
    studies = read_repeated(args.studies)
    arrays, meta, text = aggregate(studies, model_names(args.studies))
    return finish_study(out, LAYOUT, arrays, meta, text, args.overwrite)


def model_names(models: Sequence[str | Path]) -> list[str]:
    """One name per model (or results directory): the last part of its path or hub name,
    numbered when two share it."""
    names = [Path(str(m).rstrip("/")).name or str(m) for m in models]
    if len(set(names)) < len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names)]
    return names


def run_models(args: argparse.Namespace, models: Sequence[str]) -> int:
    """``python -m probing repeated --model A B ... --out DIR``: the study of each model
    into ``DIR/<name>`` (one line each: its circuit), then the aggregate into
    ``DIR/k-of-n`` (its table printed)."""
    if not args.out:
        raise UsageError("several models write under --out DIR (one directory per model "
                         "and DIR/k-of-n), not under --run")
    check_counts(args)
    out = check_target(claim_output(args.out), args.overwrite, "directory")
    names = model_names(models)
    out.mkdir(parents=True, exist_ok=True)
    for model_id, name in zip(models, names, strict=True):
        model = load_study_model(model_id, args.device, args.model_dtype)
        arrays, meta, text = repeated.study_of(args, model_id, model)
        del model
        write_study(out / name, repeated.LAYOUT, arrays, meta, text, args.overwrite)
        print(f"{name}: {repeated.circuit_line(meta)}")
    studies = read_repeated([out / name for name in names])
    arrays, meta, text = aggregate(studies, names)
    print(f"wrote {len(names)} studies under {out}")
    return finish_study(out / KOFN_DIR, LAYOUT, arrays, meta, text, args.overwrite)
