"""The model a training run builds: a GPT-Neo like the shared TinyStories model.

Global and local attention layers, tied embeddings (unless asked otherwise), no dropout.
``attn-only`` keeps the same Hugging Face architecture, so every loader understands it, but
zeroes and freezes the MLP output projections (with the rest of the MLP and its layer
norm), so each block adds only its attention output to the residual stream.
"""

from __future__ import annotations

from typing import Any

import torch

from extract.training.config import TrainConfig


def gpt_neo_config(cfg: TrainConfig, vocab_size: int, bos: int = 0) -> Any:
    """The GPT-Neo config for ``cfg``: global and local layers in the pattern
    ``cfg.attention`` (global first by default, as in the shared model); the unembedding
    is the embedding unless ``cfg.tied`` is False."""
    from transformers import GPTNeoConfig

    pattern = cfg.attention.split("-")
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


def make_attn_only(model: Any) -> None:
    """Zero the MLP output projections and freeze the MLPs and their layer norms."""
    with torch.no_grad():
        for block in model.transformer.h:
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
            for p in [*block.mlp.parameters(), *block.ln_2.parameters()]:
                p.requires_grad_(False)


def build_model(cfg: TrainConfig, vocab_size: int, bos: int = 0) -> Any:
    """A freshly initialised GPT-Neo (seeded by ``cfg.seed``)."""
    from transformers import GPTNeoForCausalLM

    torch.manual_seed(cfg.seed)
    model = GPTNeoForCausalLM(gpt_neo_config(cfg, vocab_size, bos))
    if cfg.arch == "attn-only":
        make_attn_only(model)
    return model
