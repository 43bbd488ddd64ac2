"""The floor of ``python -m extract bench``: what the model's own forward pass costs.

(d) runs the Hugging Face model's own forward over exactly the batches the extractor cuts
(the same plan: groups, length-sorted right-padded batches of ``--batch-tokens``), with no
hooks and no output kept, through its blocks only: the base model, without the
unembedding (every layer is stored, so the last stored layer is the last block). The
extractor's wall time over it says what hooks, copies, casts, compression and writing
add; the store's ``extract_phases`` attribute (:mod:`extract.phases`) says where.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from extract.phases import PHASES
from extract.store.json_attrs import decode_attrs
from headprobe.devices import synchronize


def extract_batches(dataset: Path, hf: Any, batch_tokens: int, sites: Sequence[str],
                    out: Path) -> list[np.ndarray]:
    """The right-padded token ids [batch, seq] of every batch extracting ``dataset`` with the
    loaded model ``hf`` at ``batch_tokens`` would run, in order (``out``: a store path the
    plan is made for; nothing is written)."""
    from extract.extractor import batch_ids
    from extract.options import ExtractOptions
    from extract.plan import plan_batches, plan_extraction

    options = ExtractOptions(dataset, hf, out, sites=sites, batch_tokens=batch_tokens,
                             overwrite=True)
    plan = plan_extraction(options)
    return [batch_ids(batch) for group in plan.groups()
            for batch in plan_batches(group, int(options.batch_tokens))]


def floor_forward(hf: Any, batches: Sequence[np.ndarray]) -> None:
    """(d): the model's blocks over ``batches``, no hooks, nothing kept."""
    model = hf.base_model      # embeddings, blocks and final norm: no unembedding
    device = next(hf.parameters()).device
    with torch.inference_mode():
        for ids in batches:
            model(input_ids=torch.from_numpy(ids).to(device), use_cache=False)
    synchronize(str(device))


def store_phases(path: Path) -> tuple[float, dict[str, float]]:
    """(seconds of the extraction loop, seconds per phase) a store recorded."""
    with h5py.File(path, "r") as file:
        attrs = decode_attrs(file.attrs)
    phases = attrs.get("extract_phases") or {}
    return float(attrs.get("extract_seconds", 0.0)), {k: float(phases.get(k, 0.0))
                                                      for k in PHASES}


def phase_lines(whole: float, loop: float, phases: dict[str, float]) -> list[str]:
    """The breakdown of an extract call of ``whole`` seconds, wall clock, as printed lines."""
    main = ("forward", "projection", "copies", "wait")
    rest = loop - sum(phases[k] for k in main)
    rows = [("setup (loading the model and dataset, planning, checks)", whole - loop)]
    rows += [(f"{k}: {PHASES[k]}", phases[k]) for k in main]
    rows += [("other work of the loop (planning batches, progress)", rest)]
    rows += [(f"{k}: {PHASES[k]}", phases[k]) for k in ("write", "checksums")]
    return [f"    {seconds:7.2f} s {100 * seconds / whole:5.1f}%  {label}"
            for label, seconds in rows]
