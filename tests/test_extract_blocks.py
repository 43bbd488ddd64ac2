"""Rows placed straight into the writer's blocks (extract.blocks)."""

import numpy as np
import pytest

from extract.blocks import BlockAssembler


def _rows(start, n):
    """Values that name their row: key [n, 2, 3, 4] float32, argmax [n, 2, 3] int64."""
    rows = np.arange(start, start + n)
    key = np.broadcast_to(rows[:, None, None, None], (n, 2, 3, 4)).astype(np.float32)
    argmax = np.broadcast_to(rows[:, None, None], (n, 2, 3)).astype(np.int64)
    return {"key": key, "argmax": argmax}


def test_stories_placed_out_of_order_come_out_as_whole_blocks_in_order():
    blocks = BlockAssembler(0, 8, 30, "float16")
    out = []
    # group 1: rows 0-12 in stories 0-4, 5-12, arriving longest first
    blocks.put(5, _rows(5, 8))
    assert list(blocks.complete(5)) == []         # rows 0-4 are still missing
    blocks.put(0, _rows(0, 5))
    out += blocks.complete(13)                     # block 0-7 only; 8-15 waits for 13-15
    assert [start for start, _ in out] == [0]
    # group 2: rows 13-29, one story spanning three blocks
    blocks.put(13, _rows(13, 17))
    out += blocks.complete(30)
    assert [start for start, _ in out] == [0, 8, 16, 24]
    assert [len(block["key"]) for _, block in out] == [8, 8, 8, 6]
    for start, block in out:
        assert block["key"].dtype == np.float16 and block["argmax"].dtype == np.int32
        want = np.arange(start, start + len(block["key"]))
        np.testing.assert_array_equal(block["key"][:, 1, 2, 3], want)
        np.testing.assert_array_equal(block["argmax"][:, 0, 1], want)
    assert list(blocks.complete(30)) == []        # each block is handed on once


def test_rows_before_the_first_row_and_past_the_end_are_dropped():
    blocks = BlockAssembler(16, 8, 28, "float32")
    blocks.put(10, _rows(10, 12))                  # rows 10-15 were written before
    blocks.put(22, _rows(22, 10))                  # rows 28-31 lie past the store
    out = list(blocks.complete(32))
    assert [start for start, _ in out] == [16, 24]
    np.testing.assert_array_equal(out[1][1]["key"][:, 0, 0, 0], np.arange(24, 28))


def test_writing_must_start_on_a_chunk_boundary():
    with pytest.raises(ValueError, match="multiple of 8"):
        BlockAssembler(12, 8, 30, "float16")
