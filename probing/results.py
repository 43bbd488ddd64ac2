"""The probe-grid results on disk (``RESULTS/probes.h5`` + ``RESULTS/manifest.json``) and
their reader. The layout is described in docs/probe-results.md.

Per-tag arrays are [site, layer, head, tag]; per-cell arrays [site, layer, head];
probe weights [site, layer, head, tag, d_head] and biases [site, layer, head, tag] act on
the raw stored vectors: ``logits = x @ coef.T + intercept``. Name arrays ``sites``,
``layers`` (model layer of each layer index) and ``tags`` label the axes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from headprobe.atomic import atomic_dir
from headprobe.errors import UsageError
from headprobe.manifest import base_manifest, write_json

FORMAT = "headprobe-probes"
FORMAT_VERSION = 1
RESULTS_FILE = "probes.h5"
TAG_METRICS = ("precision", "recall", "f1", "support", "f1_shuffled", "f1_random",
               "f1_majority", "f1_lo", "f1_hi", "selectivity")
CELL_METRICS = ("macro_f1", "accuracy", "macro_f1_shuffled", "accuracy_shuffled",
                "macro_f1_random", "accuracy_random", "macro_f1_majority",
                "accuracy_majority", "n_iter")
DESCRIPTIONS = {
    "precision": "per-tag precision on the test split",
    "recall": "per-tag recall on the test split",
    "f1": "per-tag F1 on the test split",
    "support": "test tokens of the tag",
    "f1_shuffled": "per-tag F1 of the same probe fitted on shuffled training labels",
    "f1_random": "per-tag F1 of the same probe on the randomly initialised model's vectors",
    "f1_majority": "per-tag F1 of always predicting the most frequent training tag",
    "f1_lo": "lower end of the bootstrap interval of F1 (test stories resampled)",
    "f1_hi": "upper end of the bootstrap interval of F1 (test stories resampled)",
    "selectivity": "f1 minus the F1 of the control named in attribute 'selectivity_control'",
    "macro_f1": "mean F1 over the tags that occur in the test split",
    "accuracy": "fraction of test tokens whose tag is predicted",
    "macro_f1_shuffled": "macro-F1 of the shuffled-label control",
    "accuracy_shuffled": "accuracy of the shuffled-label control",
    "macro_f1_random": "macro-F1 of the random-weights control",
    "accuracy_random": "accuracy of the random-weights control",
    "macro_f1_majority": "macro-F1 of the majority-class baseline",
    "accuracy_majority": "accuracy of the majority-class baseline",
    "n_iter": "solver iterations of the probe",
    "coef": "probe weights on the raw stored vectors [site, layer, head, tag, d_head]",
    "intercept": "probe biases [site, layer, head, tag]",
}


@dataclass
class ProbeResults:
    """A probe grid read back from disk.

    sites: [S] names; layers: [L] model layers; tags: [K] class names; n_heads: H;
    arrays: name -> array ([S, L, H, K] per tag, [S, L, H] per cell; controls that were
    not run are absent); attrs: run parameters (tagset, solver, controls, folded tags, ...).
    """

    path: Path
    sites: list[str]
    layers: list[int]
    tags: list[str]
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_heads(self) -> int:
        """H, heads per layer."""
        return int(self.arrays["f1"].shape[2])

    def site_index(self, site: str) -> int:
        """Index of ``site`` along the site axis of the arrays."""
        if site not in self.sites:
            raise UsageError(f"site {site!r} is not in these results (have "
                             f"{', '.join(self.sites)})")
        return self.sites.index(site)

    def tag_index(self, tag: str) -> int:
        """Index of class ``tag`` along the tag axis of the arrays."""
        if tag not in self.tags:
            raise UsageError(f"tag {tag!r} is not in these results (have "
                             f"{' '.join(self.tags)})")
        return self.tags.index(tag)

    def grid(self, metric: str, site: str, tag: str | None = None) -> np.ndarray:
        """One metric of one site as a [L, H] grid (per-tag metrics need ``tag``)."""
        if metric not in self.arrays:
            raise UsageError(f"metric {metric!r} is not in these results (have "
                             f"{', '.join(sorted(self.arrays))})")
        data = self.arrays[metric][self.site_index(site)]
        if data.ndim == 3:
            if tag is None:
                raise UsageError(f"metric {metric!r} is per tag: give a tag")
            data = data[:, :, self.tag_index(tag)]
        return data


def write_results(out_dir: str | Path, sites: list[str], layers: list[int], tags: list[str],
                  arrays: dict[str, np.ndarray], attrs: dict[str, Any],
                  manifest: dict[str, Any], overwrite: bool = False,
                  descriptions: dict[str, str] | None = None) -> Path:
    """Write RESULTS/probes.h5 and RESULTS/manifest.json atomically; return the directory.

    descriptions: what arrays mean where it differs from DESCRIPTIONS (one-vs-rest probes).
    """
    described = {**DESCRIPTIONS, **(descriptions or {})}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with h5py.File(tmp / RESULTS_FILE, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["params"] = json.dumps(attrs, default=str)
            f.create_dataset("sites", data=np.array(sites, dtype=object),
                             dtype=h5py.string_dtype())
            f.create_dataset("tags", data=np.array(tags, dtype=object),
                             dtype=h5py.string_dtype())
            f.create_dataset("layers", data=np.asarray(layers, dtype=np.int32))
            for name, value in arrays.items():
                ds = f.create_dataset(name, data=np.asarray(value), compression="gzip")
                ds.attrs["dims"] = ("site, layer, head, tag, d_head" if name == "coef" else
                                    "site, layer, head, tag" if np.ndim(value) == 4 else
                                    "site, layer, head")
                ds.attrs["description"] = described.get(name, name)
        write_json(tmp / "manifest.json", {**base_manifest("probing fit"), "format": FORMAT,
                                           "format_version": FORMAT_VERSION, **manifest})
    return Path(out_dir)


def read_results(path: str | Path) -> ProbeResults:
    """Read a results directory (or its probes.h5) written by ``probing fit``."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"{path} holds no probe results ({RESULTS_FILE} missing); run "
                         "python -m probing fit")
    try:
        f = h5py.File(file, "r")
    except OSError as exc:
        raise UsageError(f"{file} is not an HDF5 file") from exc
    with f:
        if f.attrs.get("format") != FORMAT or f.attrs.get("format_version") != FORMAT_VERSION:
            raise UsageError(f"{file} is not a probe results file of format version "
                             f"{FORMAT_VERSION}")
        sites = list(f["sites"].asstr()[()])
        tags = list(f["tags"].asstr()[()])
        layers = [int(x) for x in f["layers"][()]]
        arrays = {name: ds[()] for name, ds in f.items()
                  if name not in ("sites", "tags", "layers")}
        attrs = json.loads(f.attrs["params"])
    return ProbeResults(file.parent, sites, layers, tags, arrays, attrs)
