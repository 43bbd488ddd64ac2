"""Where the (site, layer) blocks of a probe grid are fitted: in this process, in a pool of
local processes (joblib), or as tasks on a Ray cluster (:mod:`headprobe.cluster`).

Every block is fitted the same way wherever it runs (one thread, the same chunks), so
the results do not depend on how the blocks were spread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from headprobe.cluster import cancel_unfinished, connect, task_env, task_failure

RETRIES = 2          # a block whose worker or node died is run again this many times

def map_blocks(func: Callable[..., Any], blocks: Sequence[tuple], shared: tuple = (),
               jobs: int = 1, ray: str | None = None) -> Iterator[Any]:
    """``func(*block, *shared)`` for every block, yielded in the order of ``blocks``.

    jobs: local worker processes (1: in this process); ray: a cluster ('auto', an address
    or 'local:N'), one task per block, instead of local processes. ``shared`` is sent to
    each worker once where the engine allows (Ray's object store).
    """
    if ray:
        yield from _on_ray(func, blocks, shared, ray)
    elif jobs > 1 and len(blocks) > 1:
        from joblib import Parallel, delayed

        pool = Parallel(n_jobs=min(jobs, len(blocks)), backend="loky", return_as="generator")
        yield from pool(delayed(func)(*block, *shared) for block in blocks)
    else:
        for block in blocks:
            yield func(*block, *shared)


def _on_ray(func: Callable[..., Any], blocks: Sequence[tuple], shared: tuple,
            cluster: str) -> Iterator[Any]:
    """One Ray task (one CPU) per block, sent its block and references to ``shared``
    (the grid's blocks read the store by path: nothing of it travels); a task whose worker
    died is retried RETRIES times, and a failure is raised in one line naming its block."""
    ray = connect(cluster)
    task = ray.remote(func).options(num_cpus=1, max_retries=RETRIES, retry_exceptions=False,
                                    runtime_env=task_env())
    refs = [ray.put(value) for value in shared]
    pending = [task.remote(*block, *refs) for block in blocks]
    done = 0
    try:
        for ref in pending:
            try:
                result = ray.get(ref)
            except Exception as exc:
                done += 1                     # this task has ended: it is not cancelled
                raise task_failure(ray, exc, f"block {block_name(blocks[done - 1])}") from None
            done += 1
            yield result
    finally:
        cancel_unfinished(ray, pending[done:])   # stopped early: end what still runs


def block_name(block: tuple) -> str:
    """How messages name a block (its first two items: site and layer)."""
    return f"{block[0]} layer {block[1]}"
