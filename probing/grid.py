"""The probe grid: one probe per (site, layer, head), scored on the test split, with controls.

For each site and layer the vectors of all heads are read once, the probes of all heads
are fitted together (the ``fast`` solver batches them; ``sklearn`` fits them one by one),
and the predictions are scored per test story so that bootstrap intervals resample
stories, not tokens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from extract.store import open_store
from headprobe.errors import UsageError
from probing.controls import (
    DEFAULT_CONTROLS,
    check_control_store,
    majority_predictions,
    shuffled_labels,
)
from probing.labels import DEFAULT_EXCLUDE, Labels, fold_tags
from probing.metrics import (
    bootstrap_f1,
    bootstrap_weights,
    group_counts,
    scores_from_counts,
)
from probing.solvers import SOLVERS, fit_probes

VECTOR_SITES = ("key", "query")


@dataclass
class GridConfig:
    """What to probe and how (the options of ``probing fit``)."""

    sites: tuple[str, ...] = VECTOR_SITES
    tagset: str = "fine"
    tags: list[str] | None = None
    merge_verbs: bool = False
    min_support: int = 1
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    solver: str = "fast"
    controls: tuple[str, ...] = DEFAULT_CONTROLS
    layers: list[int] | None = None
    C: float = 1.0
    n_boot: int = 1000
    seed: int = 0
    jobs: int = 1


@dataclass
class GridResult:
    """Arrays of a finished grid (names and shapes as in probing.results)."""

    sites: list[str]
    layers: list[int]
    tags: list[str]
    arrays: dict[str, np.ndarray]
    labels: Labels
    info: dict[str, Any] = field(default_factory=dict)


def _labels(store, config: GridConfig) -> Labels:
    if config.tagset not in ("fine", "coarse"):
        raise UsageError(f"unknown tag set {config.tagset!r}; choose fine or coarse")
    table = store.tokens([f"{config.tagset}_tag", "split"])
    return fold_tags(table[f"{config.tagset}_tag"], table["split"], store.tags[config.tagset],
                     merge_verbs=config.merge_verbs, keep=config.tags,
                     min_support=config.min_support, exclude=config.exclude)


def _check_config(store, config: GridConfig) -> list[int]:
    if config.solver not in SOLVERS:
        raise UsageError(f"unknown solver {config.solver!r}; choose from {', '.join(SOLVERS)}")
    bad = [s for s in config.sites if s not in VECTOR_SITES or s not in store.sites]
    if bad or not config.sites:
        raise UsageError(f"site(s) {', '.join(bad) or '(none)'} cannot be probed; the store "
                         f"has {', '.join(s for s in store.sites if s in VECTOR_SITES)}")
    layers = list(range(store.n_layers)) if config.layers is None else list(config.layers)
    if not layers or any(not 0 <= layer < store.n_layers for layer in layers):
        raise UsageError(f"layers must lie in 0..{store.n_layers - 1}")
    if config.min_support < 0 or config.n_boot < 1 or config.C <= 0:
        raise UsageError("--min-support must be >= 0, the bootstrap count and C positive")
    return layers


class _Scorer:
    """Scores predictions of a layer's cells on the test tokens, per story."""

    def __init__(self, labels: Labels, stories: np.ndarray, n_boot: int, seed: int):
        self.y = labels.test_y
        self.k = labels.n_classes
        _, self.groups = np.unique(stories, return_inverse=True)
        self.weights = bootstrap_weights(int(self.groups.max()) + 1, n_boot, seed)

    def __call__(self, pred: np.ndarray, interval: bool = False) -> dict[str, np.ndarray]:
        """pred: [H, n_test] -> metric name -> [H, K] or [H]."""
        tp, fp, fn = group_counts(self.y, pred, self.groups, self.k)
        s = scores_from_counts(tp.sum(-2), fp.sum(-2), fn.sum(-2))
        out = {"precision": s.precision, "recall": s.recall, "f1": s.f1,
               "support": s.support, "macro_f1": s.macro_f1, "accuracy": s.accuracy}
        if interval:
            out["f1_lo"], out["f1_hi"] = bootstrap_f1(tp, fp, fn, self.weights)
        return out


def _fit_layer(X: np.ndarray, y: np.ndarray, n_classes: int, config: GridConfig):
    return fit_probes(X, y, n_classes, solver=config.solver, C=config.C, n_jobs=config.jobs,
                      seed=config.seed)


def run_grid(store_path: str, config: GridConfig, control_store: str | None = None,
             log: Callable[[str], None] | None = None) -> GridResult:
    """Fit and score the whole grid of ``store_path``; see the module docstring."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(1, config.jobs))
        with threadpool_limits(limits=1 if config.solver == "sklearn" else config.jobs):
            return _run(store_path, config, control_store, log)
    finally:
        torch.set_num_threads(threads)


def _run(store_path: str, config: GridConfig, control_store: str | None,
         log: Callable[[str], None]) -> GridResult:
    with open_store(store_path) as store:
        layers = _check_config(store, config)
        labels = _labels(store, config)
        control = open_store(control_store) if control_store else None
        try:
            if control is not None:
                check_control_store(store, control)
            return _fit_all(store, control, labels, layers, config, log)
        finally:
            if control is not None:
                control.close()


def _fit_all(store, control, labels: Labels, layers: list[int], config: GridConfig,
             log: Callable[[str], None]) -> GridResult:
    S, L, H, K, D = len(config.sites), len(layers), store.n_heads, labels.n_classes, store.d_head
    controls = set(config.controls)
    stories = store.tokens(["story_id"], index=labels.test_rows)["story_id"]
    scorer = _Scorer(labels, stories, config.n_boot, config.seed)
    rows = np.concatenate([labels.train_rows, labels.test_rows])
    order = np.argsort(rows)
    n_train = len(labels.train_rows)
    y_shuffled = shuffled_labels(labels.train_y, config.seed)

    arrays: dict[str, np.ndarray] = {
        "coef": np.zeros((S, L, H, K, D), np.float32),
        "intercept": np.zeros((S, L, H, K), np.float32),
        "n_iter": np.zeros((S, L, H), np.int32),
    }

    def put(name: str, s: int, li: int, value: np.ndarray) -> None:
        if name not in arrays:
            arrays[name] = np.zeros((S, L, *value.shape), dtype=value.dtype)
        arrays[name][s, li] = value

    def read(source, site: str, layer: int) -> tuple[np.ndarray, np.ndarray]:
        data = np.empty((len(rows), H, D), np.float32)
        data[order] = source.read_layer(site, layer, index=rows[order])
        data = data.transpose(1, 0, 2)  # [H, n, D]
        return np.ascontiguousarray(data[:, :n_train]), np.ascontiguousarray(data[:, n_train:])

    maj = scorer(np.tile(majority_predictions(labels.train_y, len(labels.test_y)), (H, 1)))
    for s, site in enumerate(config.sites):
        for li, layer in enumerate(layers):
            log(f"probing {site} layer {layer} ({H} heads, {K} tags, "
                f"{n_train} train / {len(labels.test_y)} test tokens)")
            train, test = read(store, site, layer)
            fit = _fit_layer(train, labels.train_y, K, config)
            arrays["coef"][s, li], arrays["intercept"][s, li] = fit.coef, fit.intercept
            arrays["n_iter"][s, li] = fit.n_iter
            for name, value in scorer(fit.predict(test), "bootstrap" in controls).items():
                put(name, s, li, value)
            if "shuffled" in controls:
                got = scorer(_fit_layer(train, y_shuffled, K, config).predict(test))
                put("f1_shuffled", s, li, got["f1"])
                put("macro_f1_shuffled", s, li, got["macro_f1"])
                put("accuracy_shuffled", s, li, got["accuracy"])
            if "random" in controls:
                c_train, c_test = read(control, site, layer)
                got = scorer(_fit_layer(c_train, labels.train_y, K, config).predict(c_test))
                put("f1_random", s, li, got["f1"])
                put("macro_f1_random", s, li, got["macro_f1"])
                put("accuracy_random", s, li, got["accuracy"])
            if "majority" in controls:
                put("f1_majority", s, li, maj["f1"])
                put("macro_f1_majority", s, li, maj["macro_f1"])
                put("accuracy_majority", s, li, maj["accuracy"])
    reference = "shuffled" if "shuffled" in controls else (
        "random" if "random" in controls else "majority" if "majority" in controls else None)
    if reference is not None:
        arrays["selectivity"] = arrays["f1"] - arrays[f"f1_{reference}"]
    info = {"selectivity_control": reference, "n_train": n_train,
            "n_test": int(len(labels.test_y)), "n_test_stories": int(scorer.groups.max()) + 1}
    return GridResult(list(config.sites), layers, labels.names, arrays, labels, info)
