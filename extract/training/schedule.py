"""The optimiser and its learning-rate schedule.

AdamW (betas 0.9, 0.95) with weight decay on matrices only; linear warm-up, then cosine
decay to 10% of the peak rate.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from extract.training.config import TrainConfig


def make_optimizer(model: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (embeddings and linear weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), foreach=False)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr / 10``."""
    warmup = cfg.warmup if cfg.warmup >= 0 else max(1, cfg.steps // 20)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def set_lr(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> None:
    """Put the scheduled rate of ``step`` into every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
