"""Ctrl-C with worker processes: the workers end silently, the command says one line.

A terminal sends Ctrl-C (SIGINT) to every process of the foreground job. Python turns it
into a KeyboardInterrupt in each worker process too, and each prints a traceback beside
the command's one-line ``interrupted``. Workers started through :func:`with_workers`
take SIGINT's default action instead (they end at once, printing nothing), and are
terminated when the main process stops reading from them early.

A worker ended by Ctrl-C can close its pipe before the main process handles its own
SIGINT (a signal sent to the process may be taken by another of its threads, and Python
runs the handler later); the main process then fails to read (EOFError, a broken pipe)
instead of being interrupted. :func:`with_workers` reports such a failure as the
interrupt it is.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()
_starting_workers = False
# how long a failed read from the workers waits for this process's own SIGINT to arrive
_PENDING_SECONDS = 1.0


def _after_fork_in_child() -> None:
    if _starting_workers:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def with_workers(start: Callable[[], Iterator[T]]) -> Iterator[T]:
    """Yield the items of ``start()``, an iterator whose first step forks multiprocessing
    workers, so that Ctrl-C ends the workers silently (see the module docstring).

    When the iteration stops early (Ctrl-C, an error, or the consumer closing it) any worker
    still running is terminated before the iterator is closed. A failed read while this
    process's own SIGINT is on its way (a worker ended by Ctrl-C closed its pipe first) is
    raised as KeyboardInterrupt.
    """
    global _starting_workers
    before = set(multiprocessing.active_children())
    workers: set[multiprocessing.process.BaseProcess] = set()
    sigint = _SigintSeen()
    items = start()
    try:
        _starting_workers = True
        try:
            first = next(items, _END)
        finally:
            _starting_workers = False
            workers = set(multiprocessing.active_children()) - before
        if first is _END:
            return
        yield first
        yield from items
    except BaseException as exc:
        interrupted = isinstance(exc, Exception) and sigint.wait(
            _PENDING_SECONDS if isinstance(exc, (EOFError, OSError)) else 0)
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        items.close()
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        sigint.restore()


class _SigintSeen:
    """Notes whether this process received SIGINT while Python's own handler is installed
    (in the main thread only); the handler itself still raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.seen = False
        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is signal.default_int_handler:
                self.previous = previous
                signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.seen = True
        self.previous(signum, frame)

    def wait(self, seconds: float) -> bool:
        """Whether SIGINT was seen; a SIGINT that arrives within ``seconds`` raises
        KeyboardInterrupt from here."""
        deadline = time.monotonic() + seconds
        while not self.seen and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.seen

    def restore(self) -> None:
        if self.previous is not None and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self.previous)

