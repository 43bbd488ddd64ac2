"""Join the shards of a dataset (built with ``--shard i/n``) into one dataset directory.

The merged tables are the shards' Arrow tables concatenated in shard order, which restores
the story order of a single build; only ``story_id`` (and the stories' ``token_start``) are
shifted by the stories (tokens) of the shards before. Counts, alignment and quotation
statistics are recomputed for the whole dataset from the shards' own, so the manifest
equals a single build's but for ``created``, ``command`` and ``merged``
(``merged.fingerprint`` identifies the shards it was made from: merging again over the
same complete shards keeps the dataset and succeeds without ``overwrite``; a merge of the
same build whose shards were made again is replaced; any other existing directory needs
``overwrite``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from headprobe.atomic import atomic_dir, check_target
from headprobe.errors import UsageError
from headprobe.locks import output_lock
from headprobe.manifest import command_line, now_iso, read_json, write_json
from headprobe.shards import shard_dir, shard_name, shard_pattern

SHARD_NAME = shard_pattern()
# Counts every shard has for the whole source (the others are summed).
GLOBAL_COUNTS = ("dropped_empty",)
# Manifest entries made again for the whole dataset (the others agree between shards).
REMADE = ("created", "command", "counts", "alignment", "quote_labels", "windows", "shard")


def complete_shards(out: Path) -> tuple[int, list[Path]]:
    """(n, the n shard directories in order) of ``out``'s shard directory; UsageError when
    it holds no shards, shards of several counts, or when some are missing."""
    where = shard_dir(out)
    found: dict[int, list[int]] = {}
    for path in sorted(where.iterdir()) if where.is_dir() else []:
        match = SHARD_NAME.fullmatch(path.name)
        if match and (path / "manifest.json").is_file():
            found.setdefault(int(match.group(2)), []).append(int(match.group(1)))
    if len(found) != 1:
        raise UsageError(f"{where} holds no complete shards; build them with --shard i/n"
                         if not found else f"{where} holds shards of {len(found)} splittings "
                         f"({', '.join(map(str, sorted(found)))} shards); remove the others")
    n, got = next(iter(found.items()))
    missing = sorted(set(range(n)) - set(got))
    if missing:
        names = ", ".join(f"{i}/{n}" for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UsageError(f"cannot merge {out}: shards {names}{more} are missing or unfinished; "
                         "run them first")
    return n, [where / shard_name(i, n) for i in range(n)]


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update((path / "manifest.json").read_bytes())
    return digest.hexdigest()


def merge_dataset(out: str | Path, overwrite: bool = False) -> tuple[Path, bool]:
    """Merge the complete shards of dataset ``out``; (out, whether it was kept: an existing
    merge of the same shards is left as it is)."""
    out = Path(out)
    with output_lock(out):
        n, paths = complete_shards(out)
        fingerprint = _fingerprint(paths)
        manifests = [read_json(p / "manifest.json") for p in paths]
        _check_agree(paths, manifests)
        build = manifests[0]["shard"]["build"]
        if not overwrite and _merge_record(out).get("fingerprint") == fingerprint:
            return out, True
        overwrite = check_merge_target(out, build, overwrite)
        manifest = _merged_manifest(paths, manifests)
        manifest["merged"] = {"shards": n, "build": build, "fingerprint": fingerprint,
                              "at": now_iso(), "command": command_line()}
        with atomic_dir(out, overwrite) as tmp:
            _write_tables(tmp, paths)
            (tmp / "tags.json").write_bytes((paths[0] / "tags.json").read_bytes())
            write_json(tmp / "manifest.json", manifest)
    return out, False


def check_merge_target(out: Path, build: str, overwrite: bool) -> bool:
    """Whether merging shards of ``build`` may replace ``out``: when asked to, or when it is
    a merge of the same build (some shards were made again); UsageError when it exists and
    may not be replaced."""
    overwrite = overwrite or _merge_record(out).get("build") == build
    check_target(out, overwrite, "directory")
    return overwrite


def _merge_record(out: Path) -> dict[str, Any]:
    """The ``merged`` entry of an existing dataset ``out`` ({} when none)."""
    manifest = out / "manifest.json"
    return (read_json(manifest).get("merged") or {}) if manifest.is_file() else {}


def _check_agree(paths: list[Path], manifests: list[dict[str, Any]]) -> None:
    first = manifests[0]
    for path, manifest in zip(paths[1:], manifests[1:], strict=True):
        if manifest["shard"]["build"] != first["shard"]["build"]:
            raise UsageError(f"{path} and {paths[0]} are shards of two different builds "
                             "(other settings or source); build them again with one command")
        if (path / "tags.json").read_bytes() != (paths[0] / "tags.json").read_bytes():
            raise UsageError(f"{path} and {paths[0]} disagree on the tag vocabularies")


def _merged_manifest(paths: list[Path], manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest of the whole dataset, from the shards'."""
    manifest = {k: v for k, v in manifests[0].items() if k not in REMADE}
    counts = {k: sum(m["counts"][k] for m in manifests) for k in manifests[0]["counts"]}
    counts.update({k: manifests[0]["counts"][k] for k in GLOBAL_COUNTS})
    quotes = [m["quote_labels"] for m in manifests]
    windows = dict(manifests[0]["windows"])
    windows["sentences"] = next((m["windows"]["sentences"] for m in manifests
                                 if m["windows"]["sentences"] is not None), None)
    fine = read_json(paths[0] / "tags.json")["fine"]
    return {"stage": manifests[0]["stage"], "created": now_iso(), "command": command_line(),
            **manifest, "counts": counts,
            "quote_labels": None if quotes[0] is None else {
                k: sum(q[k] for q in quotes) for k in quotes[0]},
            "alignment": _merged_alignment(paths, manifests[0]["alignment"]["rule"], fine),
            "windows": windows}


def _merged_alignment(paths: list[Path], rule: str, fine_vocab: list[str]) -> dict[str, Any]:
    """The alignment statistics of all the shards' tokens (datasets_build.align)."""
    from datasets_build.align import TokenTags, alignment_stats, rule_stats
    from datasets_build.shards import ALIGNMENT_FILE

    arrays = [np.load(p / ALIGNMENT_FILE) for p in paths]
    joined = {k: np.concatenate([a[k] for a in arrays])
              for k in ("kind", "straddle", "rule_fine", "rule_coarse")}
    n = len(joined["kind"])
    none = np.full(n, -1, np.int32)      # spans are not needed: shared_char is summed below
    part = TokenTags(none, none, np.zeros(n, bool), joined["straddle"], joined["kind"],
                     np.zeros(n, np.uint64), np.zeros(n, np.uint64), joined["rule_fine"],
                     joined["rule_coarse"], rule, sum(a["covered"] for a in arrays),
                     sum(a["visible"] for a in arrays))
    stats = alignment_stats([part])
    stats["shared_char_tokens"] = int(sum(int(a["shared_char"]) for a in arrays))
    return {"rule": rule, **stats, "rules": rule_stats([part], fine_vocab)}


def _write_tables(tmp: Path, paths: list[Path]) -> None:
    """tokens/ and stories/ of the shards, concatenated, with story ids and token starts
    shifted by those of the shards before."""
    import pyarrow as pa
    from datasets import Dataset, load_from_disk
    from datasets.table import InMemoryTable

    from datasets_build.dataset import _quiet_datasets

    tokens, stories, n_stories, n_tokens = [], [], 0, 0
    for path in paths:
        tok = load_from_disk(str(path / "tokens")).data.table
        sto = load_from_disk(str(path / "stories")).data.table
        tokens.append(_shifted(tok, "story_id", n_stories))
        sto = _shifted(sto, "story_id", n_stories)
        stories.append(_shifted(sto, "token_start", n_tokens))
        n_stories, n_tokens = n_stories + len(sto), n_tokens + len(tok)
    with _quiet_datasets():
        for name, tables in (("tokens", tokens), ("stories", stories)):
            Dataset(InMemoryTable(pa.concat_tables(tables))).save_to_disk(str(tmp / name))


def _shifted(table: Any, column: str, by: int) -> Any:
    import pyarrow.compute as pc

    index = table.schema.get_field_index(column)
    values = table.column(index)
    return table.set_column(index, table.field(index),
                            pc.add(values, by).cast(values.type))
