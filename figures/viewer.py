"""An offline attention viewer: one self-contained HTML page for one story.

The page embeds the attention patterns of every layer and query head (from the model's
``blocks.L.attn.hook_pattern`` hooks) as JSON; hovering a token colours the tokens it
attends to for the chosen head and lists, for every head of the chosen layer, where
that token attends. Under grouped-query attention each head is named with the key/value
head it reads (``L2H5 (KV2)``). No network access, no external scripts or styles.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headprobe.atomic import atomic_file
from headprobe.errors import UsageError, opt
from headprobe.hooks import layer_hooks
from headprobe.stories import find_story, read_stories
from headprobe.tokens import display_text, token_strings

TEMPLATE = Path(__file__).with_name("viewer_template.html")
SCALE = 10000  # weights are embedded as integers in units of 1 / SCALE


def attention_patterns(model: Any, input_ids: Sequence[int]) -> np.ndarray:
    """Attention patterns [n_layers, n_heads, T, T] of ``input_ids`` [T] (row = destination).

    Taken from the ``blocks.L.attn.hook_pattern`` hooks of one forward pass.
    """
    import torch

    tokens = torch.as_tensor(np.asarray(input_ids, dtype=np.int64))[None, :]
    names = layer_hooks("pattern", model.cfg.n_layers)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return np.stack([cache[name][0].float().cpu().numpy() for name in names])


def pattern_payload(patterns: np.ndarray, tokens: Sequence[str], title: str,
                    layer: int = 0, kv_head: Sequence[int] | None = None) -> dict[str, Any]:
    """The JSON the page reads: tokens (as :func:`headprobe.tokens.display_text` shows them)
    and, per layer and head, the causal rows of the pattern.

    patterns: [n_layers, n_heads, T, T]; row i keeps its first i + 1 weights, as integers
    in units of 1 / SCALE; kv_head: [n_heads] key/value head of each query head, given
    for grouped-query models.
    """
    n_layers, n_heads, n, _ = patterns.shape
    if len(tokens) != n:
        raise ValueError(f"{len(tokens)} tokens for patterns over {n} positions")
    scaled = np.rint(np.clip(patterns, 0.0, 1.0) * SCALE).astype(np.int32)
    rows = [[[scaled[la, h, i, :i + 1].tolist() for i in range(n)] for h in range(n_heads)]
            for la in range(n_layers)]
    payload = {"title": title, "tokens": [display_text(t) for t in tokens],
               "n_layers": n_layers,
               "n_heads": n_heads, "layer": int(layer), "scale": SCALE, "patterns": rows}
    if kv_head is not None:
        payload["kv_head"] = [int(k) for k in kv_head]
    return payload


def render_viewer(patterns: np.ndarray, tokens: Sequence[str], title: str,
                  layer: int = 0, kv_head: Sequence[int] | None = None) -> str:
    """The complete HTML page (inline CSS, JS and data) as a string."""
    payload = json.dumps(pattern_payload(patterns, tokens, title, layer, kv_head),
                         separators=(",", ":"))
    # A token could contain "</script>"; escaping "</" keeps the JSON inside its tag.
    payload = payload.replace("</", "<\\/")
    page = TEMPLATE.read_text()
    return page.replace("{{TITLE}}", html.escape(title)).replace("{{DATA}}", payload)


def write_viewer(out: str | Path, patterns: np.ndarray, tokens: Sequence[str], title: str,
                 layer: int = 0, kv_head: Sequence[int] | None = None) -> Path:
    """Write the page atomically to ``out``; return its path."""
    text = render_viewer(patterns, tokens, title, layer, kv_head)
    with atomic_file(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out)


def build_viewer(store_path: str | Path, model_name: str, story_id: int, out: str | Path,
                 layer: int = 0, max_tokens: int | None = None) -> Path:
    """Store + model -> page: the story's tokens through the model, patterns into the page."""
    from extract.models import load_model
    from extract.store import open_store

    with open_store(store_path) as store:
        input_ids = find_story(read_stories(store), story_id).input_ids
        kv_head = store.kv_head if store.n_kv_heads < store.n_heads else None
    if max_tokens is not None:
        input_ids = input_ids[:max_tokens]
    model = load_model(model_name)
    store.check_vocabulary(model.tokenizer, f"model {model_name}")
    if not 0 <= layer < model.cfg.n_layers:
        raise UsageError(f"{opt('layer', layer)} out of range [0, {model.cfg.n_layers})")
    patterns = attention_patterns(model, input_ids)
    tokens = token_strings(model.tokenizer, input_ids)
    title = f"story {story_id}: {Path(str(model_name)).name}"
    return write_viewer(out, patterns, tokens, title, layer, kv_head)
