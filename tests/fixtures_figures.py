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
    grid = {"size": (N_LAYERS, N_HEADS)}
    write_study(studies / "quote", "quote", {
        **example, "example_quoted": quoted, "ratio": rng.uniform(0.5, 3, **grid),
        "t_stat": rng.normal(**grid), "attn_to_open": rng.uniform(**grid)},
        {"best_head": [2, 0], "example_story_id": 5, "n_stories": 9}, "quote")
    write_study(studies / "tag-induction", "tag-induction", {
        **example, "example_is_tag": np.isin(np.arange(len(story)), [2, 8]),
        **{k: rng.uniform(**grid) for k in ("score_before", "score_random", "score_diff")}},
        {"best_head": [1, 3], "before": ["VBD"], "example_story_id": 5, "uniform_score": 0.1},
        "tag induction")
    write_synthetic_chat_studies(studies, rng)


def write_synthetic_chat_studies(studies: Path, rng: np.random.Generator) -> None:
    """``next-token`` and ``time-order`` results with the arrays those studies write."""
    values = [f"Member {i}" for i in range(1, 4)]
    probs = rng.dirichlet(np.ones(6), size=3)
    write_study(studies / "next-token", "next-token", {
        "values": np.array(values), "prompts": np.array([f"{v}: hi\n[" for v in values]),
        "token_ids": np.arange(6), "tokens": np.array(list("012345")), "probs": probs,
        "full_probs": probs}, {"prompt": "{SENDER}: hi\n[", "vary": "SENDER", "k": 3},
        "next token")
    previous = rng.integers(1, 6, size=20)
    digit_mass = rng.dirichlet(np.ones(11), size=20)[:, :10]
    place = np.arange(10)[None, :]
    mass = {"past_mass": (digit_mass * (place < previous[:, None])).sum(1),
            "same_mass": (digit_mass * (place == previous[:, None])).sum(1),
            "future_mass": (digit_mass * (place > previous[:, None])).sum(1),
            "non_digit_mass": 1 - digit_mass.sum(1)}
    write_study(studies / "time-order", "time-order", {
        "prompts": np.array(["p"] * 20), "previous_digit": previous, "digit_mass": digit_mass,
        **mass, "gen_deltas": rng.normal(0, 600, size=30),
        "gen_after_sender": np.array(["Member 1"] * 30)},
        {"field": "minute", "mean_past_mass": float(mass["past_mass"].mean()),
         "gen_backward": 0.5}, "time order")


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    """A run directory holding synthetic ``studies/*`` (and probe results when available)."""
    run = tmp_path / "run"
    write_synthetic_studies(run / "studies", np.random.default_rng(0))
    return run
