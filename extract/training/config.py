"""The settings of a training run: architecture and optimisation, saved in training.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from headprobe.errors import UsageError, opt

ARCHES = ("gpt-neo", "attn-only")
POSITIVE = ("layers", "d_model", "heads", "ctx", "steps", "batch", "log_every", "ckpt_every",
            "window")


@dataclass
class TrainConfig:
    """Architecture and optimisation settings (all saved in training.json)."""

    arch: str = "gpt-neo"
    layers: int = 8
    d_model: int = 64
    heads: int = 16
    ctx: int = 256          # training window = max positions of the model
    window: int = 256       # local attention window of the "local" layers
    vocab_size: int = 0     # 0: taken from the tokenizer
    steps: int = 2000
    batch: int = 32
    lr: float = 3e-3
    warmup: int = -1        # -1: 5% of the steps
    weight_decay: float = 0.1
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 200
    eval_fraction: float = 0.05

    def check(self) -> None:
        """UsageError for an unknown architecture or impossible sizes."""
        if self.arch not in ARCHES:
            raise UsageError(f"unknown {opt('arch')} {self.arch!r}; choose from "
                             f"{', '.join(ARCHES)}")
        for name in POSITIVE:
            if getattr(self, name) < 1:
                raise UsageError(f"{opt(name)} must be a positive integer, got "
                                 f"{getattr(self, name)}")
        if self.d_model % self.heads:
            raise UsageError(f"{opt('d_model')} {self.d_model} is not divisible by "
                             f"{opt('heads')} {self.heads}")
        if self.lr <= 0:
            raise UsageError(f"the learning rate {opt('lr')} must be positive, got {self.lr}")


def make_config(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    """A checked copy of ``config`` (default settings if None) with ``overrides`` applied.

    Raises TypeError for names that are not TrainConfig fields, like a misspelt keyword.
    """
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"unknown training settings: {', '.join(sorted(unknown))}")
    cfg = TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
    cfg.check()
    return cfg
