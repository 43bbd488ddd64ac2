"""The settings of a training run: architecture and optimisation, saved in training.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from headprobe.errors import UsageError, only_with, opt

ARCHES = ("gpt-neo", "attn-only")
# model families a run can build: GPT-Neo (learned absolute positions, LayerNorm, local
# layers) or rotary ones (RoPE, RMSNorm, optional grouped-query attention, global layers)
FAMILIES = ("gpt-neo", "llama", "qwen2")
ROTARY = ("llama", "qwen2")
FILLERS = ("text", "random")
# the shortest context a dataset can be built for: BOS and one token
MIN_CTX = 2
# the two kinds of attention layer: over every earlier position, or within the local window
ATTENTION_KINDS = ("global", "local")
# settings of the repeated segments, used only with repeat_frac
REPEAT_SETTINGS = ("repeat_count", "repeat_min", "repeat_max", "repeat_gap", "repeat_filler")
POSITIVE = ("layers", "d_model", "heads", "ctx", "steps", "batch", "log_every", "ckpt_every",
            "window")


@dataclass
class TrainConfig:
    """Architecture and optimisation settings (all saved in training.json)."""

    arch: str = "gpt-neo"    # gpt-neo: full blocks; attn-only: MLPs zeroed and frozen
    family: str = "gpt-neo"
    kv_heads: int = 0       # key/value heads of the rotary families; 0: one per query head
    layers: int = 8
    d_model: int = 64
    heads: int = 16
    d_head: int = 0         # width of each head (rotary families); 0: d_model // heads
    ctx: int = 256          # training window = max positions of the model
    short_steps: int = 0    # last steps on windows of ctx // 2 tokens, twice as many
    window: int = 256       # local attention window of the "local" layers
    # kinds of layer from layer 0 on, the pattern repeated; "": the family's default
    # (global-local for GPT-Neo, global for the rotary families)
    attention: str = ""
    tied: bool = True       # unembedding = embedding (as in the shared model)
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
    # repeated segments mixed into text windows (extract.training.repeats); 0: none
    repeat_frac: float = 0.0   # fraction of windows that get one repeated segment
    repeat_min: int = 4        # shortest segment (tokens)
    repeat_max: int = 40       # longest segment (tokens)
    repeat_gap: int = 20       # most text tokens between the two copies
    repeat_count: int = 1      # most repeated segments per window (disjoint)
    # what surrounds the repeated segments: the corpus text, or (random) BOS and random
    # tokens, so that only the repeat is predictable
    repeat_filler: str = "text"

    def check(self) -> None:
        """UsageError for an unknown architecture or impossible sizes."""
        if self.arch not in ARCHES:
            raise UsageError(f"unknown {opt('arch')} {self.arch!r}; choose from "
                             f"{', '.join(ARCHES)}")
        if self.family not in FAMILIES:
            raise UsageError(f"unknown {opt('family')} {self.family!r}; choose from "
                             f"{', '.join(FAMILIES)}")
        if not set(self.layer_pattern()) <= set(ATTENTION_KINDS):
            raise UsageError(f"unknown {opt('attention')} {self.attention!r}: give layer kinds "
                             f"({', '.join(ATTENTION_KINDS)}) joined by '-', e.g. local-global")
        self.check_family()
        for name in POSITIVE:
            if getattr(self, name) < 1:
                raise UsageError(f"{opt(name)} must be a positive integer, got "
                                 f"{getattr(self, name)}")
        if self.ctx < MIN_CTX:
            raise UsageError(f"{opt('ctx')} must be at least {MIN_CTX}: a dataset for the model "
                             f"needs windows of BOS and a token or more, got {self.ctx}")
        if not self.d_head and self.d_model % self.heads:
            raise UsageError(f"{opt('d_model')} {self.d_model} is not divisible by "
                             f"{opt('heads')} {self.heads}")
        if not 0 <= self.short_steps <= self.steps:
            raise UsageError(f"{opt('short_steps')} must be in 0..{opt('steps')} "
                             f"({self.steps}), got {self.short_steps}")
        if self.lr <= 0:
            raise UsageError(f"the learning rate {opt('lr')} must be positive, got {self.lr}")
        self.check_schedule()
        if self.repeat_frac:
            self.check_repeats()
        else:
            given = [n for n in REPEAT_SETTINGS if getattr(self, n) != getattr(TrainConfig, n)]
            if given:
                raise only_with(given, "repeat_frac", "the share of windows with repeated "
                                "segments; 0 mixes in none")

    def check_schedule(self) -> None:
        """UsageError for a seed, warmup or weight decay that cannot be."""
        if self.seed < 0:
            raise UsageError(f"{opt('seed')} must be at least 0, got {self.seed}")
        if not -1 <= self.warmup <= self.steps:
            raise UsageError(f"{opt('warmup')} must be in 0..{opt('steps')} ({self.steps}) "
                             f"steps, or -1 for 5% of them, got {self.warmup}")
        if self.weight_decay < 0:
            raise UsageError(f"{opt('weight_decay')} must be at least 0, got "
                             f"{self.weight_decay}")

    def layer_pattern(self) -> list[str]:
        """The kinds of layer from layer 0 on, repeated over the layers (the family's
        default when ``attention`` is empty)."""
        default = "global" if self.family in ROTARY else "global-local"
        return (self.attention or default).split("-")

    def check_family(self) -> None:
        """UsageError for settings the family cannot build: local layers, grouped-query
        attention or a head width of its own where they do not exist, key/value heads that
        do not divide the heads, an odd head width."""
        if self.family in ROTARY and "local" in self.layer_pattern():
            raise UsageError(f"{opt('family')} {self.family} has no local attention layers: "
                             f"give {opt('attention')} global (its default)")
        if "local" not in self.layer_pattern() and self.window != TrainConfig.window:
            raise UsageError(f"{opt('window')} sizes the local attention layers, and this "
                             f"model has none ({opt('attention')} "
                             f"{'-'.join(self.layer_pattern())}); leave {opt('window')} out")
        if self.kv_heads < 0 or (self.kv_heads and self.heads % self.kv_heads):
            raise UsageError(f"{opt('kv_heads')} must divide {opt('heads')} {self.heads}, got "
                             f"{self.kv_heads}")
        if self.d_head < 0 or self.d_head % 2:
            raise UsageError(f"{opt('d_head')} must be an even width (rotary positions turn "
                             f"pairs of dimensions), or 0 for d_model // heads, got "
                             f"{self.d_head}")
        if self.family not in ROTARY and self.d_head:
            raise UsageError(f"{opt('d_head')} (heads wider or narrower than d_model // heads) "
                             f"needs a rotary {opt('family')} ({', '.join(ROTARY)})")
        if self.family not in ROTARY and self.kv_heads not in (0, self.heads):
            raise UsageError(f"{opt('kv_heads')} (grouped-query attention) needs a rotary "
                             f"{opt('family')} ({', '.join(ROTARY)})")

    def check_repeats(self) -> None:
        """UsageError unless the repeated segments are possible in a ``ctx + 1`` window."""
        if not 0.0 <= self.repeat_frac <= 1.0:
            raise UsageError(f"{opt('repeat_frac')} must be in [0, 1], got {self.repeat_frac}")
        if not 2 <= self.repeat_min <= self.repeat_max:
            raise UsageError(f"need 2 <= {opt('repeat_min')} <= {opt('repeat_max')}, got "
                             f"{self.repeat_min} and {self.repeat_max}")
        if self.repeat_filler not in FILLERS:
            raise UsageError(f"unknown {opt('repeat_filler')} {self.repeat_filler!r}; choose "
                             f"from {', '.join(FILLERS)}")
        if self.repeat_count < 1:
            raise UsageError(f"{opt('repeat_count')} must be a positive integer, got "
                             f"{self.repeat_count}")
        if self.repeat_gap < 0:
            raise UsageError(f"{opt('repeat_gap')} must be >= 0, got {self.repeat_gap}")
        shortest = self.ctx // 2 if self.short_steps else self.ctx
        shortest -= self.repeat_filler == "random"     # position 0 keeps BOS
        if 2 * self.repeat_max > shortest + 1:
            window = f"{opt('ctx')} // 2 + 1" if self.short_steps else f"{opt('ctx')} + 1"
            raise UsageError(f"two copies of {opt('repeat_max')} {self.repeat_max} tokens do "
                             f"not fit a window of {window} = {shortest + 1} tokens")


def make_config(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    """A checked copy of ``config`` (default settings if None) with ``overrides`` applied
    and the layer pattern written out.

    Raises TypeError for names that are not TrainConfig fields, like a misspelt keyword.
    """
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"unknown training settings: {', '.join(sorted(unknown))}")
    cfg = TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
    cfg.check()
    cfg.attention = "-".join(cfg.layer_pattern())     # the family's default written out
    return cfg
