"""One writer per output: an exclusive lock beside an output while it is being written.

Output ``DIR/NAME`` is owned through the lock file ``DIR/.NAME.lock``, which holds the
owner's process id. Ownership is an ``fcntl.flock`` on that file rather than the file's mere
existence, so the kernel drops it when the owner dies, however it dies: a lock file left
behind by a killed process is stale and the next writer takes it over. A second writer
while the owner lives fails at once with a :class:`UsageError` naming the owner's pid.

Locks are re-entrant within a process (a stage that locks its output may call library
code that locks it again). :func:`output_lock` holds a lock for a ``with`` block;
:func:`claim_output` holds one until :func:`release_claims` (the command line's
``run_main`` calls it when the command ends).
"""

from __future__ import annotations

import atexit
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from headprobe.atomic import creating_beside
from headprobe.errors import UsageError

_HELD: dict[Path, OutputLock] = {}
_CLAIMED: list[OutputLock] = []


def lock_path(final: str | Path) -> Path:
    """The lock file of output ``final``: ``.NAME.lock`` beside it."""
    final = Path(final)
    return final.with_name(f".{final.name}.lock")


def _read_owner(fd: int) -> str:
    """The pid recorded in an open lock file ('' when it cannot be read)."""
    try:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing owner unlinks it)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class OutputLock:
    """The exclusive lock of one output; see the module docstring."""

    def __init__(self, final: str | Path):
        self.final = Path(final)
        self.path = lock_path(self.final)
        self.key = self.path.parent.resolve() / self.path.name
        self.fd = -1
        self.pid = 0          # the process that took the lock (forked children do not own it)
        self.depth = 0

    def _open(self) -> int:
        with creating_beside(self.final):
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def acquire(self) -> OutputLock:
        """Take the lock; UsageError naming the owner when another live process holds it."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise UsageError(f"{self.final} is being written by another process "
                                 f"(pid {owner or 'unknown'}); wait for it to finish or choose "
                                 "another output") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)   # its owner released and removed it meanwhile: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd, self.pid = fd, os.getpid()
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (only in the process that took it)."""
        if self.fd < 0 or os.getpid() != self.pid:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass   # the lock itself goes with the descriptor
        os.close(self.fd)
        self.fd = -1


def _enter(final: str | Path) -> OutputLock:
    lock = OutputLock(final)
    held = _HELD.get(lock.key)
    if held is not None and held.pid == os.getpid():
        lock = held
    else:
        _HELD[lock.key] = lock.acquire()
    lock.depth += 1
    return lock


def _leave(lock: OutputLock) -> None:
    lock.depth -= 1
    if lock.depth == 0:
        _HELD.pop(lock.key, None)
        lock.release()


@contextmanager
def output_lock(final: str | Path) -> Iterator[Path]:
    """Own output ``final`` for the ``with`` block (see the module docstring)."""
    lock = _enter(final)
    try:
        yield lock.final
    finally:
        _leave(lock)


def claim_output(final: str | Path) -> Path:
    """Own output ``final`` until :func:`release_claims` (or the end of the process)."""
    _CLAIMED.append(_enter(final))
    return Path(final)


def release_claims() -> None:
    """Release every lock taken with :func:`claim_output`."""
    while _CLAIMED:
        _leave(_CLAIMED.pop())


atexit.register(release_claims)
