"""Forward passes that return per-head activations for a batch of stories.

Both paths take right-padded input ids [batch, seq] (one story per row, position 0 at the
start of each row) and return site -> tensor:

    key/query/value/z   [batch, seq, n_layers, n_heads, d_head]
    activity, entropy   [batch, seq, n_layers, n_heads]   float32
    argmax              [batch, seq, n_layers, n_heads]   int64 (position in the story)

Right padding needs no attention mask: with causal attention a real token never sees the
pads after it, so its values equal those of an unpadded run; rows past a story's length
are garbage and are dropped by the caller.

- :class:`HookForward` runs any model TransformerLens supports, reading the hooks
  ``blocks.L.attn.hook_k`` / ``hook_q`` / ``hook_v`` / ``hook_z`` / ``hook_pattern``.
- :class:`FastForward` re-implements GPT-Neo and GPT-2 from their Hugging Face weights with
  fused attention (``scaled_dot_product_attention``), skips everything after the last
  attention layer (last MLP, final LayerNorm, LM head) and keeps only the requested sites.
  Local-attention layers longer than their window attend block by block, so that each
  query block only meets the keys of its window instead of the whole sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from headprobe.errors import UsageError, opt
from headprobe.hooks import hook_name

VECTOR_SITES = ("key", "query", "value", "z")
PATTERN_SITES = ("entropy", "argmax")
FAST_MODEL_TYPES = ("gpt_neo", "gpt2")
LOCAL_BLOCK = 128   # queries per block of a local-attention layer past its window


def _allocate(sites: Sequence[str], batch: int, seq: int, n_layers: int, n_heads: int,
              d_head: int, device: torch.device) -> dict[str, torch.Tensor]:
    out = {}
    for site in sites:
        if site in VECTOR_SITES:
            out[site] = torch.empty(batch, seq, n_layers, n_heads, d_head, device=device)
        elif site == "argmax":
            out[site] = torch.empty(batch, seq, n_layers, n_heads, dtype=torch.long,
                                    device=device)
        else:
            out[site] = torch.empty(batch, seq, n_layers, n_heads, device=device)
    return out


def pattern_stats(pattern: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) and argmax of attention patterns [batch, head, q, k] -> [batch, q, head]."""
    entropy = -torch.special.xlogy(pattern, pattern).sum(-1)
    return entropy.transpose(1, 2), pattern.argmax(-1).transpose(1, 2)


def local_mask(seq: int, window: int, device: torch.device) -> torch.Tensor:
    """[seq, seq] bool, True where query i may see key j: 0 <= i - j < window (GPT-Neo local)."""
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
    """Causal attention limited to the last ``window`` keys (GPT-Neo local layers).

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


@dataclass
class _Layer:
    """One block's weights in x @ W convention."""

    ln1: tuple[torch.Tensor, torch.Tensor, float]
    w_qkv: torch.Tensor            # [d_model, 3 * d_model]
    b_qkv: torch.Tensor | None     # [3 * d_model]
    w_o: torch.Tensor              # [d_model, d_model]
    b_o: torch.Tensor | None
    ln2: tuple[torch.Tensor, torch.Tensor, float]
    mlp: Any                       # module: d_model -> d_model
    scale: float
    window: int | None             # local attention window, None for global layers


def _neo_layers(hf: Any, window_override: int | None) -> list[_Layer]:
    cfg = hf.config
    layers = []
    for block, kind in zip(hf.transformer.h, cfg.attention_layers, strict=True):
        att = block.attn.attention
        w_qkv = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).T
        window = (window_override or cfg.window_size) if kind == "local" else None
        layers.append(_Layer(
            (block.ln_1.weight, block.ln_1.bias, block.ln_1.eps), w_qkv.contiguous(), None,
            att.out_proj.weight.T.contiguous(), att.out_proj.bias,
            (block.ln_2.weight, block.ln_2.bias, block.ln_2.eps), block.mlp, 1.0, window))
    return layers


def _gpt2_layers(hf: Any, window_override: int | None) -> list[_Layer]:
    layers = []
    for block in hf.transformer.h:
        att = block.attn
        layers.append(_Layer(
            (block.ln_1.weight, block.ln_1.bias, block.ln_1.eps), att.c_attn.weight,
            att.c_attn.bias, att.c_proj.weight, att.c_proj.bias,
            (block.ln_2.weight, block.ln_2.bias, block.ln_2.eps), block.mlp,
            float(att.scaling), None))
    return layers


def fast_supported(hf_model: Any) -> bool:
    """Whether :class:`FastForward` implements this Hugging Face model."""
    cfg = getattr(hf_model, "config", None)
    if getattr(cfg, "model_type", None) not in FAST_MODEL_TYPES:
        return False
    return not getattr(cfg, "add_cross_attention", False)


class FastForward:
    """Fused-attention forward for GPT-Neo / GPT-2 Hugging Face models.

    hf_model: a ``GPTNeoForCausalLM`` or ``GPT2LMHeadModel``; sites: what to return;
    window_override: local attention window to use instead of the config's (tests).
    """

    name = "fast"

    def __init__(self, hf_model: Any, sites: Sequence[str], window_override: int | None = None):
        if not fast_supported(hf_model):
            model_type = getattr(hf_model.config, "model_type", "?")
            raise UsageError(f"the fast forward path does not support model type "
                             f"{model_type!r}; use {opt('path', 'general')}")
        cfg = hf_model.config
        self.sites = list(sites)
        self.n_layers = int(cfg.num_hidden_layers)
        self.n_heads = int(cfg.num_attention_heads)
        self.d_model = int(cfg.hidden_size)
        self.d_head = self.d_model // self.n_heads
        self.n_ctx = int(cfg.max_position_embeddings)
        self.wte = hf_model.transformer.wte.weight
        self.wpe = hf_model.transformer.wpe.weight
        build = _neo_layers if cfg.model_type == "gpt_neo" else _gpt2_layers
        self.layers = build(hf_model, window_override)
        # ||z_h W_O[h]||^2 = z_h^T (W_O[h] W_O[h]^T) z_h; the per-head Gram matrices are laid
        # out block-diagonally so that one dense matmul serves all heads.
        self.gram = [self._block_gram(layer.w_o) for layer in self.layers]
        self.act = self._activation(hf_model)
        self.device = self.wte.device
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def _block_gram(self, w_o: torch.Tensor) -> torch.Tensor:
        """[n_heads * d_head, n_heads * d_head] block-diagonal matrix of W_O[h] W_O[h]^T."""
        w = w_o.reshape(self.n_heads, self.d_head, self.d_model)
        return torch.block_diag(*torch.einsum("hdm,hem->hde", w, w))

    @staticmethod
    def _activation(hf_model: Any) -> Any:
        name = getattr(hf_model.config, "activation_function", "")
        if name in ("gelu_new", "gelu_pytorch_tanh"):
            return lambda x: F.gelu(x, approximate="tanh")   # same formula, one fused kernel
        return None

    def _mlp(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        if self.act is None:
            return layer.mlp(x)
        return layer.mlp.c_proj(self.act(layer.mlp.c_fc(x)))

    def _local_mask(self, seq: int, window: int) -> torch.Tensor:
        if (seq, window) not in self._masks:
            self._masks = {(seq, window): local_mask(seq, window, self.device)}
        return self._masks[seq, window]

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, seq = input_ids.shape
        out = _allocate(self.sites, batch, seq, self.n_layers, self.n_heads, self.d_head,
                        self.device)
        heads = (batch, seq, self.n_heads, self.d_head)
        need_pattern = any(s in PATTERN_SITES for s in self.sites)
        need_z = need_pattern or "z" in out or "activity" in out
        x = F.embedding(input_ids, self.wte) + self.wpe[:seq]
        for index, layer in enumerate(self.layers):
            h = F.layer_norm(x, (self.d_model,), *layer.ln1)
            qkv = h @ layer.w_qkv if layer.b_qkv is None else torch.addmm(
                layer.b_qkv, h.reshape(-1, self.d_model), layer.w_qkv).reshape(batch, seq, -1)
            q, k, v = (t.reshape(heads) for t in qkv.split(self.d_model, dim=-1))
            for site, tensor in (("query", q), ("key", k), ("value", v)):
                if site in out:
                    out[site][:, :, index] = tensor
            if index == self.n_layers - 1 and not need_z:
                break  # key/query/value only: the last attention itself is not needed
            qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
            local = layer.window is not None and seq > layer.window
            if local:
                z = local_attention(qh, kh, vh, layer.window, layer.scale)
            else:
                z = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=layer.scale)
            if need_pattern:
                mask = self._local_mask(seq, layer.window) if local else None
                self._pattern_sites(out, index, qh, kh, layer.scale, mask)
            z = z.transpose(1, 2)                                   # [batch, seq, head, d_head]
            if "z" in out:
                out["z"][:, :, index] = z
            if "activity" in out:
                flat = z.reshape(batch, seq, self.d_model)
                sq = ((flat @ self.gram[index]) * flat).reshape(heads).sum(-1)
                out["activity"][:, :, index] = sq.clamp_min_(0).sqrt_()
            if index == self.n_layers - 1:
                break  # nothing after the last attention layer is needed
            attn = z.reshape(batch, seq, self.d_model) @ layer.w_o
            x = x + (attn if layer.b_o is None else attn + layer.b_o)
            x = x + self._mlp(layer, F.layer_norm(x, (self.d_model,), *layer.ln2))
        return out

    def _pattern_sites(self, out: dict[str, torch.Tensor], index: int, qh: torch.Tensor,
                       kh: torch.Tensor, scale: float, mask: torch.Tensor | None) -> None:
        seq = qh.shape[2]
        if mask is None:
            mask = torch.ones(seq, seq, dtype=torch.bool, device=qh.device).tril()
        scores = (qh @ kh.transpose(-1, -2)) * scale
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        entropy, argmax = pattern_stats(pattern)
        if "entropy" in out:
            out["entropy"][:, :, index] = entropy
        if "argmax" in out:
            out["argmax"][:, :, index] = argmax


class HookForward:
    """General forward through a TransformerBridge with hooks (any supported causal LM).

    bridge: a TransformerBridge in raw-weights mode (``load_model(..., compat=False)``).
    """

    name = "general"

    def __init__(self, bridge: Any, sites: Sequence[str]):
        cfg = bridge.cfg
        self.bridge = bridge
        self.sites = list(sites)
        self.n_layers, self.n_heads, self.d_head = int(cfg.n_layers), int(cfg.n_heads), int(
            cfg.d_head)
        self.n_ctx = int(cfg.n_ctx)
        self.w_o = ([bridge.blocks[i].attn.W_O.detach() for i in range(self.n_layers)]
                    if "activity" in self.sites else None)      # each [head, d_head, d_model]
        self.device = next(bridge.parameters()).device

    def _hooks(self, out: dict[str, torch.Tensor]) -> list[tuple[str, Any]]:
        hooks = []
        for layer in range(self.n_layers):
            for site, point in (("key", "k"), ("query", "q"), ("value", "v")):
                if site in out:
                    hooks.append((hook_name(point, layer), self._store(out, site, layer)))
            if "z" in out or "activity" in out:
                hooks.append((hook_name("z", layer), self._z_hook(out, layer)))
            if any(s in out for s in PATTERN_SITES):
                hooks.append((hook_name("pattern", layer), self._pattern_hook(out, layer)))
        return hooks

    @staticmethod
    def _store(out: dict[str, torch.Tensor], site: str, layer: int) -> Any:
        def hook(tensor: torch.Tensor, hook: Any) -> None:
            out[site][:, :, layer] = tensor
        return hook

    def _z_hook(self, out: dict[str, torch.Tensor], layer: int) -> Any:
        def hook(z: torch.Tensor, hook: Any) -> None:
            if "z" in out:
                out["z"][:, :, layer] = z
            if "activity" in out:
                contribution = torch.einsum("bthd,hdm->bthm", z, self.w_o[layer])
                out["activity"][:, :, layer] = contribution.norm(dim=-1)
        return hook

    @staticmethod
    def _pattern_hook(out: dict[str, torch.Tensor], layer: int) -> Any:
        def hook(pattern: torch.Tensor, hook: Any) -> None:
            entropy, argmax = pattern_stats(pattern)
            if "entropy" in out:
                out["entropy"][:, :, layer] = entropy
            if "argmax" in out:
                out["argmax"][:, :, layer] = argmax
        return hook

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, seq = input_ids.shape
        out = _allocate(self.sites, batch, seq, self.n_layers, self.n_heads, self.d_head,
                        self.device)
        self.bridge.run_with_hooks(input_ids, fwd_hooks=self._hooks(out), return_type=None)
        return out
