"""The model families the fused forward implements, read from Hugging Face weights.

Each family turns a loaded causal LM into a :class:`Fused` description: how tokens are
embedded, the rotary embedding (if any), and per block its norms, fused q/k/v weights,
output projection and MLP. :mod:`extract.forward.fused` runs any such description.

- ``gpt_neo``: LayerNorm, learned positions, unscaled attention, local layers with a window;
- ``gpt2``: LayerNorm, learned positions, fused ``c_attn``;
- ``llama``, ``mistral``, ``qwen2`` (the Llama family): RMSNorm, rotary embeddings,
  grouped-query attention, gated MLP, optional q/k/v biases and sliding-window layers.

Elementwise passes cost more than matrix products on a busy CPU, so the Llama family is
folded into fewer of them: the RMSNorm weights are multiplied into the next projection,
the gate and up projections are one product, and ``rotate_half`` of the rotary embedding,
being linear, is multiplied into extra query and key columns of the fused q/k/v weight
(``rotate_half(x W + b) = x (W R) + b R``), leaving one multiply-add per rotated tensor.
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
    w_qkv: torch.Tensor            # [d_model, (n_heads + 2 n_kv_heads) * d_head], then for
    b_qkv: torch.Tensor | None     # rotary models rotate_half's of queries and keys
    w_o: torch.Tensor              # [n_heads * d_head, d_model]
    b_o: torch.Tensor | None
    norm2: Norm
    mlp: Callable[[torch.Tensor], torch.Tensor]
    scale: float
    window: int | None             # local / sliding window, None for global layers
    modules: dict[str, Any]        # HF modules the check hooks: "query" and "key" projections
                                   # (or one joint "qkv"), and "out" (the output projection)


@dataclass
class Fused:
    """What the fused forward needs of a model."""

    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    n_ctx: int
    embed: Callable[[torch.Tensor], torch.Tensor]       # ids [b, s] -> [b, s, d_model]
    rotary: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None  # x -> cos,
    # sin [seq, 1, d_head]; the blocks' w_qkv then end with rotate_half'ed q and k columns
    blocks: list[Block]
    device: torch.device


def _layer_norm(module: Any) -> Norm:
    return partial(F.layer_norm, normalized_shape=(module.weight.shape[0],),
                   weight=module.weight, bias=module.bias, eps=module.eps)


def _rms_scale(module: Any) -> Norm:
    """RMSNorm without its weight (folded into the next projection): x / rms(x)."""
    eps = float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)))
    d = module.weight.shape[0]

    def norm(x: torch.Tensor) -> torch.Tensor:
        mean_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(d)
        return x * mean_square.add_(eps).rsqrt_()

    return norm


def rotate_half_matrix(n_heads: int, d_head: int) -> torch.Tensor:
    """R [n_heads * d_head, n_heads * d_head] with ``x @ R == rotate_half(x)`` per head:
    (x1, x2) -> (-x2, x1) over the halves of each head's d_head."""
    half = d_head // 2
    r = torch.zeros(d_head, d_head)
    r[torch.arange(half) + half, torch.arange(half)] = -1.0
    r[torch.arange(half), torch.arange(half) + half] = 1.0
    return torch.block_diag(*[r] * n_heads)


def _llama_qkv(att: Any, weight: torch.Tensor, n_heads: int, n_kv: int, d_head: int
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(w [d_model, width], b [width] or None) of q, k, v, q R, k R with the input norm's
    ``weight`` folded in."""
    projections = (att.q_proj, att.k_proj, att.v_proj)
    w = torch.cat([p.weight for p in projections]).T * weight[:, None]
    b = torch.cat([p.bias if p.bias is not None else w.new_zeros(p.out_features)
                   for p in projections])
    rot_q = rotate_half_matrix(n_heads, d_head).to(w)
    rot_k = rotate_half_matrix(n_kv, d_head).to(w)
    nq, nk = n_heads * d_head, n_kv * d_head
    w = torch.cat([w, w[:, :nq] @ rot_q, w[:, nq:nq + nk] @ rot_k], dim=1).contiguous()
    b = torch.cat([b, b[:nq] @ rot_q, b[nq:nq + nk] @ rot_k])
    has_bias = any(p.bias is not None for p in projections)
    return w, (b if has_bias else None)


def _gated_mlp(mlp: Any, weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """act(x W_gate) * (x W_up) @ W_down with the post-attention norm's weight folded in."""
    w_gu = (torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).T * weight[:, None])
    w_gu, w_down = w_gu.contiguous(), mlp.down_proj.weight.T.contiguous()
    biases = (mlp.gate_proj.bias, mlp.up_proj.bias, mlp.down_proj.bias)
    b_gu = None if biases[0] is None else torch.cat(biases[:2])
    act = mlp.act_fn

    def forward(x: torch.Tensor) -> torch.Tensor:
        gu = x @ w_gu if b_gu is None else torch.addmm(b_gu, x.flatten(0, -2), w_gu)
        gate, up = gu.reshape(*x.shape[:-1], -1).chunk(2, dim=-1)
        out = act(gate).mul_(up) @ w_down
        return out if biases[2] is None else out + biases[2]

    return forward


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
            cache[seq] = (cos[0, :, None].to(x.dtype), sin[0, :, None].to(x.dtype))  # [s,1,d]
        return cache[seq]

    return rotary


def llama(hf: Any, window_override: int | None = None) -> Fused:
    """Llama, Mistral and Qwen2: RMSNorm, rotary, grouped-query attention, gated MLP."""
    cfg = hf.config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    d_head = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    blocks = []
    for index, block in enumerate(hf.model.layers):
        att = block.self_attn
        w_qkv, b_qkv = _llama_qkv(att, block.input_layernorm.weight, n_heads, n_kv, d_head)
        window = _window(cfg, index)
        blocks.append(Block(
            _rms_scale(block.input_layernorm), w_qkv, b_qkv, att.o_proj.weight.T.contiguous(),
            att.o_proj.bias, _rms_scale(block.post_attention_layernorm),
            _gated_mlp(block.mlp, block.post_attention_layernorm.weight), float(att.scaling),
            (window_override or window) if window is not None else None,
            {"query": att.q_proj, "key": att.k_proj, "out": att.o_proj}))
    embed = hf.model.embed_tokens
    return Fused(n_heads, n_kv, d_head, int(cfg.hidden_size), int(cfg.max_position_embeddings),
                 embed, _rotary(hf), blocks, embed.weight.device)


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
        d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if d_head % 2:
            return "an odd head size cannot be rotated"
    return None
