"""Benchmark: the probe grid with its controls, the control task and MDL, fitted the
reference way (one scikit-learn LogisticRegression with newton-cg per cell, per control and
per MDL portion) against the batched ``fast`` solver, side by side.

    python -m probing bench [--stories 600] [--store FILE.h5] [--sites key] [--layers 0,4]
                            [--jobs 1]
    python -m probing bench --rss [--small 1000] [--large 3000] [--sites key] [--layers 0,4]
                                  [--max-test-tokens N]
    python -m probing bench --verify [--stories 600] [--repeat 3] [--sites key] [--layers all]

Without ``--store`` the store is built from the shared model over the shared validation
text (cached under the temp directory) via the datasets_build and extract Python APIs.
Each (site, layer) is fitted by both solvers in turn, with the same number of threads, so
the ratio is measured in this one run under the same load. Goals: the fast grid at least
10x faster, every accuracy within 0.01 and every code length within 1 % of the reference.

With ``--rss`` it measures memory instead (probing.bench_rss): the peak resident set size
of ``probing fit`` on the stores of ``--small`` and ``--large`` stories, side by side.
With ``--verify`` it times ``probing fit`` with and without verification of what it reads
(probing.bench_verify) and prints the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from headprobe.cli import split_list
from headprobe.errors import UsageError, only_with, opt
from probing.grid import GridConfig, run_grid

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEADPROBE_SHARED", REPO.parent / "shared"))
HELP = ("time the probe grid with controls, control task and MDL: scikit-learn newton-cg "
        "per cell and portion vs the batched fast solver")
# what both solvers fit: the default controls, the control task and the online code
CONTROLS = ("majority", "shuffled", "control-task")
ACCURACIES = ("accuracy", "accuracy_shuffled", "accuracy_control_task")
CODELENGTHS = ("codelength", "codelength_control_task")
GOALS = {"speed-up": 10.0, "accuracy": 0.01, "codelength": 0.01}


# options that only one mode of the bench reads, with their defaults
MODE_OPTIONS = {"rss": {"small": 1000, "large": 3000, "max_test_tokens": None},
                "verify": {"repeat": 3}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m probing bench``."""
    p.add_argument("--stories", type=int, default=600,
                   help="stories of valid-3117.txt to build the store from (default 600)")
    p.add_argument("--store", help="use this activation store instead of building one "
                                   "(default: build one)")
    p.add_argument("--model", default=str(SHARED / "models" / "tinystories-8L"),
                   help="model directory for the built store (default: the shared model)")
    p.add_argument("--text", default=str(SHARED / "data" / "tinystories" / "valid-3117.txt"),
                   help="stories for the built store (default: the shared valid-3117.txt)")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "headprobe-bench"),
                   help="where built stores are cached")
    p.add_argument("--layers", default="0,4",
                   help="comma-separated layers (default 0,4; 'all' for every layer)")
    p.add_argument("--sites", default="key", help="sites (default key)")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes of probing fit (default 1; the bench fits one block at a "
                        "time, each on one thread, so more changes nothing)")
    p.add_argument("--rss", action="store_true",
                   help="measure the peak memory (RSS) of probing fit on the stores of --small "
                        "and --large stories instead of timing the solvers")
    p.add_argument("--verify", action="store_true",
                   help="time probing fit on the store of --stories with verification of what "
                        "it reads on and off (HEADPROBE_VERIFY) and print the ratio")
    p.add_argument("--repeat", type=int, default=MODE_OPTIONS["verify"]["repeat"],
                   help="runs of each setting of --verify (default 3; medians compared)")
    p.add_argument("--small", type=int, default=MODE_OPTIONS["rss"]["small"],
                   help="stories of the smaller store of --rss (default 1000)")
    p.add_argument("--large", type=int, default=MODE_OPTIONS["rss"]["large"],
                   help="stories of the larger store of --rss (default 3000)")
    p.add_argument("--max-test-tokens", type=int, metavar="N",
                   help="pass --max-test-tokens N to the fits of --rss (a test sample of whole "
                        "stories); the goal is then a ratio of at most 1.1 (default: the whole "
                        "test split, goal 1.3)")


def build_store(text: str, model: str, stories: int, cache: str) -> Path:
    """Build (or reuse) the tagged dataset and activation store of the first ``stories``."""
    from datasets_build.build import build_dataset
    from extract.extractor import extract_store

    if stories < 2:
        raise UsageError(f"{opt('stories')} must be at least 2")
    base = Path(cache) / f"{Path(model).name}-{Path(text).stem}-{stories}"
    dataset, store = base / "dataset", base / "activations.h5"
    if not store.exists():
        if not dataset.exists():
            build_dataset(text, model, dataset, limit=stories, test_fraction=0.2, seed=0)
        extract_store(dataset, model, store, sites=("key", "query"), dtype="float32")
    return store


def _grid(store: Path, site: str, layer: int, solver: str, jobs: int
          ) -> tuple[dict[str, np.ndarray], float]:
    """The arrays of one (site, layer) of the grid and the seconds they took."""
    config = GridConfig(sites=(site,), layers=[layer], solver=solver, controls=CONTROLS,
                        mdl=True, n_boot=1, jobs=jobs)
    start = time.perf_counter()
    arrays = run_grid(store, config, log=lambda msg: None).arrays
    return arrays, time.perf_counter() - start


def _differences(ref: dict[str, np.ndarray], fast: dict[str, np.ndarray]) -> tuple[float, float]:
    """Largest accuracy difference and largest relative code-length difference."""
    acc = max(float(np.abs(ref[n] - fast[n]).max()) for n in ACCURACIES)
    bits = max(float(np.abs(fast[n] / ref[n] - 1).max()) for n in CODELENGTHS)
    return acc, bits


def _layers(text: str, n_layers: int) -> list[int]:
    if text == "all":
        return list(range(n_layers))
    try:
        layers = [int(x) for x in split_list(text)]
    except ValueError:
        raise UsageError(f"{opt('layers')} takes integers or 'all', got {text!r}") from None
    if not layers or any(not 0 <= layer < n_layers for layer in layers):
        raise UsageError(f"{opt('layers')} must lie in 0..{n_layers - 1}")
    return layers


def _check_mode(args: argparse.Namespace) -> None:
    """Refuse both modes at once, and an option of one mode given without it."""
    if args.rss and args.verify:
        raise UsageError(f"give {opt('rss')} or {opt('verify')}, not both")
    for mode, options in MODE_OPTIONS.items():
        given = [name for name, default in options.items() if getattr(args, name) != default]
        if given and not getattr(args, mode):
            raise only_with(given, mode)


def run_bench(args: argparse.Namespace) -> int:
    """Time both solvers on every chosen (site, layer) of the store and print the comparison."""
    from extract.store import open_store

    _check_mode(args)
    if args.rss:
        from probing.bench_rss import run_rss

        return run_rss(args)
    if args.verify:
        from probing.bench_verify import run_verify

        return run_verify(args)
    if args.jobs < 1:
        raise UsageError(f"{opt('jobs')} must be positive")
    path = Path(args.store) if args.store else build_store(args.text, args.model, args.stories,
                                                           args.cache)
    with open_store(path) as store:
        shape = (store.n_layers, store.n_heads, store.d_head)
    layers, sites = _layers(args.layers, shape[0]), split_list(args.sites)
    print(f"store {path}: {shape[0]} layers x {shape[1]} heads x d_head {shape[2]}; "
          f"{len(sites)} site(s) x {len(layers)} layer(s); controls {', '.join(CONTROLS)} "
          f"and MDL ({', '.join(CODELENGTHS)}); one thread", flush=True)
    t_ref = t_fast = worst_acc = worst_bits = 0.0
    for site in sites:
        for layer in layers:
            ref, dt_ref = _grid(path, site, layer, "sklearn", args.jobs)
            fast, dt_fast = _grid(path, site, layer, "fast", args.jobs)
            acc, bits = _differences(ref, fast)
            t_ref, t_fast = t_ref + dt_ref, t_fast + dt_fast
            worst_acc, worst_bits = max(worst_acc, acc), max(worst_bits, bits)
            print(f"{site:5} layer {layer}: sklearn {dt_ref:7.1f} s  fast {dt_fast:6.1f} s  "
                  f"({dt_ref / dt_fast:5.1f}x)  compression {ref['compression'].mean():.3f} vs "
                  f"{fast['compression'].mean():.3f}  max |accuracy diff| {acc:.4f}  "
                  f"max code length diff {100 * bits:.3f} %", flush=True)
    speedup = t_ref / max(t_fast, 1e-9)
    met = (speedup >= GOALS["speed-up"] and worst_acc <= GOALS["accuracy"]
           and worst_bits <= GOALS["codelength"])
    print(f"reference (sklearn newton-cg, one fit per cell, control and portion): {t_ref:.1f} s")
    print(f"fast (batched torch, all heads of a layer at once):                  {t_fast:.1f} s")
    print(f"speed-up: {speedup:.1f}x   largest accuracy difference: {worst_acc:.4f}   "
          f"largest code length difference: {100 * worst_bits:.3f} %   goals (>= 10x, "
          f"<= 0.01, <= 1 %): {'met' if met else 'NOT met'}")
    return 0
