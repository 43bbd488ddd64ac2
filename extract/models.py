"""Loading models through TransformerLens 4 (hub names or local HF directories)."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from headprobe.devices import resolve_device, torch_dtype
from headprobe.errors import UsageError
from headprobe.failures import decode_errors
from headprobe.hub import resolve_pretrained
from headprobe.quiet import quiet_third_party

DEFAULT_MODEL = "roneneldan/TinyStories-1M"
WEIGHT_FILES = ("*.safetensors", "*.bin")
CHECK_FILES = "; check that the model's files are complete (copy, download or train it again)"


def _model_source(name: str) -> str:
    """Resolve ``name`` to a loadable source and quiet transformers."""
    quiet_third_party()
    return resolve_pretrained(name, "model")


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype from a dtype or its name ('bfloat16')."""
    return torch_dtype(dtype) if isinstance(dtype, str) else dtype


def check_bridge_supports(source: str, name: str) -> None:
    """Refuse, naming its model type, a model TransformerLens' bridge has no adapter for."""
    from transformer_lens.model_bridge.sources._hf_format import (
        determine_architecture_from_hf_config,
    )
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    try:
        determine_architecture_from_hf_config(config)
    except ValueError:
        raise UsageError(f"model {name!r} of type {config.model_type!r} cannot be hooked: "
                         "TransformerLens' bridge does not support this model type") from None


def _boot(source: str, name: str, **kwargs: Any) -> Any:
    """TransformerBridge.boot_transformers with its chatter silenced and its errors in one line."""
    from transformer_lens.model_bridge import TransformerBridge

    check_bridge_supports(source, name)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return TransformerBridge.boot_transformers(source, **kwargs)
    except (ValueError, KeyError, *decode_errors()) as exc:
        raise UsageError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}{CHECK_FILES}"
                         ) from exc


def load_model(name: str = DEFAULT_MODEL, device: str | None = "cpu",
               dtype: torch.dtype | str = torch.float32, compat: bool = True) -> Any:
    """Boot ``name`` (hub name or local HF dir) as a TransformerBridge in eval mode.

    device: cpu, cuda, cuda:N or mps (None or 'auto': cuda when available, else cpu); dtype:
    the dtype the model computes in (a torch dtype or 'float32', 'bfloat16', 'float16').

    ``compat`` turns on TransformerLens' compatibility mode, which gives the
    HookedTransformer-style weight views (``W_Q``, ``W_O``, ...) and numerics. Under
    grouped-query attention ``W_K`` and ``W_V`` are [n_layers, n_kv_heads, ...].
    """
    source = _model_source(name)
    model = _boot(source, name, device=resolve_device(device), dtype=_dtype(dtype))
    if compat:
        with contextlib.redirect_stderr(io.StringIO()):
            model.enable_compatibility_mode()
    model.eval()
    return model


def architecture(model: Any) -> dict[str, Any]:
    """The architecture numbers a reader of stored activations needs."""
    cfg = model.cfg
    return {
        "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads), "d_head": int(cfg.d_head),
        "n_kv_heads": int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
        "d_model": int(cfg.d_model), "d_vocab": int(cfg.d_vocab), "n_ctx": int(cfg.n_ctx),
        "architecture": str(getattr(cfg, "architecture", "") or ""),
    }


def load_hf_model(name: str = DEFAULT_MODEL, device: str | None = "cpu",
                  dtype: torch.dtype | str = torch.float32, reinit_seed: int | None = None
                  ) -> Any:
    """Load ``name`` as a plain Hugging Face causal LM in eval mode, on ``device`` computing
    in ``dtype`` (see :func:`load_model`).

    With ``reinit_seed`` the weights are not loaded: the same architecture is built with
    the library's random initialisation, seeded (the "random weights" control).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    source, device, dtype = _model_source(name), resolve_device(device), _dtype(dtype)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            if reinit_seed is None:
                model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            else:
                config = AutoConfig.from_pretrained(source)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(reinit_seed))
                    model = AutoModelForCausalLM.from_config(config).to(dtype)
    except (ValueError, KeyError, *decode_errors()) as exc:
        raise UsageError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}{CHECK_FILES}"
                         ) from exc
    return model.to(device).eval()


def bridge_from_hf(hf_model: Any, name: str, device: str | None = None) -> Any:
    """Wrap an already loaded HF model (e.g. re-initialised) in a raw-weights TransformerBridge
    on ``device`` (None: the model's own), computing in the model's dtype."""
    param = next(hf_model.parameters())
    model = _boot(resolve_pretrained(name, "model"), name, device=device or str(param.device),
                  dtype=param.dtype, hf_model=hf_model)
    model.eval()
    return model


def model_fingerprint(name: str) -> dict[str, str]:
    """Where the weights came from: resolved path, hub revision (if cached) and sha256."""
    source = resolve_pretrained(name, "model")
    path = Path(source)
    out = {"model": name, "model_path": str(path.resolve()) if path.exists() else source}
    parts = path.resolve().parts if path.exists() else ()
    if "snapshots" in parts:
        out["model_revision"] = parts[parts.index("snapshots") + 1]
    files = sorted(p for pattern in WEIGHT_FILES for p in path.glob(pattern)) if path.is_dir() \
        else []
    if files:
        digest = hashlib.sha256()
        for file in files:
            with open(file, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 22), b""):
                    digest.update(block)
        out["model_weights_sha256"] = digest.hexdigest()
    return out
