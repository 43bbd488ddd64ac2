"""The fused forward checked against the model it re-implements, before it is used.

:func:`projection_reference` runs the Hugging Face model itself on a few tokens with
forward hooks on its key and query projections and on the input of its output projection
(keys and queries as the projections give them; activity ``||z_h W_O[h]||_2``).
:func:`check_fast` compares the fused forward's keys, queries and activity with it; the
extractor uses the fused forward only when they agree.
"""

from __future__ import annotations

from typing import Any

import torch

from extract.forward.fused import FastForward

CHECK_TOKENS = 48
CHECK_SITES = ("key", "query", "activity")
# Largest difference, relative to the largest value of the site, per compute dtype: the two
# paths round differently, by about a unit in the last place of the dtype per layer.
TOLERANCES = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 1e-1}
TOLERANCE = TOLERANCES[torch.float32]


def tolerance(hf_model: Any) -> float:
    """How far the fused forward may be from the model in the dtype the model computes in."""
    return TOLERANCES.get(next(hf_model.parameters()).dtype, TOLERANCE)


def _out_weight(module: Any) -> torch.Tensor:
    """The output projection as [in, out] (nn.Linear stores [out, in], GPT-2's Conv1D not)."""
    return module.weight if type(module).__name__ == "Conv1D" else module.weight.T


@torch.inference_mode()
def projection_reference(forward: FastForward, hf_model: Any, ids: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
    """Keys, queries and activity of ``ids`` [1, seq] from hooks on the HF model's modules:
    site -> [1, seq, n_layers, heads(, d_head)]."""
    got: dict[str, list[torch.Tensor]] = {"key": [], "query": [], "z": []}
    width = forward.n_heads * forward.d_head

    def joint(module: Any, inputs: Any, output: torch.Tensor) -> None:
        got["query"].append(output[..., :width])        # queries, keys, then values
        got["key"].append(output[..., width:2 * width])

    def keep(site: str, index: int) -> Any:
        def hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
            got[site].append(inputs[0] if index == 0 else output)
        return hook

    handles = []
    for block in forward.model.blocks:
        mods = block.modules
        if "qkv" in mods:
            handles.append(mods["qkv"].register_forward_hook(joint))
        else:
            handles += [mods[site].register_forward_hook(keep(site, 1))
                        for site in ("query", "key")]
        handles.append(mods["out"].register_forward_hook(keep("z", 0)))
    try:
        hf_model(ids)
    finally:
        for handle in handles:
            handle.remove()
    batch, seq = ids.shape
    out = {site: torch.stack([t.reshape(batch, seq, -1, forward.d_head) for t in got[site]], 2)
           for site in got}
    activity = []
    for layer, block in enumerate(forward.model.blocks):
        w = _out_weight(block.modules["out"]).reshape(forward.n_heads, forward.d_head, -1)
        activity.append(torch.einsum("bthd,hdm->bthm", out["z"][:, :, layer], w).norm(dim=-1))
    out["activity"] = torch.stack(activity, 2)
    return out


def check_fast(forward: FastForward, hf_model: Any, seed: int = 0) -> float:
    """Largest relative difference between the fused forward and the model's own projections
    on ``CHECK_TOKENS`` random tokens (0 when they agree exactly)."""
    n = min(CHECK_TOKENS, forward.n_ctx)
    ids = torch.randint(0, int(hf_model.config.vocab_size), (1, n),
                        generator=torch.Generator().manual_seed(seed)).to(forward.device)
    got = forward(ids, CHECK_SITES)
    want = projection_reference(forward, hf_model, ids)
    worst = 0.0
    for site in CHECK_SITES:
        scale = float(want[site].abs().max()) or 1.0
        worst = max(worst, float((got[site].float() - want[site].float()).abs().max()) / scale)
    return worst
