"""Work split into shards, run one shard at a time or as Ray tasks; shared by every stage.

Shard ``i`` of ``n`` is named ``i/n`` on command lines (``--shard 3/16``); the shards of an
output ``OUT`` live in its shard directory ``OUT.shards/``, one ``shard-00003-of-00016``
file or directory each. :func:`submit_shards` runs a shard function as one Ray task per
shard (:mod:`headprobe.cluster`), with retries when a worker dies, and reports the first
failure in one line once every task has ended.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headprobe.cluster import cancel_unfinished, connect, task_env, task_failure
from headprobe.errors import UsageError, only_with, opt

SHARD_DIR_SUFFIX = ".shards"


@dataclass
class ShardRun:
    """What making sure of one shard did: its tokens, the seconds it took, whether it was
    kept from before (complete with the same settings)."""

    index: int
    n: int
    n_tokens: int
    seconds: float
    kept: bool
    n_extracted: int | None = None   # tokens this run computed, when fewer than n_tokens

    @property
    def tokens_done(self) -> int:
        """Tokens this run computed (an unfinished shard continued holds others too)."""
        return self.n_tokens if self.n_extracted is None else self.n_extracted


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' -> (i, n) with 0 <= i < n; None for no shard."""
    if not text:
        return None
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"{opt('shard')} {text!r}: expected i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"{opt('shard')} {text!r}: need 0 <= i < n")
    return i, n


def shard_dir(out: str | Path) -> Path:
    """The shard directory of output ``out``: ``OUT.shards`` beside it."""
    out = Path(out)
    return out.with_name(out.name + SHARD_DIR_SUFFIX)


def shard_name(index: int, n: int, suffix: str = "") -> str:
    """The name of shard ``index`` of ``n`` in a shard directory, e.g. shard-00003-of-00016.h5."""
    return f"shard-{index:05d}-of-{n:05d}{suffix}"


def shard_pattern(suffix: str = "") -> re.Pattern:
    """The names :func:`shard_name` gives, with the index and the count as groups 1 and 2."""
    return re.compile(r"shard-(\d+)-of-(\d+)" + re.escape(suffix))


# per-task settings of add_cluster_arguments and their defaults
TASK_SETTINGS = {"cpus_per_shard": 1.0, "gpus_per_shard": 0.0, "retries": 3}


def add_cluster_arguments(parser: Any, verb: str, gpus: bool = True, cpus_note: str = "") -> None:
    """``--ray``, ``--shards`` and each shard task's resources and retries; ``verb`` says
    what a task does (e.g. 'extract'), ``gpus`` whether tasks can ask for GPUs, ``cpus_note``
    what else the CPUs of a task set."""
    parser.add_argument("--ray", metavar="auto|ADDRESS|local:N",
                        help=f"{verb} on a Ray cluster, one task per shard, then merge into "
                        "OUT: 'auto' (the cluster this machine belongs to), a head node's "
                        "address, or local:N (a local Ray instance with N CPUs); default: no "
                        "cluster")
    parser.add_argument("--shards", type=int,
                        help="shards (Ray tasks) of a --ray run (default: none; --ray needs it)")
    parser.add_argument("--cpus-per-shard", type=float, default=TASK_SETTINGS["cpus_per_shard"],
                        help=f"CPUs of each shard task (default 1{cpus_note})")
    if gpus:
        parser.add_argument("--gpus-per-shard", type=float,
                            default=TASK_SETTINGS["gpus_per_shard"],
                            help="GPUs of each shard task (default 0; 0.5 puts two on a GPU)")
    parser.add_argument("--retries", type=int, default=TASK_SETTINGS["retries"],
                        help="retries of a shard task whose worker dies (default 3)")


def check_cluster_arguments(args: Any) -> None:
    """UsageError for the settings of Ray tasks (CPUs, GPUs, retries) given without
    ``--ray``, where nothing would use them."""
    given = [name for name, default in TASK_SETTINGS.items()
             if getattr(args, name, default) != default]
    if given and not args.ray:
        raise only_with(given, "ray", "the tasks of a cluster run")


def check_resources(n: int, cpus: float, gpus: float, retries: int) -> None:
    """Refuse a shard count, per-task resources or retries that cannot be."""
    if n < 1:
        raise UsageError(f"{opt('shards')} must be a positive number")
    if cpus <= 0 or gpus < 0:
        raise UsageError(f"{opt('cpus_per_shard')} must be positive and "
                         f"{opt('gpus_per_shard')} at least 0")
    if retries < 0:
        raise UsageError(f"{opt('retries')} must be at least 0")


def _run_tasks(ray: Any, task: Any, todo: Sequence[int], n: int, args: tuple,
               bar: Any) -> tuple[int, list[tuple[int, BaseException]]]:
    """Submit ``task(index, n, *args)`` for each shard of ``todo`` and wait for all;
    (tokens done, failures)."""
    pending = {task.remote(i, n, *args): i for i in todo}
    tokens, failures, start = 0, [], time.perf_counter()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            try:
                run = ray.get(ready[0])
            except Exception as exc:          # a task's error, raised after the others end
                failures.append((index, exc))
                continue
            tokens += run.tokens_done
            bar.update(1)
            rate = tokens / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} tokens/s")
    finally:
        cancel_unfinished(ray, pending)       # interrupted: stop what is still running
    return tokens, failures


def _raise_failure(ray: Any, failures: list[tuple[int, BaseException]], n: int) -> None:
    failures.sort(key=lambda f: f[0])
    index, exc = failures[0]
    what = f"shard {index}/{n}"
    if len(failures) > 1:
        what = f"{len(failures)} shards failed ({', '.join(f'{i}/{n}' for i, _ in failures)}); "
        what += f"shard {index}/{n}"
    raise task_failure(ray, exc, what)


def submit_shards(cluster: str, function: Callable[..., Any], todo: Sequence[int], n: int,
                  args: tuple, *, cpus: float, gpus: float = 0.0, retries: int = 3,
                  progress: bool = False, desc: str = "shards") -> int:
    """Run ``function(index, n, *args)`` for the shards ``todo`` of ``n`` as Ray tasks on
    ``cluster``; the sum of the tokens they computed (``ShardRun.tokens_done``). More GPUs per
task than the cluster has are refused before any task is sent. UsageError (or the task's own
    error) for the first shard that failed, once all have ended."""
    from tqdm import tqdm

    ray = connect(cluster)
    has = float(ray.cluster_resources().get("GPU", 0))
    if gpus > has:
        raise UsageError(f"{opt('gpus_per_shard', gpus)} asks for more GPUs than the Ray "
                         f"cluster has ({has:g}); start its workers on GPU nodes or pass "
                         f"{opt('gpus_per_shard', 0)}")
    task = ray.remote(function).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries,
                                        retry_exceptions=False, runtime_env=task_env())
    bar = tqdm(total=n, initial=n - len(todo), unit="shard", desc=desc,
               disable=not progress, file=sys.stderr)
    try:
        tokens, failures = _run_tasks(ray, task, todo, n, args, bar)
    finally:
        bar.close()
    if failures:
        _raise_failure(ray, failures, n)
    return tokens
