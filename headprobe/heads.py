"""Names of layers and heads: ``L2`` is layer 2, ``L2H0`` its head 0, ``L2KV0`` its key/value
head 0; which key/value head a query head reads under grouped-query attention."""

from __future__ import annotations

import numpy as np

from headprobe.errors import UsageError


def layer_label(layer: int) -> str:
    """``L2`` for layer 2."""
    return f"L{int(layer)}"


def head_label(layer: int, head: int) -> str:
    """The usual short name of a head: ``L2H0`` for layer 2, head 0."""
    return f"L{int(layer)}H{int(head)}"


def kv_head_label(layer: int, kv_head: int) -> str:
    """The name of a key/value head of a grouped-query layer: ``L2KV0``."""
    return f"L{int(layer)}KV{int(kv_head)}"


def kv_heads(n_heads: int, n_kv_heads: int) -> np.ndarray:
    """The key/value head each query head reads: [n_heads] int.

    Grouped-query attention (and multi-query, ``n_kv_heads == 1``) shares each key/value
    head among ``n_heads // n_kv_heads`` consecutive query heads, as ``repeat_kv`` of
    Hugging Face models does; with ``n_kv_heads == n_heads`` head h reads head h.
    """
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv_heads} key/value heads")
    return np.arange(n_heads) // (n_heads // n_kv_heads)


def parse_head(text: str) -> tuple[int, int]:
    """``"2.0"``, ``"L2H0"`` or ``"2:0"`` -> (2, 0)."""
    norm = text.strip().upper().replace("L", "").replace("H", ".").replace(":", ".")
    parts = [p for p in norm.split(".") if p]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UsageError(f"bad head {text!r}: write heads as LAYER.HEAD, e.g. 2.0 or L2H0")
    return int(parts[0]), int(parts[1])


def parse_heads(items: list[str], n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """Head names -> [(layer, head)] without repeats, each checked against the model's size."""
    heads = []
    for item in items:
        layer, head = parse_head(item)
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise UsageError(f"head {item!r} is outside the model ({n_layers} layers x "
                             f"{n_heads} heads)")
        heads.append((layer, head))
    if not heads:
        raise UsageError("no heads given")
    return list(dict.fromkeys(heads))
