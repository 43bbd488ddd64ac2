"""A story: the unit every stage works in (tagging, batching, splits, case studies).

A token table (a dataset's or a store's) holds one row per token, sorted by
(story_id, position), so a story's tokens are the consecutive rows
``[start, start + n_tokens)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from headprobe.errors import UsageError


@dataclass(frozen=True)
class Story:
    """One story of a token table: its id, its first row and its token ids in position order."""

    story_id: int
    start: int
    input_ids: np.ndarray = field(repr=False)   # [n_tokens] int64

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def stop(self) -> int:
        return self.start + self.n_tokens

    @property
    def rows(self) -> np.ndarray:
        """Row indices [n_tokens] of the story's tokens in its table."""
        return np.arange(self.start, self.stop)


def stories_from_table(table: Mapping[str, np.ndarray], rows: np.ndarray | None = None
                       ) -> list[Story]:
    """Group a token table (columns story_id, position, input_id; each [n]) into stories.

    rows: the table rows the columns come from (default 0..n-1); each story's rows must
    be consecutive, as they are in every headprobe table.
    """
    n = len(table["story_id"])
    rows = np.arange(n) if rows is None else np.asarray(rows)
    order = np.lexsort((table["position"], table["story_id"]))
    sid = table["story_id"][order]
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if n else np.zeros(0, int)
    ends = np.r_[starts[1:], n] if n else np.zeros(0, int)
    stories = []
    for a, b in zip(starts, ends, strict=True):
        story_rows = rows[order[a:b]]
        if np.any(np.diff(story_rows) != 1):
            raise ValueError(f"the rows of story {int(sid[a])} are not consecutive")
        stories.append(Story(int(sid[a]), int(story_rows[0]),
                             np.asarray(table["input_id"][order[a:b]], dtype=np.int64)))
    return stories


def read_stories(store: Any, split: str | None = None) -> list[Story]:
    """Every story of an activation store (optionally one split), rows being store rows."""
    index = store.select(split=split) if split not in (None, "all") else None
    table = store.tokens(["story_id", "position", "input_id"], index=index)
    rows = np.arange(store.n_tokens) if index is None else index
    return stories_from_table(table, rows)


def find_story(stories: list[Story], story_id: int) -> Story:
    """The story with id ``story_id``; a ValueError naming the ids held otherwise."""
    for story in stories:
        if story.story_id == int(story_id):
            return story
    if not stories:
        raise UsageError("the store holds no tokens")
    ids = [s.story_id for s in stories]
    raise UsageError(f"story {story_id} is not in the store (it holds {len(ids)} stories, "
                     f"ids {min(ids)}..{max(ids)})")


def row_blocks(stories: Sequence[Story], max_rows: int = 2**16
               ) -> Iterator[tuple[int, int, list[int]]]:
    """Stories grouped, in row order, into blocks whose rows span at most ``max_rows`` (a
    longer story is a block of its own), so that a study reads a store a bounded block at a
    time: yields (first row, one past the last row, indices into ``stories``)."""
    block: list[int] = []
    lo = hi = 0
    for i in sorted(range(len(stories)), key=lambda k: stories[k].start):
        story = stories[i]
        if block and story.stop - lo > max_rows:
            yield lo, hi, block
            block = []
        if not block:
            lo = story.start
        block.append(i)
        hi = max(hi, story.stop)
    if block:
        yield lo, hi, block
