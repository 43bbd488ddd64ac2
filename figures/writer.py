"""Saving figures atomically, with a sidecar JSON that ties each figure to its data.

For a figure named ``STEM`` in ``FIGDIR`` the writer produces::

    FIGDIR/STEM.png, FIGDIR/STEM.pdf, ...   one file per requested format
    FIGDIR/STEM.json                         sidecar: inputs and their sha256, parameters,
                                             command line, headprobe version, axes labels

The sidecar is written last, so a figure interrupted half-way has none and is redrawn
on the next run. A figure whose sidecar records the same input hashes, parameters and
formats is up to date and is not rewritten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from headprobe.atomic import atomic_file
from headprobe.manifest import command_line, library_versions, now_iso, read_json, write_json

FORMATS = ("png", "pdf", "svg")
DPI = 150
SIDECAR_FORMAT = "headprobe-figure"
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (memoised by path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def input_hashes(paths: Sequence[str | Path]) -> dict[str, str]:
    """{path: sha256} for every input file, in a stable order."""
    return {str(Path(p)): sha256_file(p) for p in sorted({str(p) for p in paths})}


def sidecar_path(out_dir: str | Path, stem: str) -> Path:
    return Path(out_dir) / f"{stem}.json"


def figure_paths(out_dir: str | Path, stem: str, formats: Sequence[str]) -> list[Path]:
    return [Path(out_dir) / f"{stem}.{fmt}" for fmt in formats]


def up_to_date(out_dir: str | Path, stem: str, formats: Sequence[str], inputs: dict[str, str],
               params: dict[str, Any]) -> bool:
    """True when the figure files exist and the sidecar records the same inputs and params."""
    side = sidecar_path(out_dir, stem)
    if not side.is_file() or not all(p.is_file() for p in figure_paths(out_dir, stem, formats)):
        return False
    try:
        old = read_json(side)
    except (OSError, ValueError):
        return False
    return (old.get("inputs") == inputs and old.get("params") == _jsonable(params)
            and set(formats) <= set(old.get("formats", [])))


def axes_summary(fig: Figure) -> list[dict[str, str]]:
    """Title and axis labels of every visible axes of ``fig``."""
    return [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel()}
            for ax in fig.get_axes() if ax.get_visible() and ax.axison]


def save_figure(fig: Figure, out_dir: str | Path, stem: str, formats: Sequence[str],
                inputs: dict[str, str], params: dict[str, Any] | None = None,
                argv: Sequence[str] | None = None) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.<fmt>`` for each format, then its sidecar; return paths."""
    written = []
    for fmt, final in zip(formats, figure_paths(out_dir, stem, formats), strict=True):
        with atomic_file(final) as tmp:
            # Fixed metadata keeps repeated renders of the same data byte-comparable.
            meta = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt, {})
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=meta)
        written.append(final)
    versions = library_versions()
    write_json(sidecar_path(out_dir, stem), {
        "format": SIDECAR_FORMAT,
        "figure": stem,
        "files": [p.name for p in written],
        "formats": list(formats),
        "inputs": inputs,
        "params": _jsonable(params or {}),
        "command": command_line(list(argv) if argv is not None else None),
        "headprobe_version": versions.get("headprobe", "unknown"),
        "versions": versions,
        "created": now_iso(),
        "axes": axes_summary(fig),
    })
    return written


def _jsonable(obj: Any) -> Any:
    """Params as they read back from JSON (tuples become lists, numpy scalars plain)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj
