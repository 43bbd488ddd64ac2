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
import socket
from collections.abc import Callable, Iterable
from typing import Any

from headprobe.errors import UsageError, opt

INSTALL_HINT = "pip install 'headprobe[ray]' (in a checkout: pip install -e '.[ray]')"
LOCAL = "local"
ENV_PREFIX = "HEADPROBE_"
# seconds to wait for a cluster address to accept a connection
CONNECT_TIMEOUT = 3.0
START_HINT = (f"start one with 'ray start --head' or use {opt('ray', 'local:N')}")
_ANNOUNCED = False   # whether this process has said which cluster it runs on


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


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of an address ``HOST:PORT`` or ``ray://HOST:PORT``; None for others
    (``auto``, a bare host)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """UsageError, within ``timeout`` seconds, unless something accepts connections at
    ``address`` (before Ray tries, and retries, for much longer)."""
    where = _host_port(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout):
            pass
    except OSError as exc:
        reason = (f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError)
                  else (exc.strerror or str(exc)).lower())
        raise UsageError(f"cannot reach the Ray cluster at {address!r} ({reason}); "
                         f"{START_HINT}") from None


def describe_cluster(ray: Any) -> str:
    """``Ray cluster ADDRESS: N nodes, C CPUs, G GPUs`` of the connected cluster."""
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    try:
        address = ray.get_runtime_context().gcs_address
    except AttributeError:
        address = "?"
    return (f"Ray cluster {address}: {nodes} node{'s' * (nodes != 1)}, "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")


def connect(spec: str, log: Callable[[str], None] | None = None) -> Any:
    """Connect to the cluster ``spec`` names (see the module docstring); returns ``ray``.

    An address that accepts no connection fails in one line within CONNECT_TIMEOUT
    seconds. The cluster (address, nodes, CPUs, GPUs) is said once per process, through
    ``log`` (default: printed).
    """
    global _ANNOUNCED
    ray = import_ray()
    if not ray.is_initialized():
        address, cpus = parse_cluster(spec)
        quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        logging.getLogger("ray").setLevel(logging.ERROR)
        if address != LOCAL:
            check_reachable(address)
        try:
            if address == LOCAL:
                ray.init(num_cpus=cpus, **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"cannot reach the Ray cluster at {address!r} "
                             f"({str(exc).splitlines()[0]}); {START_HINT}") from None
    if not _ANNOUNCED:
        _ANNOUNCED = True
        (log or (lambda line: print(line, flush=True)))(describe_cluster(ray))
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


def cancel_unfinished(ray: Any, refs: Iterable[Any]) -> None:
    """Force-cancel the tasks of ``refs`` that have not finished; finished ones are left
    alone, because cancelling a task whose result is arriving can abort this process (a
    race inside Ray: "Tried to complete task that was not pending")."""
    refs = list(refs)
    if refs:
        _, running = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in running:
            ray.cancel(ref, force=True)
