"""Checkpoints of an unfinished run, in ``OUT.checkpoint/checkpoint.pt``.

A checkpoint holds the model, optimiser and sampling-generator states, the step, the log
and the settings, so that a resumed run ends with exactly the weights of an
uninterrupted one. Resuming is refused when the settings or the corpus differ.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract.training.config import TrainConfig
from headprobe.atomic import atomic_file, check_target
from headprobe.errors import UsageError, opt

CHECKPOINT_SUFFIX = ".checkpoint"
# Settings a resumed run must share with the checkpoint.
RESUME_KEYS = ("arch", "family", "kv_heads", "layers", "d_model", "heads", "d_head", "ctx",
               "window", "attention", "tied", "vocab_size", "steps", "batch", "lr", "warmup",
               "weight_decay", "seed", "repeat_frac", "repeat_min", "repeat_max", "repeat_gap",
               "repeat_count")


def checkpoint_path(out_dir: str | Path) -> Path:
    """``OUT.checkpoint/checkpoint.pt`` for the model directory ``out_dir``."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + CHECKPOINT_SUFFIX) / "checkpoint.pt"


def check_outputs(out_dir: Path, resume: bool, overwrite: bool) -> Path:
    """Refuse to replace a model or an interrupted run unasked; return the checkpoint path."""
    ckpt = checkpoint_path(out_dir)
    check_target(out_dir, overwrite, "directory")
    if not resume:
        if ckpt.exists() and not overwrite:
            raise UsageError(f"{ckpt.parent} holds an interrupted run; pass "
                             f"{opt('resume', True)} to continue it or {opt('overwrite', True)} "
                             "to start over")
    elif not ckpt.exists():
        raise UsageError(f"nothing to resume: no checkpoint at {ckpt}")
    return ckpt


def corpus_fingerprint(stream: np.ndarray | None) -> str:
    """A short hash of the training tokens [n_tokens] ('' for a sampler)."""
    return "" if stream is None else hashlib.sha256(stream.tobytes()).hexdigest()[:16]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, cfg: TrainConfig, fingerprint: str) -> dict[str, Any]:
    """The state saved at ``path``, once it is known to continue this run."""
    state = torch.load(path, weights_only=False, map_location="cpu")
    saved = state["config"]
    differ = [k for k in RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    if differ:
        k = differ[0]
        raise UsageError(f"cannot resume: the checkpoint was trained with {k}={saved.get(k)!r}, "
                         f"this run asks for {getattr(cfg, k)!r}")
    if state["fingerprint"] != fingerprint:
        raise UsageError("cannot resume: the checkpoint was trained on a different corpus")
    return state


def remove_checkpoint(path: Path) -> None:
    """Delete the checkpoint directory of a finished run."""
    shutil.rmtree(path.parent, ignore_errors=True)
