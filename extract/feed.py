"""Moving batches between the host and the device the model runs on.

On a CUDA device the token ids of a batch go through a pinned (page-locked) host buffer
and are copied without blocking, and the activations come back the same way into pinned
buffers, with one synchronisation per batch instead of one per site. On any other device
the tensors are used as they are. The buffers grow to the largest batch and are reused.

``--batch-tokens auto`` sizes the batches from the device's free memory on CUDA
(:func:`auto_batch_tokens`); elsewhere the default stands until the model is loaded, when
a short timed trial picks the fastest of a few sizes (:mod:`extract.batch_trial`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

AUTO = "auto"
AUTO_MEMORY_SHARE = 0.5        # of the free device memory, for one batch's activations
AUTO_LIMITS = (1024, 65536)    # padded tokens per batch, on CUDA
AUTO_STEP = 256


class DeviceFeed:
    """Host <-> device transfers of one extraction (see the module docstring).

    device: a torch device name ('cpu', 'cuda', 'cuda:1', 'mps').
    """

    def __init__(self, device: Any):
        self.device = torch.device(device)
        self.pinned = self.device.type == "cuda"
        self._buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A pinned host tensor shaped and typed like ``like`` (a view of a reused buffer)."""
        need = like.numel()
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != like.dtype or buf.numel() < need:
            buf = torch.empty(need, dtype=like.dtype, pin_memory=True)
            self._buffers[name] = buf
        return buf[:need].view(like.shape)

    def to_device(self, ids: np.ndarray) -> torch.Tensor:
        """Token ids [batch, seq] (int64) on the device."""
        host = torch.from_numpy(ids)
        if not self.pinned:
            return host.to(self.device)
        staged = self._buffer("input_ids", host)
        staged.copy_(host)
        return staged.to(self.device, non_blocking=True)

    def to_host(self, tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Every tensor as a host numpy array (valid until the next call on CUDA)."""
        if not self.pinned:
            return {k: t.cpu().numpy() for k, t in tensors.items()}
        host = {}
        for name, tensor in tensors.items():
            host[name] = self._buffer(name, tensor)
            host[name].copy_(tensor, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return {k: t.numpy() for k, t in host.items()}


def token_bytes(shape: Any, sites: Any, n_ctx: int, d_model: int) -> int:
    """Bytes of device memory one padded token of a batch needs, roughly: its stored sites
    in float32, the attention scores of a row of a full context, and the residual stream's
    intermediates (a generous multiple of ``d_model``)."""
    from extract.store.schema import row_bytes

    scores = shape.n_heads * n_ctx * 4
    return int(row_bytes(shape, sites) * 2 + scores + 16 * d_model * 4)


def auto_batch_tokens(device: str, model: Any, sites: Any, default: int) -> int:
    """Padded tokens per batch for ``--batch-tokens auto``: ``default`` off CUDA (until the
    trial of :mod:`extract.batch_trial`); on CUDA,
    AUTO_MEMORY_SHARE of the free memory over :func:`token_bytes`, within AUTO_LIMITS,
    rounded down to AUTO_STEP."""
    if not str(device).startswith("cuda"):
        return default
    from extract.plan import config_of, config_shape

    config = config_of(model)
    shape = config_shape(config)
    if shape is None:
        return default
    n_ctx = int(getattr(config, "max_position_embeddings", 2048) or 2048)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per_token = token_bytes(shape, sites, n_ctx, int(config.hidden_size))
    tokens = int(free * AUTO_MEMORY_SHARE) // per_token
    tokens = min(max(tokens, AUTO_LIMITS[0]), AUTO_LIMITS[1])
    return tokens // AUTO_STEP * AUTO_STEP
