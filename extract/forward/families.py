"""The model families the fused forward implements, read from Hugging Face weights.

Each family turns a loaded causal LM into a :class:`Fused` description: how tokens are
embedded, the rotary embedding (if any), and per block its norms, fused q/k/v weights,
output projection and MLP. :mod:`extract.forward.fused` runs any such description.

- ``gpt_neo``: LayerNorm, learned positions, unscaled attention, local layers with a window;
- ``gpt2``: LayerNorm, learned positions, fused ``c_attn``;
- ``llama``, ``mistral``, ``qwen2`` (the Llama family): RMSNorm, rotary embeddings,
  grouped-query attention, gated MLP, optional q/k/v biases and sliding-window layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

Norm = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Block:
    """One block's weights in x @ W convention."""

    norm1: Norm
    w_qkv: torch.Tensor            # [d_model, (n_heads + 2 n_kv_heads) * d_head]
    b_qkv: torch.Tensor | None
    w_o: torch.Tensor              # [n_heads * d_head, d_model]
    b_o: torch.Tensor | None
    norm2: Norm
    mlp: Callable[[torch.Tensor], torch.Tensor]
    scale: float
    window: int | None             # local / sliding window, None for global layers
    modules: dict[str, Any]        # the HF modules: query, key (projections), out


@dataclass
class Fused:
    """What the fused forward needs of a model."""

    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    n_ctx: int
    embed: Callable[[torch.Tensor], torch.Tensor]       # ids [b, s] -> [b, s, d_model]
    rotary: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None  # x -> cos, sin
    blocks: list[Block]
    device: torch.device


def _layer_norm(module: Any) -> Norm:
    return partial(F.layer_norm, normalized_shape=(module.weight.shape[0],),
                   weight=module.weight, bias=module.bias, eps=module.eps)


def _rms_norm(module: Any) -> Norm:
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
    return partial(F.rms_norm, normalized_shape=(module.weight.shape[0],),
                   weight=module.weight, eps=eps)


def _tanh_gelu_mlp(hf: Any, mlp: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    name = getattr(hf.config, "activation_function", "")
    if name in ("gelu_new", "gelu_pytorch_tanh"):   # same formula, one fused kernel
        return lambda x: mlp.c_proj(F.gelu(mlp.c_fc(x), approximate="tanh"))
    return mlp


def _learned_positions(wte: torch.Tensor, wpe: torch.Tensor) -> Callable:
    return lambda ids: F.embedding(ids, wte) + wpe[:ids.shape[1]]


def gpt_neo(hf: Any, window_override: int | None = None) -> Fused:
    cfg = hf.config
    blocks = []
    for block, kind in zip(hf.transformer.h, cfg.attention_layers, strict=True):
        att = block.attn.attention
        w_qkv = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).T
        blocks.append(Block(
            _layer_norm(block.ln_1), w_qkv.contiguous(), None, att.out_proj.weight.T.contiguous(),
            att.out_proj.bias, _layer_norm(block.ln_2), _tanh_gelu_mlp(hf, block.mlp), 1.0,
            (window_override or cfg.window_size) if kind == "local" else None,
            {"query": att.q_proj, "key": att.k_proj, "out": att.out_proj}))
    n_heads = int(cfg.num_heads)
    d_model = int(cfg.hidden_size)
    wte = hf.transformer.wte.weight
    return Fused(n_heads, n_heads, d_model // n_heads, d_model,
                 int(cfg.max_position_embeddings),
                 _learned_positions(wte, hf.transformer.wpe.weight), None, blocks, wte.device)


def gpt2(hf: Any, window_override: int | None = None) -> Fused:
    cfg = hf.config
    blocks = []
    for block in hf.transformer.h:
        att = block.attn
        blocks.append(Block(
            _layer_norm(block.ln_1), att.c_attn.weight, att.c_attn.bias, att.c_proj.weight,
            att.c_proj.bias, _layer_norm(block.ln_2), _tanh_gelu_mlp(hf, block.mlp),
            float(att.scaling), None, {"qkv": att.c_attn, "out": att.c_proj}))
    n_heads, d_model = int(cfg.n_head), int(cfg.n_embd)
    wte = hf.transformer.wte.weight
    return Fused(n_heads, n_heads, d_model // n_heads, d_model, int(cfg.n_positions),
                 _learned_positions(wte, hf.transformer.wpe.weight), None, blocks, wte.device)


def _window(cfg: Any, index: int) -> int | None:
    """Sliding window of layer ``index``: per layer type (Qwen2), else for all (Mistral)."""
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if types is not None:
        return window if types[index] == "sliding_attention" else None
    return window


def _rotary(hf: Any) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """x [b, s, d_model] -> (cos, sin) [s, d_head] from the model's own rotary module (so
    every RoPE scaling type the model supports is honoured)."""
    module = hf.model.rotary_emb
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def rotary(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq = x.shape[1]
        if seq not in cache:
            positions = torch.arange(seq, device=x.device)[None]
            cos, sin = module(x[:1], positions)
            cache.clear()
            cache[seq] = (cos[0], sin[0])
        return cache[seq]

    return rotary


def llama(hf: Any, window_override: int | None = None) -> Fused:
    """Llama, Mistral and Qwen2: RMSNorm, rotary, grouped-query attention, gated MLP."""
    cfg = hf.config
    blocks = []
    for index, block in enumerate(hf.model.layers):
        att = block.self_attn
        projections = (att.q_proj, att.k_proj, att.v_proj)
        w_qkv = torch.cat([p.weight for p in projections]).T.contiguous()
        biases = [p.bias for p in projections]
        b_qkv = None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else torch.zeros(p.out_features, device=w_qkv.device)
             for b, p in zip(biases, projections, strict=True)])
        window = _window(cfg, index)
        blocks.append(Block(
            _rms_norm(block.input_layernorm), w_qkv, b_qkv, att.o_proj.weight.T.contiguous(),
            att.o_proj.bias, _rms_norm(block.post_attention_layernorm), block.mlp,
            float(att.scaling), (window_override or window) if window is not None else None,
            {"query": att.q_proj, "key": att.k_proj, "out": att.o_proj}))
    n_heads = int(cfg.num_attention_heads)
    d_head = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    embed = hf.model.embed_tokens
    return Fused(n_heads, int(getattr(cfg, "num_key_value_heads", None) or n_heads), d_head,
                 int(cfg.hidden_size), int(cfg.max_position_embeddings), embed, _rotary(hf),
                 blocks, embed.weight.device)


FAMILIES: dict[str, Callable[..., Fused]] = {
    "gpt_neo": gpt_neo, "gpt2": gpt2, "llama": llama, "mistral": llama, "qwen2": llama}


def unsupported_reason(hf: Any) -> str | None:
    """Why the fused forward cannot run ``hf`` (None when it can)."""
    cfg = getattr(hf, "config", None)
    model_type = getattr(cfg, "model_type", None)
    if model_type not in FAMILIES:
        return f"model type {model_type!r} is not one of {', '.join(FAMILIES)}"
    if getattr(cfg, "add_cross_attention", False):
        return "the model has cross-attention"
    if model_type in ("llama", "mistral", "qwen2"):
        mlp = hf.model.layers[0].mlp
        if not all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj")):
            return "the MLP is not the gated MLP of the Llama family"
        if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
            return "tensor-parallel pretraining slices (pretraining_tp > 1)"
    return None
