"""The trained model's directory: Hugging Face files plus ``training.json``.

``config.json``, ``model.safetensors`` and the tokenizer files, so that
:func:`extract.models.load_model` boots it like any other model; ``training.json`` records
the settings, the loss log, the held-out loss and a provenance manifest. The directory is
written atomically.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from extract.training.config import TrainConfig
from extract.training.data import TrainingData
from headprobe.atomic import atomic_dir
from headprobe.manifest import base_manifest, write_json


def training_record(cfg: TrainConfig, data: TrainingData, log: list[list[float]],
                    eval_loss: float | None, seconds: float,
                    info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contents of training.json; ``info`` (corpus, tokenizer, ...) comes first."""
    stream, eval_stream = data.stream, data.eval_stream
    return {
        **(info or {}), "steps": cfg.steps,
        "train_tokens": int(len(stream)) if stream is not None else None,
        "ctx": cfg.ctx, "batch": cfg.batch, "lr": cfg.lr, "seed": cfg.seed,
        "config": asdict(cfg), "log": log,
        "eval": None if eval_loss is None else {
            "loss_per_token": eval_loss, "tokens": int(len(eval_stream)),
            "note": "held-out texts, BOS-prefixed, consecutive windows of ctx tokens"},
        "seconds": round(seconds, 1),
        "attn_only": "MLP output projections zeroed and frozen: blocks add only attention"
        if cfg.arch == "attn-only" else None,
        "manifest": base_manifest("extract train"),
    }


def save_model(out_dir: Path, model: Any, tok: Any, record: dict[str, Any],
               overwrite: bool) -> None:
    """Write the model, its tokenizer and ``record`` (training.json) into ``out_dir``."""
    model.generation_config.pad_token_id = model.config.eos_token_id
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "training.json", record)
