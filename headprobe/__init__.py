"""headprobe: find out what the attention heads of language models encode.

The public Python API, for notebooks and scripts::

    import headprobe as hp

    ds = hp.load_dataset("runs/ts/dataset")          # tagged tokens (datasets_build)
    store = hp.open_store("runs/ts/activations.h5")  # per-head keys, queries, activity (extract)
    probes = hp.read_probes("runs/ts/probes")        # a probe grid (probing fit)
    probe = hp.fit_probe(store, "key", layer=2, head=0)  # one probe, with its scores
    quote = hp.read_study("runs/ts/studies/quote")   # a case study (probing quote)
    model = hp.load_model("../shared/models/tinystories-8L")   # a TransformerBridge

This package holds what every stage shares (errors, atomic writes, output locks, one-line
file-system failures, free-space checks, manifests, run directories, hub resolution,
tokenizers, token display, head and hook names, stories);
it imports no stage except to hand out the readers above, and only when one is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from headprobe.errors import UsageError

# public name -> (module, attribute)
_READERS = {
    "load_dataset": ("datasets_build.dataset", "load_tagged_dataset"),
    "open_store": ("extract.store", "open_store"),
    "load_model": ("extract.models", "load_model"),
    "read_probes": ("probing.results", "read_results"),
    "fit_probe": ("probing.grid", "fit_probe"),
    "read_study": ("probing.study_io", "read_study"),
}

__all__ = ["UsageError", *_READERS]


def __getattr__(name: str) -> Any:
    if name in _READERS:
        module, attr = _READERS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'headprobe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
