"""Benchmark: the probe grid the reference way (one scikit-learn LogisticRegression with
newton-cg per cell, in a loop) against the batched ``fast`` solver, side by side.

    python -m probing bench [--stories 600] [--store FILE.h5] [--layers 0,1] [--jobs 1]

Without ``--store`` the store is built from the shared model over the shared validation
text (cached under the temp directory) via the datasets_build and extract Python APIs.
Both solvers get the same number of threads; the ratio is measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from extract.store import open_store
from headprobe.cli import split_list
from headprobe.errors import UsageError, opt
from probing.labels import fold_tags
from probing.metrics import score
from probing.solvers import fit_fast, fit_sklearn

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEADPROBE_SHARED", REPO.parent / "shared"))
HELP = "time the probe grid: scikit-learn newton-cg per cell vs the batched fast solver"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m probing bench``."""
    p.add_argument("--stories", type=int, default=600,
                   help="stories of valid-3117.txt to build the store from (default 600)")
    p.add_argument("--store", help="use this activation store instead of building one")
    p.add_argument("--model", default=str(SHARED / "models" / "tinystories-8L"),
                   help="model directory for the built store (default: the shared model)")
    p.add_argument("--text", default=str(SHARED / "data" / "tinystories" / "valid-3117.txt"),
                   help="stories for the built store (default: the shared valid-3117.txt)")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "headprobe-bench"),
                   help="where built stores are cached")
    p.add_argument("--layers", help="comma-separated layers (default: all)")
    p.add_argument("--sites", default="key,query", help="sites (default key,query)")
    p.add_argument("--jobs", type=int, default=1, help="threads for both solvers (default 1)")


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


def _timed(fit, *args):
    start = time.perf_counter()
    out = fit(*args)
    return out, time.perf_counter() - start


def run_bench(args: argparse.Namespace) -> int:
    """Time both solvers on every (site, layer) of the store and print the comparison."""
    if args.jobs < 1:
        raise UsageError("--jobs must be positive")
    path = Path(args.store) if args.store else build_store(args.text, args.model, args.stories,
                                                           args.cache)
    sites = split_list(args.sites)
    with open_store(path) as store:
        table = store.tokens(["fine_tag", "split"])
        labels = fold_tags(table["fine_tag"], table["split"], store.tags["fine"])
        layers = ([int(x) for x in split_list(args.layers)] if args.layers
                  else list(range(store.n_layers)))
        K = labels.n_classes
        print(f"store {path}: {store.n_layers} layers x {store.n_heads} heads x d_head "
              f"{store.d_head}; probing {len(sites)} sites x {len(layers)} layers; {K} tags; "
              f"{len(labels.train_y)} train / {len(labels.test_y)} test tokens; "
              f"{args.jobs} thread(s)")
        t_ref = t_fast = 0.0
        worst = 0.0
        torch.set_num_threads(args.jobs)
        with threadpool_limits(limits=args.jobs):
            for site in sites:
                for layer in layers:
                    X = store.read_layer(site, layer).transpose(1, 0, 2)
                    train, test = X[:, labels.train_rows], X[:, labels.test_rows]
                    ref, dt_ref = _timed(fit_sklearn, train, labels.train_y, K)
                    fast, dt_fast = _timed(fit_fast, train, labels.train_y, K)
                    t_ref, t_fast = t_ref + dt_ref, t_fast + dt_fast
                    f_ref = score(labels.test_y, ref.predict(test), K).macro_f1
                    f_fast = score(labels.test_y, fast.predict(test), K).macro_f1
                    diff = float(np.abs(f_ref - f_fast).max())
                    worst = max(worst, diff)
                    print(f"{site:5} layer {layer}: sklearn {dt_ref:7.2f} s  fast {dt_fast:6.2f} s"
                          f"  macro-F1 {f_ref.mean():.3f} vs {f_fast.mean():.3f}  "
                          f"max |diff| {diff:.4f}", flush=True)
    print(f"reference (sklearn newton-cg, one per cell): {t_ref:.1f} s")
    print(f"fast (batched torch):                        {t_fast:.1f} s")
    print(f"speed-up: {t_ref / max(t_fast, 1e-9):.1f}x   largest macro-F1 difference: {worst:.4f}")
    return 0
