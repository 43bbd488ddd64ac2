"""Where a model runs and in which dtype it computes.

Every stage that runs a model takes a device (``cpu``, ``cuda``, ``cuda:N``, ``mps``; by
default ``cuda`` when a CUDA device is available, else ``cpu``) and a compute dtype for the
model's weights and activations (``float32``, ``bfloat16``, ``float16``; default
``float32``). The compute dtype is apart from the dtype a store keeps its values in
(``extract``'s storage ``dtype``), hence its own name, ``model_dtype``.
"""

from __future__ import annotations

import os
from typing import Any

from headprobe.errors import UsageError, opt

DEVICES = ("cpu", "cuda", "mps")
MODEL_DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_MODEL_DTYPE = "float32"
AUTO = "auto"


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def default_device() -> str:
    """``cuda`` when a CUDA device is available, else ``cpu``."""
    return "cuda" if _cuda_count() else "cpu"


def resolve_device(device: str | None = None) -> str:
    """The device to run on: ``device`` checked, or :func:`default_device` for None/'auto'.

    UsageError for an unknown device or one this machine does not have.
    """
    if device is None or device == AUTO:
        return default_device()
    kind, _, index = str(device).partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise UsageError(f"unknown {opt('device')} {device!r}; choose cpu, cuda, cuda:N or mps")
    if kind == "cuda":
        count = _cuda_count()
        if count == 0:
            raise UsageError(f"{opt('device', device)} was asked for but no CUDA device is "
                             "available")
        if index and int(index) >= count:
            raise UsageError(f"{opt('device', device)} was asked for but this machine has "
                             f"{count} CUDA device(s)")
    if kind == "mps" and not _mps_available():
        raise UsageError(f"{opt('device', device)} was asked for but no MPS device is available")
    return str(device)


def check_model_dtype(name: str) -> str:
    """``name`` when it is one of :data:`MODEL_DTYPES`; else UsageError."""
    if name not in MODEL_DTYPES:
        raise UsageError(f"unknown {opt('model_dtype')} {name!r}; choose from "
                         f"{', '.join(MODEL_DTYPES)}")
    return name


def torch_dtype(name: str) -> Any:
    """The torch dtype of a compute dtype name ('float32' -> torch.float32)."""
    import torch

    return getattr(torch, check_model_dtype(name))


def synchronize(device: str) -> None:
    """Wait for the work queued on ``device`` (for timing GPU runs; nothing on the CPU)."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
    elif str(device).startswith("mps"):
        torch.mps.synchronize()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
