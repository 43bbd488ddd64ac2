"""Peak memory of ``probing fit`` on a smaller and a larger store of the same model
(``python -m probing bench --rss``).

Each fit runs as its own process (``python -m probing fit``); its peak resident set size
comes from the kernel's accounting of that child (``wait4``). Both stores are built from
the first N stories of the same text with the same model (cached, see
:func:`probing.bench.build_store`). Goal: the larger store's peak at most GOAL times the
smaller one's, i.e. memory that does not grow with the store; with ``--max-test-tokens``
(both fits score a test sample of the same size) at most GOAL_CAPPED.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from headprobe.cli import split_list
from headprobe.errors import UsageError, opt
from probing.bench import REPO, build_store

GOAL = 1.3
GOAL_CAPPED = 1.1          # with --max-test-tokens: nothing held grows with the test split


def fit_command(store: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """The ``probing fit`` command measured: default controls, the bench's sites/layers."""
    layers = "" if args.layers == "all" else args.layers
    command = [sys.executable, "-m", "probing", "fit", "--store", str(store), "--out",
               str(out), "--sites", ",".join(split_list(args.sites)), "--bootstrap", "100"]
    command += ["--layers", layers] if layers else []
    return command + (["--max-test-tokens", str(args.max_test_tokens)]
                      if args.max_test_tokens is not None else [])


def measured_run(command: list[str]) -> tuple[Any, float]:
    """Run ``command`` from the project root; (its resource usage, wall seconds).

    Raises RuntimeError when it fails.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}")
    return usage, time.perf_counter() - start


def peak_rss(command: list[str]) -> tuple[int, float]:
    """Run ``command`` from the project root; (its peak RSS in bytes, seconds).

    Raises RuntimeError when it fails.
    """
    usage, seconds = measured_run(command)
    return usage.ru_maxrss * 1024, seconds  # Linux: KiB


def run_rss(args: argparse.Namespace) -> int:
    """Build (or reuse) both stores, measure both fits and print the ratio of the peaks."""
    from extract.store import open_store

    if not 2 <= args.small < args.large:
        raise UsageError(f"{opt('small')} must be at least 2 and below {opt('large')}")
    if args.max_test_tokens is not None and args.max_test_tokens < 1:
        raise UsageError(f"{opt('max_test_tokens')} must be a positive number of tokens")
    sizes, peaks = (args.small, args.large), []
    stores = [build_store(args.text, args.model, n, args.cache) for n in sizes]
    with tempfile.TemporaryDirectory(prefix="headprobe-rss-") as tmp:
        for n, store in zip(sizes, stores, strict=True):
            with open_store(store) as opened:
                tokens = opened.n_tokens
            peak, seconds = peak_rss(fit_command(store, Path(tmp) / f"probes-{n}", args))
            peaks.append(peak)
            print(f"{n:6d} stories ({tokens:,} tokens, {store.stat().st_size / 2**20:,.0f} MiB "
                  f"store): peak RSS {peak / 2**20:7.1f} MiB in {seconds:.0f} s", flush=True)
    ratio, goal = peaks[1] / peaks[0], GOAL if args.max_test_tokens is None else GOAL_CAPPED
    print(f"peak RSS ratio {args.large}/{args.small} stories: {ratio:.2f}  "
          f"(goal <= {goal}: {'met' if ratio <= goal else 'NOT met'})")
    return 0
