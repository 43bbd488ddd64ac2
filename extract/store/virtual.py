"""Checks on a merged store, whose datasets are HDF5 virtual datasets over shard files.

HDF5 reads a missing source file of a virtual dataset as fill values (zeros) without an
error, so a merged store whose shard was moved away would silently hand out zero rows.
:func:`check_sources` refuses such a store when it is opened: every shard recorded at merge
time (:mod:`extract.merge`) must exist with the row count and token table it had then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from extract.store.integrity import TOKENS_HASH
from headprobe.errors import UsageError


def _source_rows(path: Path) -> tuple[int, str]:
    """(row count, token-table fingerprint) of a shard file as it is now."""
    with h5py.File(path, "r") as f:
        return int(f.attrs["n_tokens"]), str(f.attrs.get(TOKENS_HASH, ""))


def check_sources(path: Path, attrs: dict[str, Any]) -> None:
    """UsageError naming the first shard of merged store ``path`` that is missing or changed.

    attrs: the store's decoded root attributes (a store that is no merge passes).
    """
    sources = attrs.get("merged_from") or []
    rows = attrs.get("merged_rows") or []
    hashes = attrs.get("merged_token_sha256") or [""] * len(sources)
    for rel, want_rows, want_hash in zip(sources, rows, hashes, strict=False):
        source = path.parent / rel
        if not source.is_file():
            raise UsageError(f"merged store {path} reads shard {source}, which is missing; put "
                             "the shard back beside it or merge again")
        try:
            got_rows, got_hash = _source_rows(source)
        except (OSError, KeyError, ValueError) as exc:
            raise UsageError(f"merged store {path} reads shard {source}, which cannot be read "
                             f"({str(exc).splitlines()[0]}); merge again") from exc
        if got_rows != int(want_rows) or (want_hash and got_hash != want_hash):
            what = (f"{got_rows} rows instead of {want_rows}" if got_rows != int(want_rows)
                    else "another token table")
            raise UsageError(f"merged store {path} reads shard {source}, which has changed "
                             f"since the merge ({what}); merge again")
