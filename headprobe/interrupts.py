"""Ctrl-C with worker processes: the workers end silently, the command says one line.

A terminal sends Ctrl-C (SIGINT) to every process of the foreground job. Python turns it
into a KeyboardInterrupt in each worker process too, and each prints a traceback beside
the command's one-line ``interrupted``. Workers started through :func:`with_workers`
take SIGINT's default action instead (they end at once, printing nothing), and are
terminated when the main process stops reading from them early.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()
_starting_workers = False


def _after_fork_in_child() -> None:
    if _starting_workers:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def with_workers(start: Callable[[], Iterator[T]]) -> Iterator[T]:
    """Yield the items of ``start()``, an iterator whose first step forks multiprocessing
    workers, so that Ctrl-C ends the workers silently (see the module docstring).

    When the iteration stops early (Ctrl-C, an error, or the consumer closing it) any worker
    still running is terminated before the iterator is closed.
    """
    global _starting_workers
    before = set(multiprocessing.active_children())
    items = start()
    try:
        _starting_workers = True
        try:
            first = next(items, _END)
        finally:
            _starting_workers = False
        if first is _END:
            return
        yield first
        yield from items
    except BaseException:
        for worker in set(multiprocessing.active_children()) - before:
            worker.terminate()
        items.close()
        raise
