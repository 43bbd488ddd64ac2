"""Extraction on a Ray cluster: one Ray task per shard, then the merge.

:func:`extract_on_ray` splits the stories into n shards (:mod:`extract.shards`) and submits
one task per shard that is not complete yet, with ``cpus_per_shard`` CPUs and
``gpus_per_shard`` GPUs as its resources. Each task runs :func:`extract.shards.extract_shard`
on a worker: it writes its shard file in the output's shard directory under a temporary
name and renames it when complete, or continues the unfinished file an earlier attempt
left. A task whose worker or node dies is retried ``retries`` times by Ray (each retry
continues the file); a rerun of the whole command keeps the shards that are complete.
When every shard is complete they are merged into ``out`` through HDF5 virtual datasets.

The shard files must be where the driver can read them: on one machine, or on a file
system every node shares (NFS, Lustre ...), the usual layout of a cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets_build.dataset import load_tagged_dataset
from extract.merge import merge_stores
from extract.plan import group_tokens_for, shard_tokens
from extract.shards import (
    ShardRun,
    extract_shard,
    kept_shard_problem,
    shard_file,
    shard_options,
    shard_state,
    shard_token_hashes,
    weights_hash,
)
from headprobe.atomic import check_target
from headprobe.cluster import import_ray
from headprobe.devices import AUTO
from headprobe.errors import UsageError, opt
from headprobe.hub import resolve_pretrained
from headprobe.locks import output_lock
from headprobe.shards import check_resources, submit_shards


@dataclass
class ClusterRun:
    """What :func:`extract_on_ray` did: shards extracted now and kept from before, the
    tokens extracted now (not those an unfinished shard already held) and the seconds it
    took."""

    out: Path
    n_shards: int
    kept: int
    n_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / max(self.seconds, 1e-9)


def shard_device(device: str | None, gpus_per_shard: float) -> str:
    """The device a shard task runs on: cuda when it is given GPUs (for None/'auto'), cpu
    otherwise; a CUDA device asked for without GPUs per shard is refused."""
    if device in (None, AUTO):
        return "cuda" if gpus_per_shard > 0 else "cpu"
    if str(device).startswith("cuda") and gpus_per_shard <= 0:
        raise UsageError(f"{opt('device', device)} on a cluster needs GPUs for each shard: "
                         f"pass {opt('gpus_per_shard')} (e.g. 1, or 0.5 for two shards per GPU)")
    return str(device)


def driver_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings the driver checks a shard's options with: on the CPU, because the
    device (and ``--batch-tokens auto``, sized from its memory) is checked and resolved on
    the workers that run the shard tasks, which a driver without a GPU cannot do."""
    return {**settings, "device": "cpu"}


def _check_resources(n: int, cpus: float, gpus: float, retries: int, model: Any) -> None:
    check_resources(n, cpus, gpus, retries)
    if not isinstance(model, (str, Path)):
        raise UsageError("a model given as a loaded object cannot be sent to cluster workers; "
                         "give its name or directory")


def _shard_task(index: int, n: int, dataset_dir: str, model: str, out: str, threads: int,
                overwrite: bool, settings: dict[str, Any]) -> ShardRun:
    """One Ray task: shard ``index`` of ``n`` of ``out``, with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    return extract_shard(dataset_dir, model, out, index, n, overwrite=overwrite, **settings)


def _shards_to_run(dataset_dir: Path, model: Any, out: Path, n: int, overwrite: bool,
                   settings: dict[str, Any]) -> list[int]:
    """The shards not complete yet (all with ``overwrite``); UsageError naming a complete
    shard that was extracted with other settings, before any work starts."""
    if overwrite:
        return list(range(n))
    states = {i: shard_state(out, i, n) for i in range(n)}
    complete = [i for i, state in states.items() if state == "complete"]
    if complete:
        hashes = shard_token_hashes(dataset_dir, settings["split"], n, complete,
                                    settings["group_tokens"])
        weights = weights_hash(model)
        for i in complete:
            options = shard_options(dataset_dir, model, out, i, n, "complete",
                                    **driver_settings(settings))
            problem = kept_shard_problem(options.out, options, hashes[i], weights)
            if problem:
                raise UsageError(f"{options.out} was extracted {problem}; pass "
                                 f"{opt('overwrite', True)} to extract every shard again")
    return [i for i in range(n) if i not in complete]


def extract_on_ray(dataset_dir: str | Path, model: Any, out: str | Path, shards: int,
                   cluster: str = "local", *, cpus_per_shard: float = 1.0,
                   gpus_per_shard: float = 0.0, retries: int = 3, overwrite: bool = False,
                   progress: bool = False, **settings: Any) -> ClusterRun:
    """Extract ``dataset_dir`` with ``model`` into ``out`` as ``shards`` Ray tasks, then merge.

    cluster: 'auto', an address or 'local:N' (:mod:`headprobe.cluster`); settings: those of
    :func:`extract.extractor.extract_store` (split, sites, dtype, device, model_dtype ...).
    Complete shards of an earlier run are kept (``overwrite`` extracts them again).
    """
    _check_resources(shards, cpus_per_shard, gpus_per_shard, retries, model)
    import_ray()                                   # missing Ray fails before any work
    dataset_dir, out = Path(dataset_dir).resolve(), Path(out).resolve()
    resolve_pretrained(str(model), "model")          # a missing model fails here, not per task
    model = str(Path(model).resolve()) if Path(str(model)).is_dir() else str(model)
    settings = {**settings, "device": shard_device(settings.get("device"), gpus_per_shard)}
    options = shard_options(dataset_dir, model, out, 0, shards, "complete",
                            **driver_settings(settings))
    settings.update(split=options.split, group_tokens=group_tokens_for(options))
    with output_lock(out):
        check_target(out, overwrite, "file")
        shard_tokens(load_tagged_dataset(dataset_dir), options.split, shards)
        todo = _shards_to_run(dataset_dir, model, out, shards, overwrite, settings)
        start = time.perf_counter()
        args = (str(dataset_dir), model, str(out), max(1, int(cpus_per_shard)), overwrite,
                settings)
        tokens = submit_shards(cluster, _shard_task, todo, shards, args, cpus=cpus_per_shard,
                               gpus=gpus_per_shard, retries=retries, progress=progress,
                               desc="extract shards") if todo else 0
        seconds = time.perf_counter() - start
        merge_stores(out, [shard_file(out, i, shards) for i in range(shards)],
                     overwrite=overwrite)
    return ClusterRun(out, shards, shards - len(todo), tokens, seconds)
