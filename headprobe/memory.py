"""The resident memory of this process, read from /proc (Linux), for the benchmarks."""

from __future__ import annotations

import resource
from pathlib import Path


def _status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status in MiB (None where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB.

    Reads VmHWM from /proc (Linux): getrusage's ru_maxrss survives exec, so a fresh child
    process would report its parent's peak.
    """
    peak = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak is None else peak


def current_rss_mb() -> float:
    """Resident memory of this process now, MiB (VmRSS; 0 where /proc is missing)."""
    return _status_mb("VmRSS") or 0.0
