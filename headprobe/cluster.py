"""Running work on a Ray cluster: where the cluster is, and what a failed task means.

Ray is an optional dependency (``pip install 'headprobe[ray]'``). A cluster is named by

* ``auto``: the running cluster this machine belongs to (``ray start`` was run here);
* an address (``HOST:PORT`` of a head node, or ``ray://HOST:10001`` for Ray Client);
* ``local:N`` (or ``local``): a Ray instance started by this process with N CPUs (all of
  them), ended with it.

A process that is already connected (``ray.init`` was called, e.g. by a notebook or a test
session) keeps its connection whatever is named. Tasks see the ``HEADPROBE_*`` environment
variables of the process that submits them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from headprobe.errors import UsageError, opt

INSTALL_HINT = "pip install 'headprobe[ray]' (in a checkout: pip install -e '.[ray]')"
LOCAL = "local"
ENV_PREFIX = "HEADPROBE_"


def import_ray() -> Any:
    """The ``ray`` module; UsageError saying how to install it when it is missing."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"{opt('ray')} needs Ray, which is not installed; install it with "
                         f"{INSTALL_HINT}") from None
    return ray


def parse_cluster(spec: str) -> tuple[str, int | None]:
    """('auto' | 'local' | an address, CPUs of a local instance or None)."""
    spec = (spec or "").strip()
    if not spec:
        raise UsageError(f"{opt('ray')} needs auto, an address (HOST:PORT) or local:N")
    if spec == LOCAL or spec.startswith(LOCAL + ":"):
        count = spec.partition(":")[2]
        if count and (not count.isdigit() or int(count) < 1):
            raise UsageError(f"{opt('ray')} {spec!r}: local:N needs a positive number of CPUs")
        return LOCAL, int(count) if count else None
    return spec, None


def connect(spec: str) -> Any:
    """Connect to the cluster ``spec`` names (see the module docstring); returns ``ray``."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address, cpus = parse_cluster(spec)
    quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address == LOCAL:
            ray.init(num_cpus=cpus, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address!r} "
                         f"({str(exc).splitlines()[0]}); start one with 'ray start --head' or "
                         f"use {opt('ray', 'local:N')}") from None
    return ray


def task_env() -> dict[str, Any] | None:
    """The runtime environment of submitted tasks: this process's ``HEADPROBE_*`` variables
    (None when there are none, so Ray can reuse its workers)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    return {"env_vars": env} if env else None


def task_failure(ray: Any, exc: BaseException, what: str) -> BaseException:
    """What to raise for task ``what`` (e.g. 'shard 3/16') that failed with ``exc``.

    The task's own UsageError, named; a worker or node that died, a UsageError that says a
    rerun continues; any other error of the task, that error itself (file-system and
    decoding errors print as one line).
    """
    cause = getattr(exc, "cause", None)
    if isinstance(cause, UsageError):
        return UsageError(f"{what}: {cause.raw_message()}")
    task_errors = getattr(ray.exceptions, "RayTaskError", ())
    if isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, task_errors):
        return UsageError(f"{what} failed: its worker process or node died "
                          f"({type(exc).__name__}) after every retry; run the command again "
                          "to continue it")
    return cause if isinstance(cause, Exception) else exc
