"""What verifying reads costs ``probing fit`` (``python -m probing bench --verify``).

The same ``python -m probing fit`` runs as a child process with HEADPROBE_VERIFY=1 (every
block of the store checked against its checksum, results arrays against theirs) and with
HEADPROBE_VERIFY=0, in turn (after one untimed run that brings the store into the page
cache; the order alternates), ``--repeat`` times each, on the store of ``--stories`` stories
of the shared model (cached, see :func:`probing.bench.build_store`). The ratios of the median
CPU times (user + system, of the child) and wall times are printed; goal: CPU ratio at most
GOAL (CPU time is what other work on a shared machine disturbs least).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from headprobe.checksums import verification
from headprobe.errors import UsageError, opt
from probing.bench import build_store
from probing.bench_rss import fit_command, measured_run

GOAL = 1.10


def _timed(command: list[str], verify: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``command`` with verification on or off."""
    with verification(verify):
        usage, wall = measured_run(command)
    return usage.ru_utime + usage.ru_stime, wall


def run_verify(args: argparse.Namespace) -> int:
    """Time ``probing fit`` with and without verification; print the ratios of the medians."""
    if args.repeat < 1:
        raise UsageError(f"{opt('repeat')} must be positive")
    store = build_store(args.text, args.model, args.stories, args.cache)
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="headprobe-verify-") as tmp:
        command = fit_command(store, Path(tmp) / "probes", args) + ["--overwrite"]
        _timed(command, False)        # untimed: brings the store into the page cache
        for run in range(args.repeat):
            for verify in (True, False) if run % 2 == 0 else (False, True):
                times[verify].append(_timed(command, verify))
                cpu, wall = times[verify][-1]
                print(f"verification {'on ' if verify else 'off'}: {cpu:.1f} s CPU, "
                      f"{wall:.1f} s wall", flush=True)
    (cpu_on, wall_on), (cpu_off, wall_off) = (
        tuple(statistics.median(x[i] for x in times[v]) for i in (0, 1)) for v in (True, False))
    ratio = cpu_on / cpu_off
    print(f"probing fit on {store} ({store.stat().st_size / 2**20:,.0f} MiB), medians: "
          f"{cpu_on:.1f} s CPU ({wall_on:.1f} s wall) verified, {cpu_off:.1f} s CPU "
          f"({wall_off:.1f} s wall) not; ratio {ratio:.3f} CPU, {wall_on / wall_off:.3f} wall "
          f"(goal <= {GOAL} in CPU time, which other work on the machine disturbs least: "
          f"{'met' if ratio <= GOAL else 'NOT met'})")
    return 0
