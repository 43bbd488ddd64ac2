"""Write outputs under a temporary name and rename them into place when complete.

Nothing half-written ever sits under its final name, and an existing output is
only replaced once its successor is complete. Outputs get the permissions of any file
the user creates (the temporary names are created private, as ``tempfile`` does, and
opened up to the user's umask before they are renamed into place).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from headprobe.errors import UsageError, opt
from headprobe.failures import naming


def check_target(final: str | Path, overwrite: bool, kind: str = "") -> Path:
    """Refuse an existing output unless ``overwrite``; return ``final`` as a Path.

    kind: "file" or "directory", what the output is: an existing path of the other kind is
    refused even with ``overwrite`` (it is someone else's, not an earlier output).
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise UsageError(f"{final} already exists; pass {opt('overwrite', True)} to replace it")
    if kind and final.exists() and final.is_dir() != (kind == "directory"):
        other = "a directory" if final.is_dir() else "a file"
        raise UsageError(f"{final} is {other}, but the output written there is a {kind}; "
                         "remove it or choose another path")
    return final


def user_umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_mode(path: Path, directory: bool) -> None:
    """Give ``path`` the mode a new file (0666) or directory (0777) gets under the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~user_umask())


@contextmanager
def creating_beside(final: Path) -> Iterator[None]:
    """Make ``final``'s directory; a file beside ``final`` that cannot be created in the
    block (a read-only or missing directory) is a UsageError naming ``final``."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        yield
    except OSError as exc:
        raise UsageError(f"cannot write {final}: {exc.strerror or exc} in {final.parent}; "
                         "choose an output in a directory you can write to") from exc


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
    final = check_target(final, overwrite, "directory")
    with creating_beside(final):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        with naming(final):
            yield tmp
        ordinary_mode(tmp, directory=True)
        _replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` on success."""
    final = check_target(final, overwrite, "file")
    with creating_beside(final):
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with naming(final):
            yield tmp
        ordinary_mode(tmp, directory=False)
        _replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
