"""The general forward: any causal LM TransformerLens' bridge runs, read through its hooks.

:class:`HookForward` reads ``blocks.L.attn.hook_k`` / ``hook_q`` / ``hook_v`` / ``hook_z``
/ ``hook_pattern`` and, for rotary models, ``hook_rot_k`` / ``hook_rot_q``. Keys and
values come per key/value head as the bridge gives them; queries, z, activity and the
pattern per query head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from extract.forward.attention import allocate, pattern_stats
from extract.store.schema import SITES, StoreShape
from headprobe.errors import UsageError
from headprobe.hooks import HOOK_POINTS, hook_name

PATTERN_SITES = ("entropy", "argmax")


def bridge_shape(bridge: Any) -> StoreShape:
    """The store shape of a TransformerBridge's attention."""
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    return StoreShape(int(cfg.n_layers), n_heads, int(cfg.d_head),
                      int(getattr(cfg, "n_key_value_heads", None) or n_heads))


def _points(sites: Sequence[str]) -> list[str]:
    """The hook points (headprobe.hooks) the sites are read from."""
    points = [SITES[s].hook for s in sites if SITES[s].hook is not None]
    if "activity" in sites:
        points.append("z")
    if any(s in sites for s in PATTERN_SITES):
        points.append("pattern")
    return list(dict.fromkeys(points))


def check_hooks(bridge: Any, sites: Sequence[str], model_type: str) -> None:
    """Refuse sites whose hooks this model's bridge lacks, naming the model type."""
    missing = [p for p in _points(sites) if hook_name(p, 0) not in bridge.hook_dict]
    if not missing:
        return
    if set(missing) <= {"rot_q", "rot_k"}:
        raise UsageError(f"model type {model_type!r} gives no keys or queries after a rotary "
                         f"embedding (no {HOOK_POINTS[missing[0]]} hook); leave out sites "
                         "key_rot and query_rot")
    raise UsageError(f"model type {model_type!r} cannot be hooked: TransformerLens' bridge "
                     f"gives it no {', '.join(HOOK_POINTS[p] for p in missing)}")


class HookForward:
    """General forward through a TransformerBridge with hooks (any supported causal LM).

    bridge: a TransformerBridge in raw-weights mode (``load_model(..., compat=False)``);
    model_type: the Hugging Face model type, for messages. Called with input ids
    [batch, seq] (right-padded), it returns site -> [batch, seq, *StoreShape.row_shape(site)].
    """

    name = "general"

    def __init__(self, bridge: Any, sites: Sequence[str], model_type: str = "?"):
        check_hooks(bridge, sites, model_type)
        self.bridge = bridge
        self.sites = list(sites)
        self.shape = bridge_shape(bridge)
        self.n_layers, self.n_heads, self.d_head = (self.shape.n_layers, self.shape.n_heads,
                                                    self.shape.d_head)
        self.n_kv_heads = self.shape.n_kv_heads
        self.n_ctx = int(bridge.cfg.n_ctx)
        self.traits = {"rotary": getattr(bridge.cfg, "positional_embedding_type", "") == "rotary",
                       "qk_norm": hook_name("q_normed", 0) in bridge.hook_dict}
        self.w_o = ([bridge.blocks[i].attn.W_O.detach() for i in range(self.n_layers)]
                    if "activity" in self.sites else None)      # each [head, d_head, d_model]
        self.device = next(bridge.parameters()).device

    def _hooks(self, out: dict[str, torch.Tensor]) -> list[tuple[str, Any]]:
        hooks = []
        for layer in range(self.n_layers):
            for site in out:
                point = SITES[site].hook
                if point is not None and site != "z":
                    hooks.append((hook_name(point, layer), self._store(out, site, layer)))
            if "z" in out or "activity" in out:
                hooks.append((hook_name("z", layer), self._z_hook(out, layer)))
            if any(s in out for s in PATTERN_SITES):
                hooks.append((hook_name("pattern", layer), self._pattern_hook(out, layer)))
        return hooks

    @staticmethod
    def _store(out: dict[str, torch.Tensor], site: str, layer: int) -> Any:
        def hook(tensor: torch.Tensor, hook: Any) -> None:
            target = out[site][:, :, layer]
            target[...] = tensor.reshape(target.shape)   # [b, s, heads * d] or [b, s, heads, d]
        return hook

    def _z_hook(self, out: dict[str, torch.Tensor], layer: int) -> Any:
        def hook(z: torch.Tensor, hook: Any) -> None:
            z = z.reshape(*z.shape[:2], self.n_heads, self.d_head)
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
        out = allocate(self.sites, batch, seq, self.shape, self.device)
        self.bridge.run_with_hooks(input_ids, fwd_hooks=self._hooks(out), return_type=None)
        return out
