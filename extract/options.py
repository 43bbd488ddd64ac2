"""The settings of one extraction, checked once, before anything is loaded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.dataset import SPLITS
from extract.models import DEFAULT_MODEL
from extract.store.codec import DEFAULT_COMPRESSION, parse_compression
from extract.store.integrity import resumable_rows
from extract.store.schema import DEFAULT_SITES, check_dtype, check_sites
from headprobe.atomic import check_target
from headprobe.devices import DEFAULT_MODEL_DTYPE, check_model_dtype, resolve_device
from headprobe.errors import UsageError, opt
from headprobe.rundir import require_input, run_of
from headprobe.shards import parse_shard

DEFAULT_BATCH_TOKENS = 1024   # fastest on CPU for ~200-token stories (cache-sized)
FORWARD_PATHS = ("auto", "fast", "general")
AUTO = "auto"
PARTIAL_SUFFIX = ".partial"


def partial_path(out: str | Path) -> Path:
    """Where an unfinished store is written: ``OUT.partial``."""
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def parse_batch_tokens(value: int | str) -> int | str:
    """A positive number of padded tokens per batch, or 'auto'; else UsageError."""
    if value == AUTO:
        return AUTO
    try:
        tokens = int(value)
    except (TypeError, ValueError):
        tokens = 0
    if tokens < 1:
        raise UsageError(f"{opt('batch_tokens')} must be a positive number or auto, "
                         f"not {value!r}")
    return tokens


@dataclass
class ExtractOptions:
    """What :func:`extract.extractor.extract_store` was asked to do, checked when made.

    Paths become ``Path``; ``sites`` loses repeats; ``shard`` becomes (i, n) or None;
    ``device`` None or 'auto' becomes cuda when available, else cpu. ``dtype`` is the
    storage dtype of float sites, ``model_dtype`` the dtype the model computes in.
    """

    dataset_dir: Path
    model: Any = DEFAULT_MODEL      # hub name, local HF directory, or a loaded HF causal LM
    out: Path = Path()
    split: str = "all"
    sites: Sequence[str] = DEFAULT_SITES
    dtype: str = "float16"
    batch_tokens: int | str = DEFAULT_BATCH_TOKENS   # or 'auto' (extract.feed)
    device: str | None = "cpu"
    model_dtype: str = DEFAULT_MODEL_DTYPE
    reinit_seed: int | None = None
    resume: bool = False
    overwrite: bool = False
    shard: str | tuple[int, int] | None = None
    path: str = "auto"
    chunk_rows: int | None = None
    group_tokens: int | None = None
    compression: str | int = DEFAULT_COMPRESSION
    progress: bool = False
    batch_tokens_auto: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.dataset_dir, self.out = Path(self.dataset_dir), Path(self.out)
        self.check_output()
        self.batch_tokens = parse_batch_tokens(self.batch_tokens)
        parse_compression(self.compression)
        for name in ("chunk_rows", "group_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"{opt(name)} must be at least 1, got {getattr(self, name)}")
        self.sites = check_sites(self.sites)
        check_dtype(self.dtype)
        check_model_dtype(self.model_dtype)
        self.device = resolve_device(self.device)
        if self.batch_tokens == AUTO:
            from extract.feed import auto_batch_tokens

            self.batch_tokens_auto = True
            self.batch_tokens = auto_batch_tokens(self.device, self.model, self.sites,
                                                  DEFAULT_BATCH_TOKENS)
        if isinstance(self.shard, str) or self.shard is None:
            self.shard = parse_shard(self.shard)
        require_input("dataset", self.dataset_dir, run_of(self.dataset_dir, "dataset"))
        if self.split not in (*SPLITS, "all"):
            raise UsageError(f"unknown {opt('split')} {self.split!r}; choose from train, test, "
                             "all")
        if self.path not in FORWARD_PATHS:
            raise UsageError(f"unknown forward {opt('path')} {self.path!r}; choose auto, fast "
                             "or general")

    @property
    def partial(self) -> Path:
        return partial_path(self.out)

    def check_output(self) -> None:
        """A file name for ``out``; an existing output or partial run only when asked for."""
        out, partial = self.out, self.partial
        if not str(out) or out.suffix == "":
            raise UsageError(f"output {str(out)!r} should be a file name such as activations.h5")
        for path in (out, partial):
            check_target(path, True, "file")
        if out.exists() and not (self.overwrite or self.resume):
            raise UsageError(f"{out} already exists; pass {opt('overwrite', True)} to replace it")
        if (partial.exists() and not (self.resume or self.overwrite)
                and resumable_rows(partial)):
            raise UsageError(f"{partial} holds an interrupted run; pass {opt('resume', True)} to "
                             f"continue it or {opt('overwrite', True)} to start again")
        if self.resume and not partial.exists():
            if out.exists():
                raise UsageError(f"{out} is already complete; nothing to resume")
            raise UsageError(f"nothing to resume: {partial} does not exist")
