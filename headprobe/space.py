"""Free space: refuse to start writing an output that does not fit on its disk.

A write that hits a full disk halfway is an ordinary error in Python, but HDF5 left with a
half-written file can crash the process when it exits (see :mod:`headprobe.hdf5`), so
writers check first with :func:`require_free_space`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from headprobe.errors import UsageError

# Room kept free beyond what a write needs: file-system and HDF5 metadata.
MARGIN = 256 << 10


def human_bytes(n: float) -> str:
    """``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_bytes(path: str | Path) -> int:
    """Bytes free to this user on the disk that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def require_free_space(path: str | Path, nbytes: int, advice: str = "",
                       shown: str | Path | None = None) -> None:
    """Refuse, before writing, ``nbytes`` (plus :data:`MARGIN`) at ``path`` that do not fit.

    advice: what to do besides freeing space (how to continue an unfinished output);
    shown: the output as the user knows it, when ``path`` is a temporary name.
    """
    free = free_bytes(path)
    if free < nbytes + MARGIN:
        raise UsageError(f"not enough free space to write {shown or path}: it needs about "
                         f"{human_bytes(nbytes + MARGIN)} and {human_bytes(free)} is free; "
                         f"free some space or write somewhere else{advice}")
