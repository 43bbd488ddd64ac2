"""Write outputs under a temporary name and rename them into place when complete.

Nothing half-written ever sits under its final name, and an existing output is
only replaced once its successor is complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from headprobe.errors import UsageError, opt


def check_target(final: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; return ``final`` as a Path."""
    final = Path(final)
    if final.exists() and not overwrite:
        raise UsageError(f"{final} already exists; pass {opt('overwrite', True)} to replace it")
    return final


def _replace(tmp: Path, final: Path) -> None:
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


@contextmanager
def atomic_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty directory beside ``final``; rename it to ``final`` on success."""
    final = check_target(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        _replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` on success."""
    final = check_target(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
