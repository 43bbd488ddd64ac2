"""Loading models through TransformerLens 4 (hub names or local HF directories)."""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import torch

from datasets_build.cli_support import UsageError
from datasets_build.hub import resolve_pretrained

DEFAULT_MODEL = "roneneldan/TinyStories-1M"


def load_model(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: torch.dtype = torch.float32,
               compat: bool = True) -> Any:
    """Boot ``name`` (hub name or local HF dir) as a TransformerBridge in eval mode.

    ``compat`` turns on TransformerLens' compatibility mode, which gives the
    HookedTransformer-style weight views (``W_Q``, ``W_O``, ...) and numerics.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    source = resolve_pretrained(name, "model")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            model = TransformerBridge.boot_transformers(source, device=device, dtype=dtype)
            if compat:
                model.enable_compatibility_mode()
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    model.eval()
    return model


def architecture(model: Any) -> dict[str, Any]:
    """The architecture numbers a reader of stored activations needs."""
    cfg = model.cfg
    return {
        "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads), "d_head": int(cfg.d_head),
        "d_model": int(cfg.d_model), "d_vocab": int(cfg.d_vocab), "n_ctx": int(cfg.n_ctx),
        "architecture": str(getattr(cfg, "architecture", "") or ""),
    }
