"""TransformerLens hook names, made in one place.

``hook_name("k", 2)`` is ``blocks.2.attn.hook_k``; ``hook_name("resid_pre", 0)`` is
``blocks.0.hook_resid_pre``. :data:`HOOK_POINTS` lists the points headprobe reads.
"""

from __future__ import annotations

# point -> hook name inside block L
HOOK_POINTS = {
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "rot_q": "attn.hook_rot_q",    # after the rotary embedding (models that have one)
    "rot_k": "attn.hook_rot_k",
    "q_normed": "attn.hook_q_normed",   # after the query norm (models that have one)
    "k_normed": "attn.hook_k_normed",
    "cos": "attn.hook_cos",             # the rotary embedding's cos and sin
    "sin": "attn.hook_sin",
    "z": "attn.hook_z",
    "pattern": "attn.hook_pattern",
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "mlp_post": "mlp.hook_post",
    "ln2_out": "ln2.hook_out",
}


def hook_name(point: str, layer: int) -> str:
    """Full hook name of ``point`` (a key of HOOK_POINTS) in block ``layer``."""
    return f"blocks.{int(layer)}.{HOOK_POINTS[point]}"


def hook_pattern(point: str) -> str:
    """The name with ``L`` for the layer, for documentation: ``blocks.L.attn.hook_k``."""
    return f"blocks.L.{HOOK_POINTS[point]}"


def layer_hooks(point: str, n_layers: int) -> list[str]:
    """``hook_name(point, layer)`` for every layer."""
    return [hook_name(point, layer) for layer in range(n_layers)]
