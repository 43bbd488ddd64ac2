"""The on-disk format of a case study's results: its declared layout, the writer and the reader.

A study writes one directory::

    DIR/results.h5      one HDF5 dataset per array; each dataset carries the attributes
                        ``axes`` (one name per dimension) and ``definition`` (what a value
                        means); root attributes ``study``, ``format_version`` and ``meta``
                        (a JSON object: inputs, parameters, headline numbers)
    DIR/report.txt      the short human-readable report
    DIR/manifest.json   provenance (command line, library versions, time)

Every study module declares the arrays it writes once, as a :class:`Layout` named
``LAYOUT`` made of :class:`Array` entries. :func:`write_study` refuses arrays that do not
match the declaration, and the figures stage reads arrays through the same entries.

String arrays (token labels, say) are stored as UTF-8 variable-length strings and
come back as ``numpy`` arrays of ``str``. Results written before the ``axes`` and
``definition`` attributes existed are still read; they just have no stored axes.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from headprobe.atomic import atomic_dir
from headprobe.errors import UsageError
from headprobe.failures import reading
from headprobe.hdf5 import hdf5_image
from headprobe.locks import output_lock
from headprobe.manifest import base_manifest, write_json
from headprobe.rundir import missing_input, run_of
from probing.studies import STUDY_MODULES

STUDY_FORMAT_VERSION = 1
RESULTS_FILE = "results.h5"
# kind of values -> numpy dtype kinds it accepts
KINDS = {"float": "f", "int": "iu", "bool": "b", "str": "USO"}
# axes several studies share
LAYER_HEAD = ("layer", "head")
PATTERN = ("destination position", "source position")


@dataclass(frozen=True)
class Array:
    """One array of a study's results.

    name: the HDF5 dataset name; axes: one name per dimension, e.g. ``("layer", "head")``;
    kind: 'float', 'int', 'bool' or 'str'; definition: what a value means;
    when: empty when the study always writes the array, else the mode in which it does
    (``"with the model"``).
    """

    name: str
    axes: tuple[str, ...]
    kind: str
    definition: str
    when: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"array {self.name!r}: unknown kind {self.kind!r}; choose from "
                             f"{', '.join(KINDS)}")

    @property
    def required(self) -> bool:
        """True when every result of the study holds this array."""
        return not self.when

    def mismatch(self, value: Any) -> str:
        """Why ``value`` does not fit this declaration ('' when it does)."""
        arr = np.asarray(value)
        if arr.ndim != len(self.axes):
            return (f"array {self.name!r} has {arr.ndim} dimension(s) but is declared with "
                    f"{len(self.axes)} ({', '.join(self.axes) or 'scalar'})")
        if arr.dtype.kind not in KINDS[self.kind]:
            return f"array {self.name!r} holds {arr.dtype} values but is declared {self.kind}"
        return ""


@dataclass(frozen=True)
class Layout:
    """The arrays study ``study`` writes, in the order they are listed."""

    study: str
    arrays: tuple[Array, ...]

    def __post_init__(self) -> None:
        names = [a.name for a in self.arrays]
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.study!r} declares an array name twice")

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.arrays]

    def __iter__(self) -> Iterator[Array]:
        return iter(self.arrays)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> Array:
        for entry in self.arrays:
            if entry.name == name:
                return entry
        raise KeyError(f"study {self.study!r} declares no array {name!r}")

    def check(self, arrays: Mapping[str, Any]) -> None:
        """Raise ValueError unless ``arrays`` (name -> array) fit the declaration: no
        undeclared name, every required array present, each with its declared number of
        axes and kind of values."""
        unknown = [name for name in arrays if name not in self]
        if unknown:
            raise ValueError(f"study {self.study!r} writes undeclared array(s) "
                             f"{', '.join(unknown)}; declare them in its LAYOUT")
        missing = [a.name for a in self.arrays if a.required and a.name not in arrays]
        if missing:
            raise ValueError(f"study {self.study!r} lacks required array(s) {', '.join(missing)}")
        for name, value in arrays.items():
            problem = self[name].mismatch(value)
            if problem:
                raise ValueError(f"study {self.study!r}: {problem}")


def layout_of(study: str) -> Layout:
    """The declared layout of study ``study`` (the ``LAYOUT`` of its module)."""
    if study not in STUDY_MODULES:
        raise UsageError(f"unknown study {study!r}; known: {', '.join(STUDY_MODULES)}")
    return importlib.import_module(STUDY_MODULES[study]).LAYOUT


def _name(entry: Array | str) -> str:
    return entry.name if isinstance(entry, Array) else entry


@dataclass
class StudyResults:
    """A study's results as read back from disk.

    arrays: name -> array, named as in the study's :class:`Layout`; meta: the JSON metadata;
    report: the text report; axes: name -> axis names stored with each array (absent for
    results written before axes were stored).
    """

    path: Path
    study: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    report: str
    axes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __repr__(self) -> str:
        from headprobe.reprs import arrays_text, few, paragraph

        first = self.report.strip().splitlines()[:1]
        return paragraph("StudyResults", [
            ("path", repr(str(self.path))), ("study", repr(self.study)),
            ("meta", few(list(self.meta))), ("arrays", arrays_text(self.arrays)),
            ("report", repr(first[0] if first else ""))])

    @property
    def file(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def layout(self) -> Layout:
        return layout_of(self.study)

    def __contains__(self, entry: Array | str) -> bool:
        return _name(entry) in self.arrays

    def __getitem__(self, entry: Array | str) -> np.ndarray:
        """The array of ``entry``; a UsageError naming this directory when it is absent."""
        name = _name(entry)
        if name not in self.arrays:
            raise UsageError(f"{self.path} lacks array {name!r} ({self.study} results)")
        return self.arrays[name]

    def get(self, entry: Array | str, default: Any = None) -> Any:
        return self.arrays.get(_name(entry), default)


def _store_array(f: h5py.File, entry: Array, value: Any) -> None:
    arr = np.asarray(value)
    if arr.dtype.kind in ("U", "O", "S"):
        ds = f.create_dataset(entry.name, data=arr.astype(object), dtype=h5py.string_dtype())
    else:
        ds = f.create_dataset(entry.name, data=arr)
    ds.attrs.create("axes", list(entry.axes), dtype=h5py.string_dtype())
    ds.attrs["definition"] = entry.definition


def write_study(out_dir: str | Path, layout: Layout, arrays: Mapping[str, Any],
                meta: dict[str, Any], report: str, overwrite: bool = False) -> Path:
    """Write a study's results directory atomically; return its path.

    arrays: name -> array, checked against ``layout`` first (a ValueError names the array
    that does not fit); meta: JSON-serialisable metadata; report: the text report.
    """
    layout.check(arrays)
    with output_lock(out_dir), atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with hdf5_image(tmp / RESULTS_FILE, Path(out_dir) / RESULTS_FILE) as f:
            f.attrs["study"] = layout.study
            f.attrs["format_version"] = STUDY_FORMAT_VERSION
            f.attrs["meta"] = json.dumps(meta, default=str)
            for name, value in arrays.items():
                _store_array(f, layout[name], value)
        (tmp / "report.txt").write_text(report.rstrip() + "\n")
        write_json(tmp / "manifest.json", {**base_manifest(f"probing {layout.study}"),
                                           "study": layout.study})
    return Path(out_dir)


def _axes(ds: h5py.Dataset) -> tuple[str, ...] | None:
    if "axes" not in ds.attrs:
        return None
    return tuple(a.decode() if isinstance(a, bytes) else str(a) for a in ds.attrs["axes"])


def read_study(path: str | Path) -> StudyResults:
    """Read a study directory written by :func:`write_study`."""
    path = Path(path)
    file = path / RESULTS_FILE
    if not file.is_file():
        raise missing_input("study", path, run_of(path, "study"), path.name)
    arrays, axes = {}, {}
    damaged = "the file is damaged; run the study again"
    with reading(file, "study results", damaged, also=(KeyError, RuntimeError, ValueError)), \
            h5py.File(file, "r") as f:
        if int(f.attrs.get("format_version", -1)) != STUDY_FORMAT_VERSION:
            raise UsageError(f"{file} has an unknown study format version")
        for name, ds in f.items():
            arrays[name] = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]
            stored = _axes(ds)
            if stored is not None:
                axes[name] = stored
        study, meta = str(f.attrs["study"]), json.loads(f.attrs["meta"])
    report = (path / "report.txt").read_text() if (path / "report.txt").exists() else ""
    return StudyResults(path, study, arrays, meta, report, axes)
