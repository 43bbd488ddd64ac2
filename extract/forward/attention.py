"""Attention pieces the fused forward is built from: masks, local attention, grouped-query
expansion, pattern statistics, and the output buffers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from extract.store.schema import SITES, StoreShape

LOCAL_BLOCK = 128   # queries per block of a local-attention layer past its window


def allocate(sites: Sequence[str], batch: int, seq: int, shape: StoreShape,
             device: torch.device, dtype: torch.dtype = torch.float32
             ) -> dict[str, torch.Tensor]:
    """Empty outputs, site -> [batch, seq, *row_shape(site)]: int64 for positions, else
    ``dtype`` (values are computed in the model's dtype and rounded once, when stored here)."""
    out = {}
    for site in sites:
        kind = torch.long if SITES[site].kind == "index" else dtype
        out[site] = torch.empty(batch, seq, *shape.row_shape(site), dtype=kind, device=device)
    return out


def pattern_stats(pattern: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) and argmax of attention patterns [batch, head, q, k] -> [batch, q, head]."""
    entropy = -torch.special.xlogy(pattern, pattern).sum(-1)
    return entropy.transpose(1, 2), pattern.argmax(-1).transpose(1, 2)


def local_mask(seq: int, window: int, device: torch.device) -> torch.Tensor:
    """[seq, seq] bool, True where query i may see key j: 0 <= i - j < window (GPT-Neo local,
    sliding-window layers)."""
    i = torch.arange(seq, device=device)[:, None]
    j = torch.arange(seq, device=device)[None, :]
    return (j <= i) & (i - j < window)


def band_mask(queries: int, window: int, device: torch.device) -> torch.Tensor:
    """[queries, queries + window - 1] bool for a block of queries that starts ``window - 1``
    keys after its first key: query i may see keys i .. i + window - 1 (the last is itself)."""
    i = torch.arange(queries, device=device)[:, None]
    j = torch.arange(queries + window - 1, device=device)[None, :]
    return (j >= i) & (j < i + window)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                    scale: float, block: int = LOCAL_BLOCK) -> torch.Tensor:
    """Causal attention limited to the last ``window`` keys (local / sliding-window layers).

    q, k, v: [batch, head, seq, d_head] -> [batch, head, seq, d_head]. The first ``window``
    queries are plainly causal; later ones go in blocks that see only their window's keys,
    so the work grows with seq * window rather than seq ** 2.
    """
    seq = q.shape[2]
    z = torch.empty_like(q)
    first = min(seq, window)
    z[:, :, :first] = F.scaled_dot_product_attention(
        q[:, :, :first], k[:, :, :first], v[:, :, :first], is_causal=True, scale=scale)
    masks: dict[int, torch.Tensor] = {}
    for start in range(first, seq, block):
        end = min(start + block, seq)
        keys = slice(start - window + 1, end)
        if end - start not in masks:
            masks[end - start] = band_mask(end - start, window, q.device)
        z[:, :, start:end] = F.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, keys], v[:, :, keys], attn_mask=masks[end - start],
            scale=scale)
    return z


def expand_kv(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Key/value heads repeated for the query heads that share them: [b, kv, s, d] ->
    [b, kv * groups, s, d] (query head h reads key/value head h // groups)."""
    return t if groups == 1 else t.repeat_interleave(groups, dim=1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           window: int | None) -> torch.Tensor:
    """Causal attention, optionally limited to a window; keys and values may have fewer
    heads than the queries (grouped-query attention).

    q: [batch, n_heads, seq, d_head]; k, v: [batch, n_kv_heads, seq, d_head] ->
    [batch, n_heads, seq, d_head].
    """
    groups = q.shape[1] // k.shape[1]
    if window is not None and q.shape[2] > window:
        return local_attention(q, expand_kv(k, groups), expand_kv(v, groups), window, scale)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                          enable_gqa=groups > 1)


def causal_pattern(q: torch.Tensor, k: torch.Tensor, scale: float,
                   mask: torch.Tensor | None) -> torch.Tensor:
    """Attention pattern [batch, n_heads, seq, seq] of q [b, n_heads, s, d] and k
    [b, n_kv_heads, s, d]; mask [seq, seq] bool (True = may attend), causal when None."""
    seq = q.shape[2]
    if mask is None:
        mask = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
    scores = (q @ expand_kv(k, q.shape[1] // k.shape[1]).transpose(-1, -2)) * scale
    return scores.masked_fill(~mask, float("-inf")).softmax(-1)
