"""What verifying reads costs ``probing fit`` (``python -m probing bench --verify``).

The same ``python -m probing fit`` runs as a child process with HEADPROBE_VERIFY=1 (every
block of the store checked against its checksum, results arrays against theirs) and with
HEADPROBE_VERIFY=0, in turn (after one untimed run that brings the store into the page
cache; the order alternates), ``--repeat`` times each, on the store of ``--stories`` stories
of the shared model (cached, see :func:`probing.bench.build_store`). The ratio of the median
times is printed; goal: at most GOAL.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from headprobe.checksums import verification
from headprobe.errors import UsageError, opt
from probing.bench import build_store
from probing.bench_rss import fit_command, peak_rss

GOAL = 1.10


def _timed(command: list[str], verify: bool) -> float:
    """Seconds ``command`` takes with verification on or off."""
    with verification(verify):
        return peak_rss(command)[1]


def run_verify(args: argparse.Namespace) -> int:
    """Time ``probing fit`` with and without verification; print the ratio of the medians."""
    if args.repeat < 1:
        raise UsageError(f"{opt('repeat')} must be positive")
    store = build_store(args.text, args.model, args.stories, args.cache)
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="headprobe-verify-") as tmp:
        command = fit_command(store, Path(tmp) / "probes", args) + ["--overwrite"]
        _timed(command, False)        # untimed: brings the store into the page cache
        for run in range(args.repeat):
            for verify in (True, False) if run % 2 == 0 else (False, True):
                times[verify].append(_timed(command, verify))
                print(f"verification {'on ' if verify else 'off'}: {times[verify][-1]:.1f} s",
                      flush=True)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    ratio = on / off
    print(f"probing fit on {store} ({store.stat().st_size / 2**20:,.0f} MiB): median "
          f"{on:.1f} s verified, {off:.1f} s not; ratio {ratio:.3f} "
          f"(goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'})")
    return 0
