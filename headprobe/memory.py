"""The resident memory of this process, read from /proc (Linux), for the benchmarks."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headprobe.errors import UsageError


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


def run_child(function: str, args: Sequence[str], what: str) -> dict[str, Any]:
    """Call ``function`` ("package.module.name") with string ``args`` in a fresh Python
    process (offline) and return the JSON dict it returns; UsageError naming ``what`` (e.g.
    "planning a shard of D") with the child's last error line when it fails. A fresh process
    is what makes its peak RSS its own."""
    module, name = function.rsplit(".", 1)
    code = (f"import sys, json; from {module} import {name}; "
            f"print(json.dumps({name}(*sys.argv[1:])))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise UsageError(f"{what} failed: "
                         f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
