"""The fused forward: a model family's blocks re-run with fused attention, keeping only the
requested sites.

:class:`FastForward` runs a :class:`extract.forward.families.Fused` description with
``scaled_dot_product_attention`` (grouped-query attention included, without copying keys
and values per query head), skips everything after the last attention layer (last MLP,
final norm, LM head) and, when only keys, queries and values are asked for, the last
attention too. Local and sliding-window layers longer than their window attend block by
block, so each query block only meets the keys of its window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from extract.forward.attention import (
    allocate,
    attend,
    causal_pattern,
    local_mask,
    pattern_stats,
)
from extract.forward.families import FAMILIES, Block, unsupported_reason
from extract.store.schema import ROTARY_SITES, StoreShape
from headprobe.errors import UsageError, opt

PATTERN_SITES = ("entropy", "argmax")


def fast_supported(hf_model: Any) -> bool:
    """Whether :class:`FastForward` implements this Hugging Face model."""
    return unsupported_reason(hf_model) is None


class FastForward:
    """Fused-attention forward for GPT-Neo, GPT-2 and Llama-family Hugging Face models.

    hf_model: a loaded causal LM of a family in ``extract.forward.families.FAMILIES``;
    sites: what to return; window_override: local attention window to use instead of the
    config's (tests). Called with input ids [batch, seq] (right-padded), it returns
    site -> [batch, seq, *StoreShape.row_shape(site)].
    """

    name = "fast"

    def __init__(self, hf_model: Any, sites: Sequence[str], window_override: int | None = None):
        reason = unsupported_reason(hf_model)
        if reason is not None:
            raise UsageError(f"the fast forward path cannot run this model ({reason}); use "
                             f"{opt('path', 'general')}")
        model = FAMILIES[hf_model.config.model_type](hf_model, window_override)
        self.model_type = str(hf_model.config.model_type)
        self.sites = list(sites)
        if model.rotary is None and any(s in ROTARY_SITES for s in self.sites):
            raise UsageError(f"sites {', '.join(ROTARY_SITES)} need a model with rotary "
                             f"embeddings; model type {self.model_type!r} has none")
        self.model = model
        self.shape = StoreShape(len(model.blocks), model.n_heads, model.d_head, model.n_kv_heads)
        self.n_layers, self.n_heads, self.d_head = len(model.blocks), model.n_heads, model.d_head
        self.n_kv_heads, self.n_ctx, self.device = model.n_kv_heads, model.n_ctx, model.device
        self.traits = {"rotary": model.rotary is not None, "qk_norm": False}
        # ||z_h W_O[h]||^2 = z_h^T (W_O[h] W_O[h]^T) z_h; the per-head Gram matrices are laid
        # out block-diagonally so that one dense matmul serves all heads.
        self.gram = [self._block_gram(block.w_o) for block in model.blocks]
        self._masks: dict[tuple[int, int], torch.Tensor] = {}
        self.projection_seconds = 0.0   # spent in the q/k/v projections so far (host clock)

    def _block_gram(self, w_o: torch.Tensor) -> torch.Tensor:
        """[n_heads * d_head, n_heads * d_head] block-diagonal matrix of W_O[h] W_O[h]^T."""
        w = w_o.reshape(self.n_heads, self.d_head, -1)
        return torch.block_diag(*torch.einsum("hdm,hem->hde", w, w))

    def _qkv(self, block: Block, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries [b, s, n_heads, d_head], keys and values [b, s, n_kv_heads, d_head] and,
        for rotary models, rotate_half of the queries and the keys."""
        batch, seq, _ = h.shape
        flat = h.reshape(-1, h.shape[-1])
        qkv = flat @ block.w_qkv if block.b_qkv is None else torch.addmm(block.b_qkv, flat,
                                                                          block.w_qkv)
        nq, nk = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        widths = [nq, nk, nk] + ([nq, nk] if self.model.rotary is not None else [])
        return tuple(t.reshape(batch, seq, -1, self.d_head)
                     for t in qkv.reshape(batch, seq, -1).split(widths, dim=-1))

    def _keep(self, out: dict[str, torch.Tensor], index: int, **tensors: torch.Tensor) -> None:
        for site, tensor in tensors.items():
            if site in out:
                out[site][:, :, index] = tensor

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, sites: Sequence[str] | None = None,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """site -> [batch, seq, ...] of input ids [batch, seq], float sites in ``dtype``;
        ``sites`` overrides the forward's own."""
        batch, seq = input_ids.shape
        out = allocate(self.sites if sites is None else sites, batch, seq, self.shape,
                       self.device, dtype)
        need_z = any(s in out for s in ("z", "activity", *PATTERN_SITES))
        x = self.model.embed(input_ids)
        rotary = self.model.rotary(x) if self.model.rotary is not None else None
        last = self.n_layers - 1
        for index, block in enumerate(self.model.blocks):
            began = time.perf_counter()
            q, k, v, *half = self._qkv(block, block.norm1(x))
            self.projection_seconds += time.perf_counter() - began
            self._keep(out, index, query=q, key=k, value=v)
            if rotary is not None:   # q cos + rotate_half(q) sin, rotate_half from the weights
                cos, sin = rotary
                q, k = torch.addcmul(q * cos, half[0], sin), torch.addcmul(k * cos, half[1], sin)
                self._keep(out, index, query_rot=q, key_rot=k)
            if index == last and not need_z:
                break  # keys/queries/values only: the last attention itself is not needed
            z = self._attention(out, index, block, q, k, v)
            if index == last:
                break  # nothing after the last attention layer is needed
            attn = z.reshape(batch, seq, -1) @ block.w_o
            x = x + (attn if block.b_o is None else attn + block.b_o)
            x = x + block.mlp(block.norm2(x))
        return out

    def _attention(self, out: dict[str, torch.Tensor], index: int, block: Block,
                   q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """z [b, s, n_heads, d_head] of one block; fills z, activity and pattern sites."""
        qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
        z = attend(qh, kh, vh, block.scale, block.window).transpose(1, 2)
        self._keep(out, index, z=z)
        if "activity" in out:
            batch, seq = z.shape[:2]
            flat = z.reshape(batch, seq, -1)
            sq = ((flat @ self.gram[index]) * flat).reshape(z.shape).sum(-1)
            out["activity"][:, :, index] = sq.clamp_min_(0).sqrt_()
        if any(s in out for s in PATTERN_SITES):
            seq = q.shape[1]
            local = block.window is not None and seq > block.window
            pattern = causal_pattern(qh, kh, block.scale,
                                     self._local_mask(seq, block.window) if local else None)
            entropy, argmax = pattern_stats(pattern)
            self._keep(out, index, entropy=entropy, argmax=argmax)
        return z

    def _local_mask(self, seq: int, window: int) -> torch.Tensor:
        if (seq, window) not in self._masks:
            self._masks = {(seq, window): local_mask(seq, window, self.device)}
        return self._masks[seq, window]
