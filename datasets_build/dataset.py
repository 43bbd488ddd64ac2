"""The tagged dataset on disk: writer and reader.

Layout of a dataset directory (format version 3)::

    DIR/manifest.json   provenance, tokenizer fingerprint, counts, alignment statistics
    DIR/tags.json       {"fine": [...], "coarse": [...]}: tag id -> tag name
    DIR/tokens/         Hugging Face ``datasets`` Arrow table, one row per model token,
                        sorted by (story_id, position)
    DIR/stories/        Arrow table, one row per story

Token columns: ``input_id``, ``story_id``, ``parent_id`` (the source story the token's
story was cut from, see :mod:`datasets_build.windows`), ``position`` (0 = the BOS token when
the tokenizer has one), ``char_start``/``char_end`` (span in the story text; -1 for BOS),
``fine_tag``/``coarse_tag`` (ids into tags.json), ``quoted`` (inside a quotation),
``straddle`` (the token covers more than one spaCy token), ``fine_tags``/``coarse_tags``
(every tag the token covers, as a set of tag ids: :mod:`datasets_build.tagsets`), ``split``
(0 train, 1 test). ``manifest["alignment"]["rule"]`` names the rule that chose
``fine_tag``/``coarse_tag`` among the covered spaCy tokens (:mod:`datasets_build.align`).

Story columns: ``story_id``, ``text``, ``split``, ``token_start`` (row of its first
token in tokens/), ``n_tokens``, ``parent_id`` and ``parent_char_start`` (where ``text``
starts in the text of the source story).

Version 1 had no windows and no parent columns; it is read as if every story were its own
parent, starting at its character 0. Versions 1 and 2 had no tag sets and always the rule
``first``; each token's set reads as its one tag (:func:`has_tag_sets` tells them apart).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.tagsets import DTYPE as TAG_SET_DTYPE
from datasets_build.tagsets import has_tag, tag_bits
from headprobe.errors import UsageError
from headprobe.failures import reading
from headprobe.manifest import read_json, write_json
from headprobe.rundir import make_command, require_input, run_of

FORMAT = "headprobe-dataset"
FORMAT_VERSION = 3
READS_VERSIONS = (1, 2, 3)
DAMAGED = "the directory is damaged; build it again with python -m datasets_build"
TAG_SETS_SINCE = 3
SPLITS = ("train", "test")
TOKEN_COLUMNS = {
    "input_id": np.int32, "story_id": np.int32, "parent_id": np.int32, "position": np.int32,
    "char_start": np.int32, "char_end": np.int32, "fine_tag": np.int16,
    "coarse_tag": np.int16, "quoted": np.bool_, "straddle": np.bool_,
    "fine_tags": TAG_SET_DTYPE, "coarse_tags": TAG_SET_DTYPE, "split": np.int8,
}
STORY_COLUMNS = ("story_id", "text", "split", "token_start", "n_tokens", "parent_id",
                 "parent_char_start")
# Columns earlier versions lack, and what they read as there: version 1 has no windows
# (every story is its own parent and starts at its character 0), versions 1 and 2 no tag
# sets (a token's set holds its one tag).
STAND_INS = {
    "parent_id": lambda table, rows: _column(table, "story_id", rows),
    "parent_char_start": lambda table, rows: np.zeros(
        len(table) if rows is None else rows.stop - rows.start, np.int64),
    "fine_tags": lambda table, rows: tag_bits(_column(table, "fine_tag", rows)),
    "coarse_tags": lambda table, rows: tag_bits(_column(table, "coarse_tag", rows)),
}


def has_tag_sets(manifest: dict[str, Any]) -> bool:
    """Whether a dataset (by its manifest) recorded every tag its tokens cover."""
    return int(manifest.get("format_version", 0)) >= TAG_SETS_SINCE


def split_code(split: str | None) -> int | None:
    """0/1 for 'train'/'test', None for None (all splits)."""
    if split is None or split == "all":
        return None
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    return SPLITS.index(split)


def write_dataset(out_dir: str | Path, tokens: dict[str, np.ndarray], stories: dict[str, Any],
                  tags: dict[str, list[str]], manifest: dict[str, Any]) -> None:
    """Write a dataset into the (empty, temporary) directory ``out_dir``.

    tokens: column -> array [n_tokens] (see TOKEN_COLUMNS); stories: column -> list/array
    [n_stories]; tags: {"fine": [...], "coarse": [...]}; manifest: provenance dict.
    """
    from datasets import Dataset

    out_dir = Path(out_dir)
    missing = [k for k in TOKEN_COLUMNS if k not in tokens] + [
        k for k in STORY_COLUMNS if k not in stories]
    if missing:
        raise ValueError(f"dataset columns missing: {', '.join(missing)}")
    cols = {k: np.asarray(tokens[k], dtype=t) for k, t in TOKEN_COLUMNS.items()}
    for tag, sets in (("fine_tag", "fine_tags"), ("coarse_tag", "coarse_tags")):
        if not np.all(has_tag(cols[sets], cols[tag])):
            raise ValueError(f"every token's {sets} must hold its {tag}")
    with _quiet_datasets():
        Dataset.from_dict(cols).save_to_disk(str(out_dir / "tokens"))
        Dataset.from_dict({k: list(stories[k]) for k in STORY_COLUMNS}).save_to_disk(
            str(out_dir / "stories"))
    write_json(out_dir / "tags.json", tags)
    write_json(out_dir / "manifest.json",
               {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest})


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence the ``datasets`` library's own progress bars for the duration."""
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _column(table: Any, name: str, rows: slice | None = None) -> np.ndarray:
    """One column of a saved Arrow table as a numpy array [n_rows], read in bulk; an
    earlier version's stand-in for a column it lacks (``STAND_INS``). ``rows`` (a slice
    with a start and a stop) reads only those rows: the table is memory-mapped, so the
    rest of the file is never read.

    (Indexing the ``datasets.Dataset`` by column name converts row by row, which is
    orders of magnitude slower; the tables here never carry an indices mapping.)
    """
    if name not in table.column_names and name in STAND_INS:
        return STAND_INS[name](table, rows)
    column = table.data.column(name)
    if rows is not None:
        column = column.slice(rows.start, rows.stop - rows.start)
    return column.to_numpy()


def read_rows(table_dir: Path, columns: Sequence[str], rows: slice | None = None
              ) -> dict[str, np.ndarray] | None:
    """``columns`` of the rows ``rows`` (all when None) of the Arrow table saved in
    ``table_dir``, each [rows]; None when a column is missing (an earlier version).

    The files are read one record batch at a time with plain reads, keeping only the
    batches' part inside ``rows`` and stopping after it: memory-mapping them instead
    would map (and count as resident) every page near the batch headers, the whole file.
    """
    with reading(table_dir.parent, "tagged dataset", DAMAGED):
        return _read_batches(table_dir, columns, rows)


def _read_batches(table_dir: Path, columns: Sequence[str], rows: slice | None
                  ) -> dict[str, np.ndarray] | None:
    import pyarrow as pa

    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    start, stop, at = (0, None, 0) if rows is None else (rows.start, rows.stop, 0)
    for entry in read_json(table_dir / "state.json")["_data_files"]:
        with pa.OSFile(str(table_dir / entry["filename"])) as file:
            reader = pa.ipc.open_stream(file)
            if any(c not in reader.schema.names for c in columns):
                return None
            for batch in reader:
                lo, hi = max(start - at, 0), batch.num_rows if stop is None else min(
                    stop - at, batch.num_rows)
                at += batch.num_rows
                if hi > lo:
                    for c in columns:
                        parts[c].append(np.array(batch.column(c).slice(lo, hi - lo)
                                                 .to_numpy(zero_copy_only=False)))
                if stop is not None and at >= stop:
                    break
        if stop is not None and at >= stop:
            break
    return {c: np.concatenate(v) if v else np.zeros(0) for c, v in parts.items()}


@dataclass
class TaggedDataset:
    """A dataset directory opened for reading; its tables are opened when first used."""

    path: Path
    manifest: dict[str, Any]
    tags: dict[str, list[str]]

    @cached_property
    def _tokens(self) -> Any:
        return _load_table(self.path / "tokens").with_format("numpy")

    @cached_property
    def _stories(self) -> Any:
        return _load_table(self.path / "stories")

    def __repr__(self) -> str:
        from headprobe.reprs import paragraph, tags_text

        tokenizer = self.manifest.get("tokenizer", {})
        return paragraph("TaggedDataset", [
            ("path", repr(str(self.path))), ("n_stories", str(self.n_stories)),
            ("n_tokens", str(self.n_tokens)),
            ("tokenizer", repr(tokenizer.get("name", "?"))),
            *((f"{kind}_tags", tags_text(names)) for kind, names in self.tags.items())])

    @property
    def n_tokens(self) -> int:
        """Tokens of the dataset: the sum of its stories' lengths (read without the
        token table)."""
        return int(np.asarray(self.story_table(None, ("n_tokens",))["n_tokens"],
                              dtype=np.int64).sum())

    @property
    def n_stories(self) -> int:
        return len(self._stories)

    @property
    def vocab_hash(self) -> str:
        return self.manifest["tokenizer"]["vocab_hash"]

    def token_table(self, split: str | None = None) -> dict[str, np.ndarray]:
        """Token columns as arrays [n_tokens], optionally only one split."""
        table = {k: _column(self._tokens, k).astype(t, copy=False)
                 for k, t in TOKEN_COLUMNS.items()}
        code = split_code(split)
        if code is None:
            return table
        keep = table["split"] == code
        return {k: v[keep] for k, v in table.items()}

    def token_rows(self, rows: slice, columns: Sequence[str] = tuple(TOKEN_COLUMNS)
                   ) -> dict[str, np.ndarray]:
        """Token ``columns`` of the rows ``rows`` (a slice with a start and a stop), each
        [stop - start]; only those rows and columns are read."""
        table = read_rows(self.path / "tokens", columns, rows)
        if table is None:
            table = {k: _column(self._tokens, k, rows) for k in columns}
        return {k: table[k].astype(TOKEN_COLUMNS[k], copy=False) for k in columns}

    def story_table(self, split: str | None = None,
                    columns: Sequence[str] = STORY_COLUMNS) -> dict[str, Any]:
        """Story columns (text as a list), optionally only one split; only ``columns``
        (and ``split`` to choose the rows) are read."""
        names = [*dict.fromkeys([*columns, "split"])]
        table = None if "text" in names else read_rows(self.path / "stories", names)
        if table is None:
            table = {k: (self._stories.data.column(k).to_pylist() if k == "text"
                         else _column(self._stories, k)) for k in names}
        code = split_code(split)
        keep = np.flatnonzero(np.asarray(table["split"]) == code) if code is not None else None
        if keep is None:
            return {k: table[k] for k in columns}
        return {k: ([table[k][i] for i in keep] if k == "text" else np.asarray(table[k])[keep])
                for k in columns}

    def iter_stories(self, split: str | None = None) -> Iterator[tuple[int, np.ndarray, slice]]:
        """Yield (story_id, input_ids [n], rows) per story; rows index the token table."""
        ids = _column(self._tokens, "input_id").astype(np.int64, copy=False)
        stories = self.story_table(split)
        for sid, start, n in zip(stories["story_id"], stories["token_start"],
                                 stories["n_tokens"], strict=True):
            rows = slice(int(start), int(start) + int(n))
            yield int(sid), ids[rows], rows


def load_tagged_dataset(path: str | Path) -> TaggedDataset:
    """Open a dataset directory written by datasets_build; check its format version.

    A directory whose files cannot be read or decoded is a UsageError naming it.
    """
    with reading(path, "tagged dataset", DAMAGED):
        return _open_dataset(Path(path))


def _open_dataset(path: Path) -> TaggedDataset:
    run = run_of(path, "dataset")
    require_input("dataset", path, run)
    if not (path / "manifest.json").is_file():
        raise UsageError(f"{path} is not a headprobe dataset (no manifest.json); make one "
                         f"with: {make_command('dataset', path, run)}")
    manifest = read_json(path / "manifest.json")
    if manifest.get("format") != FORMAT or manifest.get("format_version") not in READS_VERSIONS:
        raise UsageError(f"{path} has dataset format {manifest.get('format')!r} version "
                         f"{manifest.get('format_version')!r}; this headprobe reads "
                         f"{FORMAT!r} versions {', '.join(map(str, READS_VERSIONS))}")
    for table in ("tokens", "stories"):
        if not (path / table / "state.json").is_file():
            raise UsageError(f"cannot read tagged dataset {path}: its {table} table "
                             f"({path / table}) is missing; {DAMAGED}")
    return TaggedDataset(path, manifest, read_json(path / "tags.json"))


def _load_table(table_dir: Path) -> Any:
    """The ``datasets`` table saved in ``table_dir`` (memory-mapped)."""
    from datasets import load_from_disk

    with reading(table_dir.parent, "tagged dataset", DAMAGED):
        return load_from_disk(str(table_dir))
