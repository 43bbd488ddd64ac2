"""Repeated segments of random tokens mixed into text windows (induction training).

With ``repeat_frac > 0`` a fraction of the training windows get one segment of
``repeat_min..repeat_max`` random tokens written over the text twice: the second copy
starts ``0..repeat_gap`` text tokens after the first ends, and the pair sits at a random
offset in the window. The segment's tokens are drawn independently (with replacement):
were they distinct, every token of the first copy would be one not seen yet in the
segment, which teaches the model not to copy and delays the induction head. Lengths,
gaps and offsets are drawn per window, so the distance from a token back to its earlier
copy changes from window to window: no head that attends at a fixed relative position
predicts the second copy, only one that finds the earlier copy of the current token and
reads what followed it (an induction head fed by a previous-token head). Every draw comes
from the run's generator, so runs stay deterministic and resumable.

With ``repeat_count`` N > 1 a window gets up to N such pairs: each further pair goes into
the longest stretch that no pair covers yet, while that stretch holds two copies of
``repeat_min`` tokens; its length is capped by half the stretch, so later pairs tend to
be shorter and closer together. More of the window's tokens are then predictable by
induction alone, and less of it is text.

With ``repeat_filler`` random, every window holds BOS and then random tokens from the same
pool instead of text, so the second copy is the only thing a model can predict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from extract.training.config import TrainConfig
from headprobe.errors import UsageError, opt

Sampler = Callable[[torch.Generator, int], Any]


def repeat_pool(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """Token ids a random segment may hold: the tokenizer's ids below ``vocab_size``
    without its special tokens [n]."""
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    size = min(vocab_size, len(tokenizer))
    return torch.tensor([t for t in range(size) if t not in special], dtype=torch.long)


def draw(gen: torch.Generator, low: int, high: int) -> int:
    """A uniform integer in [low, high] from ``gen``."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def place_repeat(row: torch.Tensor, gen: torch.Generator, cfg: TrainConfig,
                 pool: torch.Tensor) -> tuple[int, int, int]:
    """Write one repeated segment into ``row`` [seq] in place: (start, length, gap).

    The first copy covers ``start .. start + length - 1``, the second starts ``gap``
    tokens after it ends.
    """
    seq = row.shape[0]
    length = draw(gen, cfg.repeat_min, min(cfg.repeat_max, seq // 2))
    gap = draw(gen, 0, min(cfg.repeat_gap, seq - 2 * length))
    start = draw(gen, 0, seq - 2 * length - gap)
    segment = pool[torch.randint(len(pool), (length,), generator=gen)]
    row[start:start + length] = segment
    second = start + length + gap
    row[second:second + length] = segment
    return start, length, gap


def place_repeats(row: torch.Tensor, gen: torch.Generator, cfg: TrainConfig,
                  pool: torch.Tensor) -> int:
    """Write up to ``cfg.repeat_count`` disjoint repeated segments into ``row`` [seq] in
    place, each in the longest stretch still free (see the module doc); returns how many.
    One pair draws exactly what :func:`place_repeat` draws."""
    free = [(0, row.shape[0])]                       # [start, end) stretches without a pair
    for placed in range(cfg.repeat_count):
        lo, hi = max(free, key=lambda stretch: stretch[1] - stretch[0])
        if hi - lo < 2 * cfg.repeat_min:
            return placed
        start, length, gap = place_repeat(row[lo:hi], gen, cfg, pool)
        free.remove((lo, hi))
        free += [(lo, lo + start), (lo + start + 2 * length + gap, hi)]
    return cfg.repeat_count


def random_filler(ids: torch.Tensor, gen: torch.Generator, pool: torch.Tensor,
                  bos: int) -> torch.Tensor:
    """Windows of the shape of ``ids`` [batch, seq]: BOS, then tokens drawn from ``pool``."""
    out = pool[torch.randint(len(pool), ids.shape, generator=gen)]
    out[:, 0] = bos
    return out


def with_repeats(sample: Sampler, cfg: TrainConfig, pool: torch.Tensor, bos: int = 0
                 ) -> Sampler:
    """``sample`` with ``cfg.repeat_count`` repeated segments (at most) in a
    ``cfg.repeat_frac`` share of its windows (after BOS and over random tokens when
    ``cfg.repeat_filler`` is random).

    sample: ``sample(gen, batch)`` -> ids [batch, seq]; pool: allowed token ids [n].
    """
    if len(pool) < cfg.repeat_max:
        raise UsageError(f"{opt('repeat_max')} {cfg.repeat_max} exceeds the {len(pool)} "
                         "tokens a segment can draw from")

    def mixed(gen: torch.Generator, batch: int) -> torch.Tensor:
        ids = torch.as_tensor(sample(gen, batch), dtype=torch.long).clone()
        first = 0
        if cfg.repeat_filler == "random":
            ids, first = random_filler(ids, gen, pool, bos), 1
        chosen = torch.rand(batch, generator=gen) < cfg.repeat_frac
        for row in chosen.nonzero()[:, 0].tolist():
            place_repeats(ids[row, first:], gen, cfg, pool)
        return ids

    return mixed
