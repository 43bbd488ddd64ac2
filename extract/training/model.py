"""The model a training run builds, from its settings: a GPT-Neo or a rotary model.

``family`` gpt-neo (the default): a GPT-Neo like the shared TinyStories model, global and
local attention layers, learned absolute positions, LayerNorm. ``family`` llama or qwen2:
rotary positions, RMSNorm, SwiGLU MLPs, global layers only, optional grouped-query
attention (``kv_heads``). Tied embeddings unless asked otherwise, no dropout.

``attn-only`` keeps the same Hugging Face architecture, so every loader understands it, but
zeroes and freezes the MLP output projections (with the rest of the MLP and the norm in
front of it), so each block adds only its attention output to the residual stream.
"""

from __future__ import annotations

from typing import Any

import torch

from extract.training.config import TrainConfig

# per family: (the transformers model class, where the blocks are, each block's MLP
# output projection and the norm feeding its MLP)
FAMILY_PARTS = {
    "gpt-neo": ("GPTNeoForCausalLM", "transformer.h", "mlp.c_proj", "ln_2"),
    "llama": ("LlamaForCausalLM", "model.layers", "mlp.down_proj", "post_attention_layernorm"),
    "qwen2": ("Qwen2ForCausalLM", "model.layers", "mlp.down_proj", "post_attention_layernorm"),
}


def gpt_neo_config(cfg: TrainConfig, vocab_size: int, bos: int = 0) -> Any:
    """The GPT-Neo config for ``cfg``: global and local layers in the pattern
    ``cfg.attention`` (global first by default, as in the shared model); the unembedding
    is the embedding unless ``cfg.tied`` is False."""
    from transformers import GPTNeoConfig

    pattern = cfg.layer_pattern()
    repeats, rest = divmod(cfg.layers, len(pattern))
    attention_types: list[Any] = []
    if repeats:
        attention_types.append([pattern, repeats])
    if rest:
        attention_types.append([pattern[:rest], 1])
    config = GPTNeoConfig(
        vocab_size=vocab_size, max_position_embeddings=cfg.ctx, hidden_size=cfg.d_model,
        num_layers=cfg.layers, num_heads=cfg.heads, attention_types=attention_types,
        intermediate_size=4 * cfg.d_model, window_size=cfg.window,
        activation_function="gelu_new", embed_dropout=0.0, attention_dropout=0.0,
        resid_dropout=0.0, bos_token_id=bos, eos_token_id=bos, tie_word_embeddings=cfg.tied,
    )
    config.headprobe_arch = cfg.arch
    return config


def rotary_config(cfg: TrainConfig, vocab_size: int, bos: int = 0) -> Any:
    """The Llama or Qwen2 config for ``cfg``: rotary positions, RMSNorm, SwiGLU MLPs of
    width 4·d_model, ``cfg.kv_heads`` key/value heads (0: as many as query heads), heads
    ``cfg.d_head`` wide (0: d_model // heads)."""
    import transformers

    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}
    config = config_class[cfg.family](
        vocab_size=vocab_size, hidden_size=cfg.d_model, intermediate_size=4 * cfg.d_model,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads or cfg.heads,
        head_dim=cfg.d_head or cfg.d_model // cfg.heads, max_position_embeddings=cfg.ctx,
        attention_dropout=0.0, bos_token_id=bos, eos_token_id=bos,
        tie_word_embeddings=cfg.tied,
    )
    config.headprobe_arch = cfg.arch
    return config


def model_config(cfg: TrainConfig, vocab_size: int, bos: int = 0) -> Any:
    """The transformers config of ``cfg.family``."""
    if cfg.family == "gpt-neo":
        return gpt_neo_config(cfg, vocab_size, bos)
    return rotary_config(cfg, vocab_size, bos)


def blocks(model: Any, family: str) -> list[Any]:
    """The transformer blocks of a ``family`` model."""
    return list(model.get_submodule(FAMILY_PARTS[family][1]))


def make_attn_only(model: Any, family: str = "gpt-neo") -> None:
    """Zero the MLP output projections and freeze the MLPs and the norms feeding them."""
    _, _, out_proj, norm = FAMILY_PARTS[family]
    with torch.no_grad():
        for block in blocks(model, family):
            for p in block.get_submodule(out_proj).parameters():
                p.zero_()
            for p in [*block.mlp.parameters(), *block.get_submodule(norm).parameters()]:
                p.requires_grad_(False)


def build_model(cfg: TrainConfig, vocab_size: int, bos: int = 0) -> Any:
    """A freshly initialised model of ``cfg.family`` (seeded by ``cfg.seed``)."""
    import transformers

    torch.manual_seed(cfg.seed)
    model_class = getattr(transformers, FAMILY_PARTS[cfg.family][0])
    model = model_class(model_config(cfg, vocab_size, bos))
    if cfg.arch == "attn-only":
        make_attn_only(model, cfg.family)
    return model
