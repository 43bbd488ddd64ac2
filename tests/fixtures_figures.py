"""Fixtures for the figures tests: small synthetic results written in the real formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from probing.study_io import write_study

N_LAYERS, N_HEADS, SEQ = 3, 4, 6


def write_synthetic_studies(studies: Path, rng: np.random.Generator) -> None:
    """One small results directory per case study, as ``probing <study>`` writes them."""
    toks = np.array(["<bos>"] + [f"t{i}" for i in range(SEQ)] * 2)
    pattern = np.tril(rng.uniform(size=(len(toks), len(toks))))
    write_study(studies / "repeated", "repeated", {
        "induction_score": rng.uniform(size=(N_LAYERS, N_HEADS)),
        "prev_token_score": rng.uniform(size=(N_LAYERS, N_HEADS)),
        "position_loss": np.stack([np.full(SEQ, 8.0), np.linspace(3, 0.2, SEQ)]),
        "mlp_patch_delta": rng.normal(size=(N_LAYERS, SEQ)),
        "example_tokens": toks,
        "example_pattern": pattern / pattern.sum(1, keepdims=True),
    }, {"seq_len": SEQ, "best_induction_head": [1, 2]}, "repeated tokens")
    clean = np.array(["Michelle", " Jones", " was", " a", " student", ".", " Michelle"])
    write_study(studies / "patch", "patch", {
        "grid": rng.normal(size=(N_LAYERS, len(clean))),
        "corrupt_tokens": clean, "clean_tokens": clean,
        "layer_labels": np.array([f"L{i}" for i in range(N_LAYERS)]),
        **{f"{w}_top_rank": np.arange(1, 4) for w in ("clean", "corrupt")},
        **{f"{w}_top_token": np.array([" was", " Jones", "'s"]) for w in ("clean", "corrupt")},
        **{f"{w}_top_prob": np.array([0.16, 0.14, 0.08]) for w in ("clean", "corrupt")},
    }, {"site": "resid_pre", "clean": "Michelle Jones was", "corrupt": "Michelle Smith was",
        "value": "logit difference"}, "patching")
    story = np.array(["<bos>", "Tom", " said", ' "', "Hi", " Sue", '!"', " He", " smiled", "."])
    quoted = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], bool)
    story_pattern = np.tril(rng.uniform(size=(len(story), len(story))))
    story_pattern /= story_pattern.sum(1, keepdims=True)
    example = {"example_tokens": story, "example_activity": rng.uniform(size=len(story)),
               "example_pattern": story_pattern}
    write_study(studies / "quote", "quote", {
        **example, "example_quoted": quoted, "ratio": rng.uniform(size=(N_LAYERS, N_HEADS))},
        {"best_head": [2, 0], "example_story_id": 5}, "quote")
    write_study(studies / "tag-induction", "tag-induction", {
        **example, "example_is_tag": np.isin(np.arange(len(story)), [2, 8])},
        {"best_head": [1, 3], "before": ["VBD"], "example_story_id": 5}, "tag induction")


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    """A run directory holding synthetic ``studies/*`` (and probe results when available)."""
    run = tmp_path / "run"
    write_synthetic_studies(run / "studies", np.random.default_rng(0))
    return run
