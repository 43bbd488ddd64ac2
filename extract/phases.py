"""Where an extraction's wall time goes: cheap per-phase timers.

A :class:`PhaseClock` adds up ``time.perf_counter`` intervals under a phase name. The
extractor times its phases with one (:data:`PHASES`), and the store keeps the sums in its
``extract_phases`` attribute; they change nothing that is computed. On an asynchronous
device (CUDA) the forward phases only count the time to queue the work, which then shows
up in the copies that wait for it; the breakdown is meant for CPUs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# name -> meaning, in the order the bench prints them.
PHASES = {
    "forward": "the model's blocks, less the key/query projections",
    "projection": "the input norm and the fused key/query/value projection",
    "copies": "casts to the storage dtype, copies to the host and into blocks",
    "write": "compressing and writing blocks (writer thread, beside the model or while it waits)",
    "checksums": "checksums of written blocks (writer thread)",
    "wait": "the model waiting for the writer thread",
}


class PhaseClock:
    """Seconds per phase, added from any thread.

    ``with clock.phase("copies"): ...`` adds the time of the block; ``clock.seconds`` maps
    phase name -> seconds so far.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def rounded(self) -> dict[str, float]:
        """The sums in :data:`PHASES` order, in seconds to the millisecond."""
        return {name: round(self.seconds.get(name, 0.0), 3) for name in PHASES}
