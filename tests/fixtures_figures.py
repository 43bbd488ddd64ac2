"""Fixtures for the figures tests: small synthetic study results built from the studies'
declared layouts and written with ``write_study``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from probing.studies import (
    ablation,
    next_token,
    patching,
    quote,
    repeated,
    stats,
    tag_induction,
    time_order,
)
from probing.study_io import Array, Layout, write_study

N_LAYERS, N_HEADS, SEQ = 3, 4, 6
# length of every axis a layout names
SIZES = {"layer": N_LAYERS, "head": N_HEADS, "layer/head": 2, "rank": 3, "story": 5,
         "sequence": 2, "half": 2, "position within the half": SEQ,
         "position within the second half": SEQ, "statistic": len(stats.SUMMARY),
         "bin": 8, "bin edge": 9, "d_model": 8, "tag": 5, "draw": 3, "value": 3, "token": 6,
         "vocab": 20, "prompt": 20, "digit": 10, "generation": 2, "pair": 30, "offset": 9,
         "writer layer": N_LAYERS, "writer head": N_HEADS, "reader layer": N_LAYERS,
         "reader head": N_HEADS, "mode (Q, K, V)": 3, "model": 3, "criterion": 5}


def random_values(entry: Array, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random values of the declared kind of ``entry``."""
    if entry.kind == "float":
        return rng.uniform(size=shape)
    if entry.kind == "int":
        return rng.integers(0, 3, size=shape)
    if entry.kind == "bool":
        return rng.uniform(size=shape) < 0.5
    return np.array([f"s{i}" for i in range(int(np.prod(shape)))]).reshape(shape)


def layout_arrays(layout: Layout, rng: np.random.Generator, n_positions: int,
                  given: Mapping[Array, Any] | None = None, without: tuple[Array, ...] = ()
                  ) -> dict[str, Any]:
    """Every array ``layout`` declares (optional ones too, except ``without``): the ``given``
    values, random values of the declared kind and number of axes for the others."""
    given = dict(given or {})
    sizes = {**SIZES, "position": n_positions, "destination position": n_positions,
             "source position": n_positions, "position or head": n_positions}
    arrays = {}
    for entry in layout:
        if entry in without:
            continue
        value = given.pop(entry) if entry in given else None
        arrays[entry.name] = (random_values(entry, tuple(sizes[a] for a in entry.dims), rng)
                              if value is None else value)
    assert not given, f"not in the layout of {layout.name}: {list(given)}"
    return arrays


def causal_pattern(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random attention pattern [n, n]: causal rows that sum to 1."""
    pattern = np.tril(rng.uniform(size=(n, n)))
    return pattern / pattern.sum(1, keepdims=True)


def write(studies: Path, module: Any, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    layout = module.LAYOUT
    write_study(studies / layout.name, layout, arrays, meta, f"{layout.name} report")


def write_synthetic_studies(studies: Path, rng: np.random.Generator) -> None:
    """One small results directory per case study, as ``probing <study>`` writes them."""
    toks = np.array(["<bos>"] + [f"t{i}" for i in range(SEQ)] * 2)
    write(studies, repeated, layout_arrays(repeated.LAYOUT, rng, len(toks), {
        repeated.POSITION_LOSS: np.stack([np.full(SEQ, 8.0), np.linspace(3, 0.2, SEQ)]),
        repeated.MLP_PATCH_DELTA: rng.normal(size=(N_LAYERS, SEQ)),
        repeated.EXAMPLE_TOKENS: toks, repeated.EXAMPLE_PATTERN: causal_pattern(len(toks), rng),
        repeated.EXAMPLE_PREV_PATTERN: causal_pattern(len(toks), rng),
        repeated.REPEAT_START: np.array([1, 1]), repeated.REPEAT_LENGTH: np.array([SEQ, SEQ]),
    }), {"seq_len": SEQ, "best_induction_head": [1, 2],
         "example_heads": {"example_pattern": [1, 2], "example_prev_pattern": [0, 1]},
         "circuit": {"prev_token_head": [0, 1], "induction_head": [1, 2]}})
    clean = np.array(["Michelle", " Jones", " was", " a", " student", ".", " Michelle"])
    write(studies, patching, layout_arrays(patching.LAYOUT, rng, len(clean), {
        patching.GRID: rng.normal(size=(N_LAYERS, len(clean))),
        patching.CORRUPT_TOKENS: clean, patching.CLEAN_TOKENS: clean,
        **{patching.TOP[w]["rank"]: np.arange(1, 4) for w in ("clean", "corrupt")},
        **{patching.TOP[w]["token"]: np.array([" was", " Jones", "'s"])
           for w in ("clean", "corrupt")},
        **{patching.TOP[w]["prob"]: np.array([0.16, 0.14, 0.08]) for w in ("clean", "corrupt")},
        patching.LAYER_LABELS: np.array([f"L{i}" for i in range(N_LAYERS)]),
    }, without=(patching.HEAD_LABELS,)), {
        "site": "resid_pre", "clean": "Michelle Jones was", "corrupt": "Michelle Smith was",
        "value": "logit difference"})
    write_story_studies(studies, rng)
    write_stats_and_ablation(studies, rng)
    write_synthetic_chat_studies(studies, rng)


def write_story_studies(studies: Path, rng: np.random.Generator) -> None:
    """``quote`` and ``tag-induction`` results on one short story."""
    story = np.array(["<bos>", "Tom", " said", ' "', "Hi", " Sue", '!"', " He", " smiled", "."])
    quoted = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], bool)
    pattern = causal_pattern(len(story), rng)
    write(studies, quote, layout_arrays(quote.LAYOUT, rng, len(story), {
        quote.EXAMPLE_TOKENS: story, quote.EXAMPLE_QUOTED: quoted,
        quote.EXAMPLE_PATTERN: pattern, quote.RATIO: rng.uniform(0.5, 3, (N_LAYERS, N_HEADS)),
        quote.T_STAT: rng.normal(size=(N_LAYERS, N_HEADS))}),
        {"best_head": [2, 0], "close_head": [1, 3], "example_story_id": 5, "n_stories": 9})
    write(studies, tag_induction, layout_arrays(tag_induction.LAYOUT, rng, len(story), {
        tag_induction.EXAMPLE_TOKENS: story, tag_induction.EXAMPLE_PATTERN: pattern,
        tag_induction.EXAMPLE_IS_TAG: np.isin(np.arange(len(story)), [2, 8])}),
        {"best_head": [1, 3], "before": ["VBD"], "example_story_id": 5, "uniform_score": 0.1})


def write_stats_and_ablation(studies: Path, rng: np.random.Generator) -> None:
    """``stats`` results of a model with MLPs and ``ablate`` results of two heads."""
    quantiles = np.sort(rng.normal(size=(N_LAYERS, len(stats.SUMMARY))), axis=1)
    write(studies, stats, layout_arrays(stats.LAYOUT, rng, 7, {
        stats.SUMMARY_NAMES: np.array(stats.SUMMARY),
        **{stats.SITE_SUMMARY[s]: quantiles for s in stats.SITES},
        stats.MLP_SUMMARY: quantiles,
        **{stats.HIST_EDGES[s]: np.linspace(-1, 1, SIZES["bin edge"]) for s in stats.SITES}}),
        {"prompt": "Tom was happy.", "threshold": 0.01})
    write(studies, ablation, layout_arrays(ablation.LAYOUT, rng, 0, {
        ablation.HEADS: np.array([[1, 2], [2, 0]]), ablation.COUNT: rng.integers(1, 9, 5)}),
        {"mode": "zero", "n_stories": 4, "split": "test", "ablated_delta_all": 0.1})


def write_synthetic_chat_studies(studies: Path, rng: np.random.Generator) -> None:
    """``next-token`` and ``time-order`` results."""
    values = [f"Member {i}" for i in range(1, 4)]
    probs = rng.dirichlet(np.ones(SIZES["token"]), size=len(values))
    write(studies, next_token, layout_arrays(next_token.LAYOUT, rng, 0, {
        next_token.VALUES: np.array(values), next_token.PROBS: probs,
        next_token.TOKENS: np.array(list("012345"))}),
        {"prompt": "{SENDER}: hi\n[", "vary": "SENDER", "k": 3})
    previous = rng.integers(1, 6, size=SIZES["prompt"])
    digit_mass = rng.dirichlet(np.ones(11), size=SIZES["prompt"])[:, :10]
    place = np.arange(10)[None, :]
    mass = {"past": (digit_mass * (place < previous[:, None])).sum(1),
            "same": (digit_mass * (place == previous[:, None])).sum(1),
            "future": (digit_mass * (place > previous[:, None])).sum(1),
            "non_digit": 1 - digit_mass.sum(1)}
    write(studies, time_order, layout_arrays(time_order.LAYOUT, rng, 0, {
        time_order.PREVIOUS_DIGIT: previous, time_order.DIGIT_MASS: digit_mass,
        **{time_order.MASS[k]: v for k, v in mass.items()},
        time_order.GEN_DELTAS: rng.normal(0, 600, size=SIZES["pair"])}),
        {"field": "minute", "mean_past_mass": float(mass["past"].mean()), "gen_backward": 0.5})


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    """A run directory holding synthetic ``studies/*`` (one per case study)."""
    run = tmp_path / "run"
    write_synthetic_studies(run / "studies", np.random.default_rng(0))
    return run
