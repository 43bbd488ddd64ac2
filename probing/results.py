"""The probe-grid results on disk (``RESULTS/probes.h5`` + ``RESULTS/manifest.json``) and
their reader. The layout is described in docs/probe-results.md.

Per-tag arrays are [site, layer, head, tag]; per-cell arrays [site, layer, head];
probe weights [site, layer, head, tag, d_head] and biases [site, layer, head, tag] act on
the raw stored vectors: ``logits = x @ coef.T + intercept``. Name arrays ``sites``,
``layers`` (model layer of each layer index) and ``tags`` label the axes.

Sites may have different numbers of heads: under grouped-query attention keys are stored
(and probed) per key/value head, queries per query head. The head axis is as long as the
site with the most heads; ``site_heads[s]`` says how many cells of site s are real and
``head_axes[s]`` whether they are query heads ('head') or key/value heads ('kv_head').
Cells past ``site_heads[s]`` are padding: NaN in float arrays, -1 in integer arrays.
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
from headprobe.failures import reading
from headprobe.hdf5 import hdf5_image
from headprobe.heads import head_label, kv_head_label
from headprobe.locks import output_lock
from headprobe.manifest import base_manifest, write_json

FORMAT = "headprobe-probes"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)   # version 1: every site has every head, no site_heads/head_axes
RESULTS_FILE = "probes.h5"
AXIS_ARRAYS = ("sites", "tags", "layers", "site_heads", "head_axes")
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
    "site_heads": "heads probed per site: cells past site_heads[s] on the head axis are "
                  "padding (NaN; -1 in integer arrays)",
    "head_axes": "what the head axis counts for each site: 'head' (query heads) or 'kv_head' "
                 "(key/value heads of a grouped-query model, shared by several query heads)",
}


@dataclass
class ProbeResults:
    """A probe grid read back from disk.

    sites: [S] names; layers: [L] model layers; tags: [K] class names; n_heads: H;
    arrays: name -> array ([S, L, H, K] per tag, [S, L, H] per cell; controls that were
    not run are absent); attrs: run parameters (tagset, solver, controls, folded tags, ...);
    site_heads: [S] real cells per site; head_axes: [S] 'head' or 'kv_head'.
    """

    path: Path
    sites: list[str]
    layers: list[int]
    tags: list[str]
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    site_heads: list[int] = field(default_factory=list)
    head_axes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.site_heads = list(self.site_heads) or [self.n_heads] * len(self.sites)
        self.head_axes = list(self.head_axes) or ["head"] * len(self.sites)

    @property
    def n_heads(self) -> int:
        """H, the length of the head axis (the most heads of any site)."""
        return int(self.arrays["f1"].shape[2])

    def heads(self, site: str) -> int:
        """How many heads ``site`` has (cells past them are padding)."""
        return self.site_heads[self.site_index(site)]

    def cell_label(self, site: str, layer: int, head: int) -> str:
        """``L2H0`` for a query head, ``L2KV0`` for a key/value head of a grouped model."""
        if self.head_axes[self.site_index(site)] == "kv_head":
            return kv_head_label(layer, head)
        return head_label(layer, head)

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
        """One metric of one site as a [L, heads(site)] grid (per-tag metrics need ``tag``)."""
        if metric not in self.arrays:
            raise UsageError(f"metric {metric!r} is not in these results (have "
                             f"{', '.join(sorted(self.arrays))})")
        data = self.arrays[metric][self.site_index(site), :, :self.heads(site)]
        if data.ndim == 3:
            if tag is None:
                raise UsageError(f"metric {metric!r} is per tag: give a tag")
            data = data[:, :, self.tag_index(tag)]
        return data


def _write_axes(f: h5py.File, sites: list[str], layers: list[int], tags: list[str],
                site_heads: list[int], head_axes: list[str]) -> None:
    """The arrays that label the axes, each with its description."""
    text = h5py.string_dtype()
    for name, data, dtype in (("sites", np.array(sites, dtype=object), text),
                              ("tags", np.array(tags, dtype=object), text),
                              ("layers", np.asarray(layers, dtype=np.int32), None),
                              ("site_heads", np.asarray(site_heads, dtype=np.int32), None),
                              ("head_axes", np.array(head_axes, dtype=object), text)):
        ds = f.create_dataset(name, data=data, dtype=dtype)
        if name in DESCRIPTIONS:
            ds.attrs["dims"] = "site"
            ds.attrs["description"] = DESCRIPTIONS[name]


def write_results(out_dir: str | Path, sites: list[str], layers: list[int], tags: list[str],
                  arrays: dict[str, np.ndarray], attrs: dict[str, Any],
                  manifest: dict[str, Any], overwrite: bool = False,
                  site_heads: list[int] | None = None,
                  head_axes: list[str] | None = None) -> Path:
    """Write RESULTS/probes.h5 and RESULTS/manifest.json atomically; return the directory.

    site_heads, head_axes: [S] real heads per site and what they count (default: every
    site has the whole head axis of query heads).
    """
    n_heads = int(np.shape(arrays["f1"])[2]) if "f1" in arrays else 0
    site_heads = list(site_heads or [n_heads] * len(sites))
    head_axes = list(head_axes or ["head"] * len(sites))
    with output_lock(out_dir), atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with hdf5_image(tmp / RESULTS_FILE, Path(out_dir) / RESULTS_FILE) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["params"] = json.dumps(attrs, default=str)
            _write_axes(f, sites, layers, tags, site_heads, head_axes)
            for name, value in arrays.items():
                ds = f.create_dataset(name, data=np.asarray(value), compression="gzip")
                ds.attrs["dims"] = ("site, layer, head, tag, d_head" if name == "coef" else
                                    "site, layer, head, tag" if np.ndim(value) == 4 else
                                    "site, layer, head")
                ds.attrs["description"] = DESCRIPTIONS.get(name, name)
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
    damaged = "the file is damaged; fit the probes again"
    with f, reading(file, "probe results", damaged, also=(KeyError, RuntimeError, ValueError)):
        if f.attrs.get("format") != FORMAT or f.attrs.get("format_version") not in \
                READABLE_VERSIONS:
            raise UsageError(f"{file} is not a probe results file of format version "
                             f"{' or '.join(map(str, READABLE_VERSIONS))}")
        sites = list(f["sites"].asstr()[()])
        tags = list(f["tags"].asstr()[()])
        layers = [int(x) for x in f["layers"][()]]
        site_heads = [int(x) for x in f["site_heads"][()]] if "site_heads" in f else []
        head_axes = list(f["head_axes"].asstr()[()]) if "head_axes" in f else []
        arrays = {name: ds[()] for name, ds in f.items() if name not in AXIS_ARRAYS}
        attrs = json.loads(f.attrs["params"])
    return ProbeResults(file.parent, sites, layers, tags, arrays, attrs, site_heads, head_axes)
