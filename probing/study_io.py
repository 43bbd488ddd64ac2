"""The on-disk format of a case study's results: its declared layout, the writer and the reader.

A study writes one directory::

    DIR/results.h5      one HDF5 dataset per array, described as every headprobe file is
                        (:mod:`headprobe.layout`): attributes ``dims`` and
                        ``description``, a netCDF-4 coordinate per axis; root attributes
                        ``format``, ``format_version``, ``study`` and ``meta`` (a JSON
                        object: inputs, parameters, headline numbers)
    DIR/report.txt      the short human-readable report
    DIR/manifest.json   provenance (command line, library versions, time)

Every study module declares the arrays it writes once, as a
:class:`headprobe.layout.Layout` named ``LAYOUT`` made of :class:`headprobe.layout.Array`
entries. :func:`write_study` refuses arrays that do not
match the declaration, and the figures stage reads arrays through the same entries.

Axis names in words ("destination position") become dimension names with underscores
(``destination_position``); an axis whose length differs between two arrays of one file
gets its length appended to the second (``head_3``). String arrays (token labels, say) are
stored as UTF-8 variable-length strings and come back as ``numpy`` arrays of ``str``.
Results of format version 1 (attributes ``axes`` and ``definition``, no ``format``, no
coordinates) and those written before axes were stored are still read.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from headprobe.atomic import atomic_dir
from headprobe.checksums import read_array, verification_on
from headprobe.errors import UsageError
from headprobe.failures import reading
from headprobe.hdf5 import hdf5_image
from headprobe.layout import (
    KINDS,
    Array,
    Dimensions,
    Layout,
    format_of,
    set_format,
    stored_dims,
)
from headprobe.locks import output_lock
from headprobe.manifest import base_manifest, check_manifest, write_json
from headprobe.rundir import missing_input, run_of
from probing.studies import STUDY_MODULES

STUDY_FORMAT = "headprobe-study"
STUDY_FORMAT_VERSION = 2
# version 1: attributes 'axes' and 'definition', no 'format' attribute, no coordinates
READABLE_VERSIONS = (1, 2)
RESULTS_FILE = "results.h5"
__all__ = ["KINDS", "LAYER_HEAD", "PATTERN", "Array", "Layout", "StudyResults", "layout_of",
           "read_study", "write_study"]
# axes several studies share
LAYER_HEAD = ("layer", "head")
PATTERN = ("destination position", "source position")


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


def _store_array(dims: Dimensions, entry: Array, value: Any, taken: set[str]) -> None:
    """Write one array with its attributes; attach (creating them as indices when new) the
    coordinates of its axes."""
    shape = np.shape(value)
    dims.write(entry.name, value, entry.dims, entry.description,
               scales=[dims.free_name(axis, n, taken)
                       for axis, n in zip(entry.dims, shape, strict=True)])


def write_study(out_dir: str | Path, layout: Layout, arrays: Mapping[str, Any],
                meta: dict[str, Any], report: str, overwrite: bool = False) -> Path:
    """Write a study's results directory atomically; return its path.

    arrays: name -> array, checked against ``layout`` first (a ValueError names the array
    that does not fit); meta: JSON-serialisable metadata; report: the text report.
    """
    layout.check(arrays)
    with output_lock(out_dir), atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with hdf5_image(tmp / RESULTS_FILE, Path(out_dir) / RESULTS_FILE) as f:
            set_format(f.attrs, STUDY_FORMAT, STUDY_FORMAT_VERSION)
            f.attrs["study"] = layout.name
            f.attrs["meta"] = json.dumps(meta, default=str)
            dims = Dimensions(f)
            for name, value in arrays.items():
                _store_array(dims, layout[name], value, set(arrays))
        (tmp / "report.txt").write_text(report.rstrip() + "\n")
        write_json(tmp / "manifest.json", {**base_manifest(f"probing {layout.name}"),
                                           "study": layout.name})
    return Path(out_dir)


def _check_version(f: h5py.File, file: Path) -> None:
    fmt, version = format_of(f.attrs)
    if version not in READABLE_VERSIONS or fmt not in (STUDY_FORMAT, None) or \
            (fmt is None and version != 1):
        raise UsageError(f"{file} has an unknown study format version (this headprobe reads "
                         f"{' and '.join(map(str, READABLE_VERSIONS))})")


def read_study(path: str | Path, verify: bool | None = None,
               study: str | None = None) -> StudyResults:
    """Read a study directory written by :func:`write_study` (or by format version 1).

    verify: compare each array with its checksum (default: on unless HEADPROBE_VERIFY=0;
    see :mod:`headprobe.checksums`); a damaged array raises DamagedFile. study: the study
    expected there, named when the directory is missing (default: the directory's name).
    """
    verify = verification_on(verify)
    path = Path(path)
    file = path / RESULTS_FILE
    if not file.is_file():
        raise missing_input("study", path, run_of(path, "study"), study or path.name)
    arrays, axes = {}, {}
    check_manifest(path, "run the study again")
    damaged = "the file is damaged; run the study again"
    with reading(file, "study results", damaged, also=(KeyError, RuntimeError, ValueError)), \
            h5py.File(file, "r") as f:
        _check_version(f, file)
        for name, ds in f.items():
            if ds.is_scale:   # a coordinate of the arrays' axes
                continue
            arrays[name] = read_array(ds, file, "run the study again", verify)
            stored = stored_dims(ds, legacy="axes")
            if stored is not None:
                axes[name] = stored
        study, meta = str(f.attrs["study"]), json.loads(f.attrs["meta"])
    report = (path / "report.txt").read_text() if (path / "report.txt").exists() else ""
    return StudyResults(path, study, arrays, meta, report, axes)
