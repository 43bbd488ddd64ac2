"""The probe-grid results on disk (``RESULTS/probes.h5`` + ``RESULTS/manifest.json``) and
their reader. The layout is described in docs/probe-results.md.

Per-tag arrays are [site, layer, head, tag]; per-cell arrays [site, layer, head];
probe weights [site, layer, head, tag, d_head] and biases [site, layer, head, tag] act on
the raw stored vectors: ``logits = x @ coef.T + intercept``; MDL block code lengths are
[site, layer, head, portion] and the portions [portion]. The file is described in the
vocabulary of :mod:`headprobe.layout`: each axis is a netCDF-4 coordinate, ``site`` (site
names), ``layer`` (model layer of each layer index), ``head``, ``tag`` (class names),
``d_head`` and ``portion`` (indices), and each array names its axes in ``dims``.
:data:`ARRAYS` declares every array; :func:`write_results` checks the arrays against it.
Format versions 1 and 2 named the axes with the arrays ``sites``, ``layers`` and ``tags``
and had no coordinates; they are still read.

Sites may have different numbers of heads: under grouped-query attention keys are stored
(and probed) per key/value head, queries per query head. The head axis is as long as the
site with the most heads; ``site_heads[s]`` says how many cells of site s are real and
``head_axes[s]`` whether they are query heads ('head') or key/value heads ('kv_head').
Cells past ``site_heads[s]`` are padding: NaN in float arrays, -1 in integer arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from headprobe.atomic import atomic_dir
from headprobe.checksums import read_array, verification_on
from headprobe.errors import UsageError
from headprobe.failures import reading
from headprobe.hdf5 import hdf5_image
from headprobe.heads import head_label, kv_head_label
from headprobe.layout import Array, Dimensions, format_of, set_format
from headprobe.locks import output_lock
from headprobe.manifest import base_manifest, check_manifest, write_json
from headprobe.rundir import missing_input, run_of
from probing.controls import REGISTRY, SELECTIVITY_CONTROLS, array_suffix
from probing.controls import selectivity as control_selectivity

FORMAT = "headprobe-probes"
FORMAT_VERSION = 3
# version 1: every site has every head, no site_heads/head_axes; versions 1 and 2: axes
# named by the arrays sites/layers/tags, no coordinates
READABLE_VERSIONS = (1, 2, 3)
RESULTS_FILE = "probes.h5"

TAG, CELL = ("site", "layer", "head", "tag"), ("site", "layer", "head")
BLOCKS, PORTION = ("site", "layer", "head", "portion"), ("portion",)


def ArraySpec(dims: tuple[str, ...], description: str) -> Array:  # noqa: N802
    """One array of the results: its axes (``dims``) and what it means (named by its key
    in :data:`ARRAYS`)."""
    return Array("", dims, "", description)


# what each control's arrays are computed from (array names end in "_<suffix>")
_CONTROL_WORDS = {c.suffix: c.words for c in REGISTRY.values() if c.fitted != "interval"}
_AMBIGUOUS = ("on the ambiguous test tokens (their token id carries two or more tags in "
              "training, each on at least parameter 'ambiguous_min_count' tokens)")


def _declare() -> dict[str, Array]:
    arrays = {
        "precision": ArraySpec(TAG, "per-tag precision on the test split"),
        "recall": ArraySpec(TAG, "per-tag recall on the test split"),
        "f1": ArraySpec(TAG, "per-tag F1 on the test split"),
        "support": ArraySpec(TAG, "test tokens of the tag"),
        "f1_lo": ArraySpec(TAG, "lower end of the bootstrap interval of F1 (test stories "
                                "resampled)"),
        "f1_hi": ArraySpec(TAG, "upper end of the bootstrap interval of F1 (test stories "
                                "resampled)"),
        "selectivity": ArraySpec(TAG, "f1 minus the F1 of the control named in parameter "
                                      "'selectivity_control'"),
        "selectivity_accuracy": ArraySpec(CELL, "accuracy minus the accuracy of the control "
                                                "named in parameter 'selectivity_control'"),
        "macro_f1": ArraySpec(CELL, "mean F1 over the tags that occur in the test split"),
        "accuracy": ArraySpec(CELL, "fraction of test tokens whose tag is predicted"),
        "n_iter": ArraySpec(CELL, "solver iterations of the probe"),
        "coef": ArraySpec((*TAG, "d_head"), "probe weights on the raw stored vectors "
                                            "[site, layer, head, tag, d_head]"),
        "intercept": ArraySpec(TAG, "probe biases [site, layer, head, tag]"),
        "codelength": ArraySpec(CELL, "MDL online code length of the train tags, bits"),
        "compression": ArraySpec(CELL, "uniform_codelength / codelength"),
        "codelength_blocks": ArraySpec(BLOCKS, "bits of the online code spent on the new "
                                               "tokens of each portion (portion 0: uniform)"),
        "uniform_codelength": ArraySpec((), "bits to send the train tags with the uniform "
                                            "code: n_train log2 n_tags"),
        "mdl_percent": ArraySpec(PORTION, "share of the train tokens each MDL portion aims "
                                          "at, percent (portions grow, whole stories)"),
        "mdl_tokens": ArraySpec(PORTION, "train tokens in the first i+1 MDL portions"),
        "mdl_stories": ArraySpec(PORTION, "train stories in the first i+1 MDL portions"),
    }
    for suffix, words in _CONTROL_WORDS.items():
        for amb, where in (("", ""), ("_ambiguous", " " + _AMBIGUOUS)):
            arrays[f"f1_{suffix}{amb}"] = ArraySpec(TAG, f"per-tag F1 of {words}{where}")
            arrays[f"macro_f1_{suffix}{amb}"] = ArraySpec(CELL, f"macro-F1 of {words}{where}")
            arrays[f"accuracy_{suffix}{amb}"] = ArraySpec(CELL,
                                                          f"accuracy of {words}{where}")
    for name in ("precision", "recall", "f1", "support", "macro_f1", "accuracy"):
        spec = arrays[name]
        arrays[f"{name}_ambiguous"] = ArraySpec(spec.dims, f"{spec.description}, {_AMBIGUOUS}")
    arrays["lexical_gain"] = ArraySpec(TAG, "f1_ambiguous minus f1_lexical_ambiguous: how "
                                            "far the probe beats word identity where word "
                                            "identity cannot decide")
    for end, which in (("lo", "lower"), ("hi", "upper")):
        arrays[f"lexical_gain_{end}"] = ArraySpec(
            TAG, f"{which} end of the bootstrap 95% interval of lexical_gain (test stories "
                 "resampled, probe and lexical baseline scored on the same resamples)")
    arrays["selectivity_f1"] = ArraySpec(TAG, "f1 minus the highest F1 of any control run "
                                              "in the same cell (lexical baselines included)")
    for suffix in ("random", "control_task"):
        words = _CONTROL_WORDS[suffix]
        arrays[f"codelength_{suffix}"] = ArraySpec(CELL, f"MDL online code length of {words}")
        arrays[f"compression_{suffix}"] = ArraySpec(
            CELL, f"uniform_codelength / codelength_{suffix}")
        arrays[f"codelength_blocks_{suffix}"] = ArraySpec(
            BLOCKS, f"codelength_blocks of {words}")
    return arrays


# every array the results may hold: name -> axes and meaning
ARRAYS = {name: replace(entry, name=name) for name, entry in _declare().items()}
# the coordinates that label the axes, with their meaning (head, d_head and portion are
# indices 0..n-1)
COORDINATES = {"site": "site names", "layer": "model layer of each layer index",
               "tag": "class names"}
# arrays along the site axis that say what the head axis holds: name -> meaning
AXIS_ARRAYS = {
    "site_heads": "heads probed per site: cells past site_heads[s] on the head axis are "
                  "padding (NaN; -1 in integer arrays)",
    "head_axes": "what the head axis counts for each site: 'head' (query heads) or 'kv_head' "
                 "(key/value heads of a grouped-query model, shared by several query heads)",
}
TAG_METRICS = tuple(n for n, a in ARRAYS.items() if a.dims == TAG and n != "intercept")
CELL_METRICS = tuple(n for n, a in ARRAYS.items() if a.dims == CELL)


def check_arrays(arrays: dict[str, np.ndarray], sizes: dict[str, int]) -> None:
    """Refuse arrays the format does not declare or whose shape breaks its axes.

    sizes: known axis lengths (site, layer, tag); the others (head, d_head, portion) must
    agree across arrays.
    """
    sizes = dict(sizes)
    for name, value in arrays.items():
        if name not in ARRAYS:
            raise ValueError(f"probe results declare no array {name!r}")
        dims, shape = ARRAYS[name].dims, np.shape(value)
        if len(shape) != len(dims):
            raise ValueError(f"{name} has shape {shape}; the format says [{', '.join(dims)}]")
        for axis, n in zip(dims, shape, strict=True):
            if sizes.setdefault(axis, n) != n:
                raise ValueError(f"{name} has {n} along {axis}, other arrays "
                                 f"{sizes[axis]}")


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

    def __repr__(self) -> str:
        from headprobe.reprs import arrays_text, few, int_range, paragraph, tags_text

        return paragraph("ProbeResults", [
            ("path", repr(str(self.path))), ("sites", few(self.sites)),
            ("layers", int_range(self.layers)), ("n_heads", str(self.n_heads)),
            ("tags", tags_text(self.tags)),
            ("controls", few(self.controls) or "none"), ("arrays", arrays_text(self.arrays))])

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
        dims = ARRAYS[metric].dims
        if dims[:3] != CELL or len(dims) > 4:
            raise UsageError(f"metric {metric!r} is not a layer x head grid "
                             f"([{', '.join(dims)}])")
        data = self.arrays[metric][self.site_index(site), :, :self.heads(site)]
        if dims == TAG:
            if tag is None:
                raise UsageError(f"metric {metric!r} is per tag: give a tag")
            data = data[:, :, self.tag_index(tag)]
        return data

    @property
    def controls(self) -> list[str]:
        """The controls whose per-tag F1 these results hold, in the order selectivity
        prefers them (the first is the default ``selectivity_control``)."""
        return [c for c in SELECTIVITY_CONTROLS if f"f1_{array_suffix(c)}" in self.arrays]

    def selectivity(self, control: str | None = None, metric: str = "f1") -> np.ndarray:
        """``metric`` minus that of ``control`` (default: the stored selectivity control):
        per-tag F1 [S, L, H, K] by default, ``metric='accuracy'`` gives [S, L, H]."""
        control = control or self.attrs.get("selectivity_control")
        if control is None:
            raise UsageError(f"{self.path} holds no control to measure selectivity against")
        if control not in self.controls:
            raise UsageError(f"these results hold no {control!r} control (have "
                             f"{', '.join(self.controls) or 'none'})")
        return control_selectivity(self.arrays, control, metric)


# the arrays that labelled the axes in format versions 1 and 2
OLD_AXIS_ARRAYS = {"site": "sites", "layer": "layers", "tag": "tags"}


def _write_axes(dims: Dimensions, sites: list[str], layers: list[int], tags: list[str],
                site_heads: list[int], head_axes: list[str]) -> None:
    """The coordinates of the site, layer and tag axes, and the arrays along the site axis
    that say what its head axis holds."""
    for name, values in (("site", np.array(sites, dtype=object)),
                         ("layer", np.asarray(layers, dtype=np.int32)),
                         ("tag", np.array(tags, dtype=object))):
        dims.coordinate(name, values, COORDINATES[name])
    for name, values in (("site_heads", np.asarray(site_heads, dtype=np.int32)),
                         ("head_axes", np.array(head_axes, dtype=object))):
        dims.write(name, values, ("site",), AXIS_ARRAYS[name])


def write_results(out_dir: str | Path, sites: list[str], layers: list[int], tags: list[str],
                  arrays: dict[str, np.ndarray], attrs: dict[str, Any],
                  manifest: dict[str, Any], overwrite: bool = False,
                  site_heads: list[int] | None = None,
                  head_axes: list[str] | None = None,
                  descriptions: dict[str, str] | None = None) -> Path:
    """Write RESULTS/probes.h5 and RESULTS/manifest.json atomically; return the directory.

    arrays: names and shapes as declared in ARRAYS (checked before anything is written);
    site_heads, head_axes: [S] real heads per site and what they count (default: every
    site has the whole head axis of query heads); descriptions: what arrays mean where it
    differs from ARRAYS (one-vs-rest probes).
    """
    check_arrays(arrays, {"site": len(sites), "layer": len(layers), "tag": len(tags)})
    n_heads = int(np.shape(arrays["f1"])[2]) if "f1" in arrays else 0
    site_heads = list(site_heads or [n_heads] * len(sites))
    head_axes = list(head_axes or ["head"] * len(sites))
    with output_lock(out_dir), atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with hdf5_image(tmp / RESULTS_FILE, Path(out_dir) / RESULTS_FILE) as f:
            set_format(f.attrs, FORMAT, FORMAT_VERSION)
            f.attrs["params"] = json.dumps(attrs, default=str)
            dims = Dimensions(f)
            _write_axes(dims, sites, layers, tags, site_heads, head_axes)
            for name, value in arrays.items():
                dims.write(name, value, ARRAYS[name].dims,
                           (descriptions or {}).get(name, ARRAYS[name].description),
                           compress=True)
        write_json(tmp / "manifest.json", {**base_manifest("probing fit"), "format": FORMAT,
                                           "format_version": FORMAT_VERSION, **manifest})
    return Path(out_dir)


def _read_arrays(f: h5py.File, file: Path, verify: bool) -> dict[str, np.ndarray]:
    """The result arrays of ``f``, each checked against its checksum when ``verify``."""
    arrays = {}
    for name, ds in f.items():
        if name in AXIS_ARRAYS or name in OLD_AXIS_ARRAYS.values() or ds.is_scale:
            continue
        arrays[name] = read_array(ds, file, "fit the probes again", verify)
    return arrays


def read_results(path: str | Path, verify: bool | None = None) -> ProbeResults:
    """Read a results directory (or its probes.h5) written by ``probing fit``.

    verify: compare each array with its checksum (default: on unless HEADPROBE_VERIFY=0;
    see :mod:`headprobe.checksums`); a damaged array raises DamagedFile.
    """
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise missing_input("probes", path, run_of(path, "probes"))
    try:
        f = h5py.File(file, "r")
    except OSError as exc:
        raise UsageError(f"{file} is not an HDF5 file") from exc
    check_manifest(file.parent, "fit the probes again")
    damaged = "the file is damaged; fit the probes again"
    with f, reading(file, "probe results", damaged, also=(KeyError, RuntimeError, ValueError)):
        fmt, version = format_of(f.attrs)
        if fmt != FORMAT or version not in READABLE_VERSIONS:
            raise UsageError(f"{file} is not a probe results file of format version "
                             f"{' or '.join(map(str, READABLE_VERSIONS))}")
        axes = {axis: f[axis if version >= 3 else old] for axis, old in OLD_AXIS_ARRAYS.items()}
        sites, tags = list(axes["site"].asstr()[()]), list(axes["tag"].asstr()[()])
        layers = [int(x) for x in axes["layer"][()]]
        site_heads = [int(x) for x in f["site_heads"][()]] if "site_heads" in f else []
        head_axes = list(f["head_axes"].asstr()[()]) if "head_axes" in f else []
        arrays = _read_arrays(f, file, verification_on(verify))
        attrs = json.loads(f.attrs["params"])
    return ProbeResults(file.parent, sites, layers, tags, arrays, attrs, site_heads, head_axes)
