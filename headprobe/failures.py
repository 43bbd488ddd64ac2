"""Failures of the file system and of damaged files, each said in one line.

An ``OSError`` (a read-only directory, a full disk, a path that is a file where a
directory was expected, ...) and the errors libraries raise on files they cannot decode
(HDF5, Arrow, safetensors, JSON, UTF-8) are not bugs: the command line reports them as one
line with exit code 2 (:func:`headprobe.cli.run_main` asks :func:`failure_line`). A reader
that knows which file it is decoding says so through :func:`reading`, which turns those
errors into a :class:`UsageError` that names the file and what to do about it.
"""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from headprobe.errors import UsageError

# What to do about an OSError, by errno.
ADVICE = {
    errno.ENOSPC: "the disk is full; free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is exhausted; free some space or write somewhere else",
    errno.EACCES: "permission denied; choose a path you may use",
    errno.EPERM: "operation not permitted; choose a path you may use",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOENT: "no such file or directory; check the path",
    errno.EISDIR: "it is a directory where a file was expected; choose another path",
    errno.ENOTDIR: "a file stands where a directory was expected; choose another path",
    errno.ENOTEMPTY: "the directory is not empty; choose another path",
    errno.EEXIST: "it already exists; choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.EIO: "input/output error; check the disk",
}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def decode_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "this file cannot be read as what it should be".

    Arrow and safetensors errors are included once those libraries are loaded (no error of
    theirs can be raised before).
    """
    types: list[type[BaseException]] = [OSError, UnicodeError, json.JSONDecodeError, EOFError]
    arrow = sys.modules.get("pyarrow.lib")
    if arrow is not None:
        types.append(arrow.ArrowException)
    safetensors = sys.modules.get("safetensors")
    if safetensors is not None and hasattr(safetensors, "SafetensorError"):
        types.append(safetensors.SafetensorError)
    return tuple(types)


def os_error_line(exc: OSError) -> str:
    """``cannot use PATH: reason; advice`` for an OSError."""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    where = " -> ".join(names) or "a file"
    reason = exc.strerror or first_line(exc)
    advice = ADVICE.get(exc.errno or 0, "check the path and the disk")
    return f"cannot use {where}: {reason}; {advice}"


def failure_line(exc: BaseException) -> str | None:
    """One line for a file-system or decoding failure; None for anything else."""
    if isinstance(exc, OSError) and (exc.filename or exc.errno in ADVICE):
        return os_error_line(exc)
    if isinstance(exc, decode_errors()):
        return f"cannot read a file: {first_line(exc)}"
    return None


@contextmanager
def reading(path: str | Path, what: str, remedy: str,
            also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Report a file that cannot be read or decoded in the block as a UsageError.

    what: what the file should be ("tagged dataset"); remedy: what to do ("rebuild it with
    python -m datasets_build"); also: further exception types that mean damage here (h5py
    raises KeyError and RuntimeError for damaged files).
    """
    try:
        yield
    except UsageError:
        raise
    except (*decode_errors(), *also) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UsageError(f"cannot read {what} {path}: {first_line(exc)}; {remedy}") from exc


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError in the block that names no file (a ``write`` on a full disk) names
    ``path``, the output being written, so that its one line says which file failed."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.filename2 is None:
            exc.filename = str(path)
        raise


class DamagedFile(UsageError):
    """A file whose contents differ from the checksums written with it, or hold values
    that cannot be there (NaN activations); the message names the file, the array and,
    for a store, the rows. The command line reports it in one line with exit code 2."""
