"""The general forward: any causal LM TransformerLens' bridge runs, read through its hooks.

:class:`HookForward` reads ``blocks.L.attn.hook_k`` / ``hook_q`` / ``hook_v`` / ``hook_z``
/ ``hook_pattern`` and, for rotary models, ``hook_rot_k`` / ``hook_rot_q``. Keys and
values come per key/value head as the bridge gives them; queries, z, activity and the
pattern per query head.

A bridge may declare a hook that never fires for a given model (GPT-NeoX's declares
``hook_rot_k`` but rotates inside its attention), so which hooks fire is learnt from one
forward pass on two tokens before anything is read. When the rotated hooks stay silent
but the bridge shows the rotary ``hook_cos`` / ``hook_sin`` with the rotate-half
convention, the rotated keys and queries are computed from the projections and those.
A model whose needed hooks do not fire is refused in one line naming its model type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from extract.forward.attention import allocate, pattern_stats
from extract.store.schema import ROTARY_SITES, SITES, StoreShape
from headprobe.errors import UsageError
from headprobe.hooks import HOOK_POINTS, hook_name

PATTERN_SITES = ("entropy", "argmax")
ROTARY_POINTS = ("q", "k", "cos", "sin")   # what computing the rotation ourselves reads
OTHER_ROTATIONS = ("rotary_adjacent_pairs", "rotary_interleaved_cos_sin")


def bridge_shape(bridge: Any) -> StoreShape:
    """The store shape of a TransformerBridge's attention."""
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    return StoreShape(int(cfg.n_layers), n_heads, int(cfg.d_head),
                      int(getattr(cfg, "n_key_value_heads", None) or n_heads))


def site_points(sites: Sequence[str]) -> list[str]:
    """The hook points (headprobe.hooks) the sites are read from."""
    points = [SITES[s].hook for s in sites if SITES[s].hook is not None]
    if "activity" in sites:
        points.append("z")
    if any(s in sites for s in PATTERN_SITES):
        points.append("pattern")
    return list(dict.fromkeys(points))


def firing_points(bridge: Any, points: Sequence[str]) -> set[str]:
    """Which of ``points`` fire in layer 0 of a forward pass on two tokens."""
    fired: set[str] = set()
    hooks = []
    for point in points:
        name = hook_name(point, 0)
        if name in bridge.hook_dict:
            hooks.append((name, lambda t, hook, point=point: fired.add(point)))
    with torch.no_grad():
        bridge.run_with_hooks(torch.zeros(1, 2, dtype=torch.long, device=next(
            bridge.parameters()).device), fwd_hooks=hooks, return_type=None)
    return fired


def rotation_source(bridge: Any, sites: Sequence[str], model_type: str) -> str | None:
    """How rotated keys and queries are read: 'hooks', 'cos_sin' (computed from the
    projections and the rotary cos/sin), or None when no rotary site is asked for.
    Refuses sites whose hooks do not fire, naming the model type."""
    points = site_points(sites)
    fired = firing_points(bridge, [*points, *ROTARY_POINTS])
    silent = [p for p in points if p not in fired]
    rotary = [p for p in silent if p in ("rot_q", "rot_k")]
    if [p for p in silent if p not in rotary]:
        raise UsageError(f"model type {model_type!r} cannot be hooked: TransformerLens' bridge "
                         f"gives it no {', '.join(HOOK_POINTS[p] for p in silent)}")
    if not any(s in ROTARY_SITES for s in sites):
        return None
    if not rotary:
        return "hooks"
    rotate_half = not any(getattr(bridge.cfg, flag, False) for flag in OTHER_ROTATIONS)
    if set(ROTARY_POINTS) <= fired and rotate_half:
        return "cos_sin"
    raise UsageError(f"model type {model_type!r} gives no keys or queries after a rotary "
                     f"embedding; leave out sites {', '.join(ROTARY_SITES)}")


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotate-half rotary embedding of x [b, s, heads, d_head] over its first
    ``cos.shape[-1]`` dims (partial rotary, GPT-NeoX), cos and sin [1 or b, s, rot_dim]."""
    width, half = cos.shape[-1], cos.shape[-1] // 2
    part = x[..., :width]
    turned = torch.cat((-part[..., half:], part[..., :half]), dim=-1)
    rotated = part * cos[:, :, None] + turned * sin[:, :, None]
    return torch.cat((rotated, x[..., width:]), dim=-1)


class HookForward:
    """General forward through a TransformerBridge with hooks (any supported causal LM).

    bridge: a TransformerBridge in raw-weights mode (``load_model(..., compat=False)``);
    model_type: the Hugging Face model type, for messages. Called with input ids
    [batch, seq] (right-padded), it returns site -> [batch, seq, *StoreShape.row_shape(site)].
    """

    name = "general"

    def __init__(self, bridge: Any, sites: Sequence[str], model_type: str = "?"):
        self.bridge = bridge
        self.sites = list(sites)
        self.rotation = rotation_source(bridge, self.sites, model_type)
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
                from_hooks = site not in ROTARY_SITES or self.rotation == "hooks"
                if point is not None and site != "z" and from_hooks:
                    hooks.append((hook_name(point, layer), self._store(out, site, layer)))
            if self.rotation == "cos_sin":
                hooks += self._rotation_hooks(out, layer)
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

    def _rotation_hooks(self, out: dict[str, torch.Tensor], layer: int) -> list[tuple[str, Any]]:
        """Keep the layer's projections and cos; rotate them when sin arrives."""
        seen: dict[str, torch.Tensor] = {}

        def keep(point: str) -> Any:
            def hook(tensor: torch.Tensor, hook: Any) -> None:
                seen[point] = tensor
            return hook

        def rotate_all(sin: torch.Tensor, hook: Any) -> None:
            for site, point in (("query_rot", "q"), ("key_rot", "k")):
                if site in out:
                    target = out[site][:, :, layer]
                    target[...] = rotate(seen[point].reshape(target.shape), seen["cos"], sin)

        return [(hook_name("q", layer), keep("q")), (hook_name("k", layer), keep("k")),
                (hook_name("cos", layer), keep("cos")), (hook_name("sin", layer), rotate_all)]

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
    def __call__(self, input_ids: torch.Tensor, dtype: torch.dtype = torch.float32
                 ) -> dict[str, torch.Tensor]:
        """site -> [batch, seq, ...] of input ids [batch, seq], float sites in ``dtype``."""
        batch, seq = input_ids.shape
        out = allocate(self.sites, batch, seq, self.shape, self.device, dtype)
        # the bridge asks every attention layer for its weights unless told otherwise (where
        # the model takes the flag); only the pattern sites read them
        ask = (any(s in out for s in PATTERN_SITES)
               or not getattr(self.bridge.adapter, "supports_hf_output_attentions", False))
        self.bridge.run_with_hooks(input_ids, fwd_hooks=self._hooks(out), return_type=None,
                                   **({} if ask else {"output_attentions": False}))
        return out
