"""Checksums written with each array of a file, and the switch that lets readers skip them.

Probe results and study results record a CRC-32 of each array's stored values as the
array's attribute ``crc32`` (:func:`stamp`); their readers compare what they read with it
(:func:`check`). Files written before the attribute existed are read without the check.
The activation store keeps its own per-block checksums (:mod:`extract.store.integrity`).

Every reader verifies by default. ``HEADPROBE_VERIFY=0`` in the environment (or
``verify=False`` to a reader) skips the checks, for speed on files known to be intact.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from isal import isal_zlib

from headprobe.failures import DamagedFile, first_line

VERIFY_ENV = "HEADPROBE_VERIFY"
CRC_ATTR = "crc32"
_OFF = ("0", "false", "no", "off")


def verification_on(verify: bool | None = None) -> bool:
    """Whether readers check checksums: ``verify`` when given, else the environment
    variable HEADPROBE_VERIFY (on unless 0/false/no/off)."""
    if verify is not None:
        return bool(verify)
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in _OFF


@contextmanager
def verification(on: bool) -> Iterator[None]:
    """Readers in this block, and worker processes or Ray tasks started in it (they inherit
    HEADPROBE_* variables), verify or not as ``on`` says; the setting is restored after."""
    before = os.environ.get(VERIFY_ENV)
    os.environ[VERIFY_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VERIFY_ENV, None)
        else:
            os.environ[VERIFY_ENV] = before


def crc32(data: Any, value: int = 0) -> int:
    """zlib's CRC-32 of a buffer, continued from ``value``; computed by ISA-L, which gives
    the same number several times faster."""
    return isal_zlib.crc32(data, value)


def crc32_of(values: Any, value: int = 0) -> int:
    """CRC-32 of an array's values: its bytes in C order (strings: UTF-8, NUL-separated),
    continued from ``value``."""
    array = np.asarray(values)
    if array.dtype.kind in "OUS":
        items = (x.decode() if isinstance(x, bytes) else str(x) for x in array.ravel())
        return crc32("\0".join(items).encode(), value)
    raw = np.ascontiguousarray(array).reshape(-1)
    return crc32(raw.view(np.uint8).data, value)


def _stored(ds: h5py.Dataset) -> np.ndarray:
    return ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]


def stamp(ds: h5py.Dataset) -> None:
    """Record the CRC-32 of ``ds``'s values, as stored, in its attribute ``crc32``."""
    ds.attrs[CRC_ATTR] = np.uint32(crc32_of(_stored(ds)))


def read_array(ds: h5py.Dataset, file: str | Path, remedy: str, verify: bool) -> np.ndarray:
    """The values of ``ds`` (strings as ``str``); with ``verify``, checked against the
    checksum recorded with them (nothing to check when none was). DamagedFile, naming the
    file and the array, when they cannot be decoded or do not match; remedy: what to do."""
    where = f"{file}: array {ds.name.lstrip('/')}"
    try:
        values = _stored(ds)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DamagedFile(f"{where} cannot be decoded ({first_line(exc)}); the file is "
                          f"damaged, {remedy}") from exc
    recorded = ds.attrs.get(CRC_ATTR) if verify else None
    if recorded is not None and crc32_of(values) != int(recorded):
        raise DamagedFile(f"{where} does not match its checksum; the file is damaged, {remedy}")
    return values
