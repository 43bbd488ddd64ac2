"""The on-disk format of a case study's results, and its reader.

A study writes one directory::

    DIR/results.h5      one HDF5 dataset per named array; root attribute ``meta`` holds a
                        JSON object (study name, inputs, parameters, labels of the axes)
    DIR/report.txt      the short human-readable report
    DIR/manifest.json   provenance (command line, library versions, time)

String arrays (token labels, say) are stored as UTF-8 variable-length strings and
come back as ``numpy`` arrays of ``str``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from headprobe.atomic import atomic_dir
from headprobe.errors import UsageError
from headprobe.manifest import base_manifest, write_json

STUDY_FORMAT_VERSION = 1


@dataclass
class StudyResults:
    """A study's arrays and metadata as read back from disk."""

    path: Path
    study: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    report: str


def _store_array(f: h5py.File, name: str, value: Any) -> None:
    arr = np.asarray(value)
    if arr.dtype.kind in ("U", "O"):
        f.create_dataset(name, data=arr.astype(object), dtype=h5py.string_dtype())
    else:
        f.create_dataset(name, data=arr)


def write_study(out_dir: str | Path, study: str, arrays: dict[str, Any], meta: dict[str, Any],
                report: str, overwrite: bool = False) -> Path:
    """Write a study's results directory atomically; return its path."""
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with h5py.File(tmp / "results.h5", "w") as f:
            f.attrs["study"] = study
            f.attrs["format_version"] = STUDY_FORMAT_VERSION
            f.attrs["meta"] = json.dumps(meta, default=str)
            for name, value in arrays.items():
                _store_array(f, name, value)
        (tmp / "report.txt").write_text(report.rstrip() + "\n")
        write_json(tmp / "manifest.json", {**base_manifest(f"probing {study}"), "study": study})
    return Path(out_dir)


def read_study(path: str | Path) -> StudyResults:
    """Read a study directory written by :func:`write_study`."""
    path = Path(path)
    file = path / "results.h5"
    if not file.is_file():
        raise UsageError(f"{path} holds no study results (no results.h5)")
    with h5py.File(file, "r") as f:
        if int(f.attrs.get("format_version", -1)) != STUDY_FORMAT_VERSION:
            raise UsageError(f"{file} has an unknown study format version")
        arrays = {}
        for name, ds in f.items():
            arrays[name] = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]
        study, meta = str(f.attrs["study"]), json.loads(f.attrs["meta"])
    report = (path / "report.txt").read_text() if (path / "report.txt").exists() else ""
    return StudyResults(path, study, arrays, meta, report)
