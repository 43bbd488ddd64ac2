"""One vocabulary for every HDF5 file headprobe writes: declared arrays and named axes.

The activation store, the probe results and each case study's results describe themselves
the same way:

* root attributes ``format`` (what the file is) and ``format_version`` (an integer);
* every array carries ``dims`` (its axis names, a list of strings; an empty string for a
  scalar) and ``description`` (what a value means);
* every axis is an HDF5 dimension scale in the netCDF-4 convention: a one-dimensional
  coordinate dataset named after the axis, holding its values (layer numbers, site and tag
  names, or positions 0..n-1), attached to each array along that axis. xarray
  (``engine="h5netcdf"``), netCDF4 and ``h5dump -A`` then see named dimensions and
  coordinates.

A format declares its arrays once, as :class:`Array` entries collected in a
:class:`Layout`; its writer checks values against them and its reader names axes by them.
:class:`Dimensions` creates the coordinate datasets of one file and attaches them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from headprobe.checksums import stamp

FORMAT, FORMAT_VERSION, DIMS, DESCRIPTION = "format", "format_version", "dims", "description"
# kind of values -> numpy dtype kinds it accepts ('' accepts any numbers)
KINDS = {"float": "f", "int": "iu", "bool": "b", "str": "USO", "": "fiub"}
# how files older than this vocabulary joined axis names into one string
DIMS_SEPARATOR = ", "
# rows per chunk of a long coordinate (the store's token axis), compressed; coordinates
# up to SMALL_COORDINATE values are stored as they are
COORDINATE_CHUNK = 65536
SMALL_COORDINATE = 4096


@dataclass(frozen=True)
class Array:
    """One declared array.

    name: the HDF5 dataset name; dims: one axis name per dimension, e.g. ``("layer",
    "head")``; kind: 'float', 'int', 'bool', 'str' or '' (any number); description: what a
    value means; when: empty when the array is always written, else when it is
    (``"with the model"``).
    """

    name: str
    dims: tuple[str, ...]
    kind: str
    description: str
    when: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"array {self.name!r}: unknown kind {self.kind!r}; choose from "
                             f"{', '.join(k for k in KINDS if k)}")

    @property
    def required(self) -> bool:
        """True when every file of the format holds this array."""
        return not self.when

    # the names the study format used before this vocabulary, kept for code that uses them
    @property
    def axes(self) -> tuple[str, ...]:
        """The same as ``dims``."""
        return self.dims

    @property
    def definition(self) -> str:
        """The same as ``description``."""
        return self.description

    def mismatch(self, value: Any) -> str:
        """Why ``value`` does not fit this declaration ('' when it does)."""
        arr = np.asarray(value)
        if arr.ndim != len(self.dims):
            return (f"array {self.name!r} has {arr.ndim} dimension(s) but is declared with "
                    f"{len(self.dims)} ({', '.join(self.dims) or 'scalar'})")
        if arr.dtype.kind not in KINDS[self.kind]:
            return (f"array {self.name!r} holds {arr.dtype} values but is declared "
                    f"{self.kind or 'numeric'}")
        return ""


@dataclass(frozen=True)
class Layout:
    """The arrays a format (or one study) declares, in the order they are listed."""

    name: str
    arrays: tuple[Array, ...]

    def __post_init__(self) -> None:
        names = [a.name for a in self.arrays]
        if len(set(names)) != len(names):
            raise ValueError(f"layout {self.name!r} declares an array name twice")

    @property
    def study(self) -> str:
        """The same as ``name`` (what a study's layout called it)."""
        return self.name

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.arrays]

    def __iter__(self) -> Iterator[Array]:
        return iter(self.arrays)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> Array:
        for entry in self.arrays:
            if entry.name == name:
                return entry
        raise KeyError(f"{self.name!r} declares no array {name!r}")

    def check(self, arrays: Mapping[str, Any]) -> None:
        """Raise ValueError unless ``arrays`` (name -> array) fit the declaration: no
        undeclared name, every required array present, each with its declared number of
        axes and kind of values."""
        unknown = [name for name in arrays if name not in self]
        if unknown:
            raise ValueError(f"{self.name!r} writes undeclared array(s) "
                             f"{', '.join(unknown)}; declare them in its layout")
        missing = [a.name for a in self.arrays if a.required and a.name not in arrays]
        if missing:
            raise ValueError(f"{self.name!r} lacks required array(s) {', '.join(missing)}")
        for name, value in arrays.items():
            problem = self[name].mismatch(value)
            if problem:
                raise ValueError(f"{self.name!r}: {problem}")


def netcdf_name(axis: str) -> str:
    """The dimension name of axis ``axis``: letters, digits and underscores
    (``"destination position"`` -> ``destination_position``)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", axis).strip("_") or "axis"
    return name if not name[0].isdigit() else f"axis_{name}"


def stored_dims(ds: h5py.Dataset, legacy: str = "") -> tuple[str, ...] | None:
    """The axis names stored with ``ds``: ``dims`` (a list of names, or in older files one
    string of names joined by ``", "``), else the older attribute ``legacy`` (a list); None
    when it has neither."""
    key = DIMS if DIMS in ds.attrs else legacy
    if not key or key not in ds.attrs:
        return None
    value = ds.attrs[key]
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        return tuple(text.split(DIMS_SEPARATOR)) if text else ()
    return tuple(a.decode() if isinstance(a, bytes) else str(a) for a in value)


def describe(ds: h5py.Dataset, dims: tuple[str, ...] | list[str], description: str) -> None:
    """Set the ``dims`` and ``description`` attributes of ``ds``."""
    if dims:
        ds.attrs.create(DIMS, list(dims), dtype=h5py.string_dtype())
    else:
        ds.attrs[DIMS] = ""
    ds.attrs[DESCRIPTION] = description


def set_format(attrs: h5py.AttributeManager, fmt: str, version: int) -> None:
    """Name a file's format and version in its root attributes ``attrs``."""
    attrs[FORMAT] = fmt
    attrs[FORMAT_VERSION] = int(version)


def format_of(attrs: Mapping[str, Any], legacy: tuple[str, str] = (FORMAT, FORMAT_VERSION)
              ) -> tuple[str | None, int | None]:
    """(format, version) from root attributes; files older than this vocabulary name them
    with the attributes ``legacy`` (name, version), which are read when ``format`` is absent."""
    name_key, version_key = (FORMAT, FORMAT_VERSION) if FORMAT in attrs else legacy
    name, version = attrs.get(name_key), attrs.get(version_key)
    if isinstance(name, bytes):
        name = name.decode()
    try:
        return (None if name is None else str(name)), (None if version is None else int(version))
    except (TypeError, ValueError):
        return (None if name is None else str(name)), None


def create_array(group: h5py.Group, name: str, value: Any, compress: bool = False
                 ) -> h5py.Dataset:
    """Dataset ``name`` holding ``value``: strings as variable-length UTF-8, numbers as they
    are (gzip-compressed when ``compress`` and the array has axes)."""
    arr = np.asarray(value)
    if arr.dtype.kind in "USO":
        return group.create_dataset(name, data=arr.astype(object), dtype=h5py.string_dtype())
    return group.create_dataset(name, data=arr,
                                compression="gzip" if compress and arr.ndim else None)


def _index_values(length: int) -> np.dtype:
    return np.dtype(np.int32 if length < 2**31 else np.int64)


class Dimensions:
    """The netCDF-4 dimensions of one file: coordinate datasets at its root, made HDF5
    dimension scales, and attached to the arrays along them."""

    def __init__(self, file: h5py.File):
        self.file = file

    def coordinate(self, name: str, values: Any, description: str) -> h5py.Dataset:
        """Create the coordinate ``name`` holding ``values`` [n] (numbers or strings)."""
        return self._scale(create_array(self.file, name, values), name, description)

    def index(self, name: str, length: int, description: str = "") -> h5py.Dataset:
        """Create the coordinate ``name`` holding 0..length-1, written in chunks (it may be
        as long as the store's token axis)."""
        dtype = _index_values(length)
        chunks = (min(COORDINATE_CHUNK, length),) if length > SMALL_COORDINATE else None
        ds = self.file.create_dataset(name, shape=(length,), dtype=dtype, chunks=chunks,
                                      **({"compression": "gzip", "shuffle": True}
                                         if chunks else {}))
        for start in range(0, length, COORDINATE_CHUNK):
            stop = min(length, start + COORDINATE_CHUNK)
            ds[start:stop] = np.arange(start, stop, dtype=dtype)
        return self._scale(ds, name, description or f"index along {name}: 0..{length - 1}")

    def write(self, name: str, value: Any, dims: tuple[str, ...], description: str,
              scales: list[str] | None = None, compress: bool = False) -> h5py.Dataset:
        """Create array ``name`` (see :func:`create_array`) with its ``dims`` and
        ``description``, attached to the coordinates ``scales`` (default: ``dims``), with
        the checksum of its values (:func:`headprobe.checksums.stamp`)."""
        ds = create_array(self.file, name, value, compress)
        describe(ds, dims, description)
        stamp(ds)
        self.attach(ds, dims if scales is None else scales)
        return ds

    def _scale(self, ds: h5py.Dataset, name: str, description: str) -> h5py.Dataset:
        ds.make_scale(name)
        describe(ds, (name,), description)
        return ds

    def scale(self, name: str, length: int) -> h5py.Dataset:
        """The coordinate ``name``, created as an index when the file lacks it."""
        if name in self.file:
            return self.file[name]
        return self.index(name, length)

    def attach(self, ds: h5py.Dataset, names: tuple[str, ...] | list[str]) -> None:
        """Attach coordinate ``names[i]`` to dimension i of ``ds`` (created as an index when
        missing); ValueError when a coordinate's length differs from the dimension's."""
        for i, name in enumerate(names):
            scale = self.scale(name, ds.shape[i])
            if scale.shape[0] != ds.shape[i]:
                raise ValueError(f"{ds.name} has {ds.shape[i]} along {name}, the coordinate "
                                 f"{scale.shape[0]}")
            ds.dims[i].attach_scale(scale)

    def free_name(self, axis: str, length: int, taken: set[str]) -> str:
        """A dimension name for ``axis`` of ``length``: its netCDF name, unless that names an
        array in ``taken`` or a dimension of another length (then with ``_<length>``)."""
        name = netcdf_name(axis)
        if name in taken:
            name = f"{name}_index"
        if name in self.file and self.file[name].shape != (length,):
            name = f"{name}_{length}"
        return name
