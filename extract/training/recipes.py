"""Named training recipes: the settings of a documented model organism in one place.

``python -m extract train --recipe NAME`` starts from the recipe's corpus, tokenizer and
settings; any flag given explicitly overrides the recipe. The recipe is recorded in
``training.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headprobe.errors import UsageError, opt

# where the shared assets live unless $HEADPROBE_SHARED says otherwise
SHARED_DEFAULT = "../shared"


@dataclass(frozen=True)
class Recipe:
    """A model organism: what it is for, the corpus (relative to the shared assets),
    tokenizer and training settings (TrainConfig fields)."""

    name: str
    help: str
    corpus: str
    tokenizer: str      # a spec (char, bpe:N) or a tokenizer directory under the shared assets
    settings: dict[str, Any] = field(default_factory=dict)

    def corpus_path(self) -> str:
        """The recipe's corpus under ``$HEADPROBE_SHARED`` (default ``../shared``)."""
        return str(shared_root() / self.corpus)

    def tokenizer_spec(self) -> str:
        """The tokenizer as ``--tokenizer`` takes it: a spec as it is, a shared directory
        under ``$HEADPROBE_SHARED``."""
        if self.tokenizer == "char" or self.tokenizer.startswith("bpe:"):
            return self.tokenizer
        return str(shared_root() / self.tokenizer)


def shared_root() -> Path:
    """The shared assets: ``$HEADPROBE_SHARED``, else ``../shared``."""
    return Path(os.environ.get("HEADPROBE_SHARED") or SHARED_DEFAULT)


INDUCTION = Recipe(
    name="induction",
    help="2-layer attention-only rotary (Llama) model on TinyStories text with up to three "
         "repeated segments of random tokens (random lengths, gaps and offsets) per window, "
         "every layer attending to the whole context: a learned previous-token head in layer "
         "0 and an induction head in layer 1",
    corpus="data/tinystories/train-3118.txt",
    tokenizer="char",
    # rotary positions make "the token before" the same query-key rotation at every
    # position, which a layer-0 head learns without a local window; up to three repeated
    # pairs per window (of 4-32 tokens, at most 4 apart) leave more of each window
    # predictable only by induction; with one pair the induction head stayed at 0.80-0.86
    settings=dict(family="llama", arch="attn-only", layers=2, d_model=64, heads=4, ctx=64,
                  attention="global", tied=False, batch=32, steps=2500, lr=3e-3,
                  weight_decay=0.1, repeat_frac=1.0, repeat_min=4, repeat_max=32,
                  repeat_gap=4, repeat_count=3),
)
INDUCTION_LOCAL = Recipe(
    name="induction-local",
    help="the GPT-Neo version of induction: layer 0 attends only to the token itself and "
         "the one before (a local window of 2), so its previous-token head is built in",
    corpus="data/tinystories/train-3118.txt",
    tokenizer="char",
    # layer 0 local with a window of 2 (the token itself and the one before), so its heads
    # either copy the previous token or the current one; an unembedding of its own, so the
    # embedding need not double as the output map; weight decay 0.2, since without decay
    # the induction head does not form within the run
    settings=dict(arch="attn-only", layers=2, d_model=64, heads=4, ctx=64, window=2,
                  attention="local-global", tied=False, batch=32, steps=5000, lr=3e-3,
                  weight_decay=0.2, repeat_frac=1.0, repeat_min=8, repeat_max=32,
                  repeat_gap=8),
)
STORIES = Recipe(
    name="stories",
    help="4-layer GPT-Neo (global attention, 4 heads of 16) on TinyStories text with the "
         "shared model's 4,096-token BPE: a quotation head in layer 2 or 3",
    corpus="data/tinystories/train-3118.txt",
    tokenizer="models/tinystories-8L",
    # real dialogue, unlike the synthetic demo corpus, forms a head attending to the opening
    # mark on every seed tried (docs/organisms.md, "The story organism")
    settings=dict(layers=4, d_model=64, heads=4, ctx=128, attention="global", batch=16,
                  steps=1500, lr=5e-3),
)
RECIPES = {r.name: r for r in (INDUCTION, INDUCTION_LOCAL, STORIES)}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (UsageError naming the known ones otherwise)."""
    if name not in RECIPES:
        raise UsageError(f"unknown {opt('recipe')} {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_corpus(recipe: Recipe) -> str:
    """The recipe's corpus path; UsageError when it is missing."""
    path = recipe.corpus_path()
    if not Path(path).exists():
        raise UsageError(f"the {recipe.name} recipe trains on {path}, which does not exist; "
                         f"give {opt('corpus')} (or set HEADPROBE_SHARED to the shared folder)")
    return path
