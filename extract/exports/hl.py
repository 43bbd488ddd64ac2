"""A store in the per-sentence layout of Hewitt and Liang's control-tasks code (and the
structural-probes code it grew from), with a CoNLL-U label file.

A sentence is one story of the store (a story cut into windows by ``datasets_build`` is one
sentence per window), in the store's order: sentence ``i`` is the i-th story (of one split
with ``split``: Hewitt and Liang's code reads train, dev and test from separate files). The
directory holds:

- ``<site>.hdf5`` per chosen site: one dataset per sentence, named ``"0"``, ``"1"``, …, of
  shape ``[layers, tokens, dim]`` in the store's dtype. ``layers`` are the chosen model
  layers in order (root attribute ``layers``); ``tokens`` are every stored token of the
  story, BOS included; ``dim`` is the site's heads concatenated, ``heads * d_head`` for
  vector sites (head ``h`` fills ``[h * d_head, (h + 1) * d_head)``; keys and values count
  key/value heads) and ``heads`` for scalar sites. Root attributes ``site``, ``layers``,
  ``dims``, ``story_ids``; each dataset's ``story_id``.
- ``tokens.conllu``: one line per token, ten tab-separated CoNLL-U columns: ID (1-based
  position in the sentence), FORM (the token as headprobe shows it, see
  :func:`headprobe.tokens.display_text`), LEMMA ``_``, UPOS (coarse tag), XPOS (fine tag),
  FEATS ``_``, HEAD ``_``, DEPREL ``_``, DEPS ``_``, MISC (``Story=…|Position=…|Quoted=…|
  Straddle=…|Split=…``); a ``# story_id = N`` line opens each sentence and a blank line ends
  it.

Stories are read in blocks of whole stories, so memory does not grow with the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import h5py
import numpy as np

from datasets_build.dataset import SPLITS
from extract.exports import BLOCK_BYTES, Selection, read_site, require_room
from extract.store import Store
from headprobe.atomic import atomic_dir
from headprobe.tokens import display_text, token_strings

LABEL_FILE = "tokens.conllu"
CONLL_COLUMNS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS",
                 "MISC")


def site_file(site: str) -> str:
    """The HDF5 file of one site: ``key.hdf5``."""
    return f"{site}.hdf5"


def story_spans(story_ids: np.ndarray) -> list[tuple[int, int, int]]:
    """(story_id, start, stop) of each story of a token table sorted by story: [n_stories]."""
    starts = np.flatnonzero(np.r_[True, story_ids[1:] != story_ids[:-1]])
    stops = np.r_[starts[1:], len(story_ids)]
    return [(int(story_ids[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def story_blocks(spans: list[tuple[int, int, int]], max_rows: int
                 ) -> Iterator[list[tuple[int, int, int]]]:
    """Consecutive stories grouped into blocks of at most ``max_rows`` rows (a longer story
    is a block of its own)."""
    block: list[tuple[int, int, int]] = []
    for span in spans:
        if block and span[2] - block[0][1] > max_rows:
            yield block
            block = []
        block.append(span)
    if block:
        yield block


def sentence_features(store: Store, site: str, layers: tuple[int, ...], start: int,
                      stop: int) -> np.ndarray:
    """Rows [start, stop) of ``site`` as [layers, rows, dim] (heads concatenated)."""
    rows = np.arange(start, stop)
    return np.stack([read_site(store, site, layer, rows).reshape(len(rows), -1)
                     for layer in layers])


def _open_site_files(tmp: Path, store: Store, selection: Selection,
                     spans: list[tuple[int, int, int]]) -> dict[str, h5py.File]:
    files = {}
    for site in selection.sites:
        f = h5py.File(tmp / site_file(site), "w")
        files[site] = f
        f.attrs["site"] = site
        f.attrs["layers"] = np.asarray(selection.layers, dtype=np.int32)
        f.attrs["story_ids"] = np.asarray([s for s, _, _ in spans], dtype=np.int64)
        f.attrs["dims"] = ("layer, token, head * d_head (heads concatenated)"
                           if len(store.shape.row_shape(site)) == 3 else "layer, token, head")
    return files


def _write_labels(out: IO[str], store: Store, table: dict[str, np.ndarray],
                  tokenizer: Any, start: int, stop: int, story_id: int) -> None:
    """One sentence of the CoNLL-U file: rows [start, stop) of the token table."""
    forms = token_strings(tokenizer, table["input_id"][start:stop])
    out.write(f"# story_id = {story_id}\n")
    for i, row in enumerate(range(start, stop)):
        misc = (f"Story={story_id}|Position={int(table['position'][row])}|"
                f"Quoted={'Yes' if table['quoted'][row] else 'No'}|"
                f"Straddle={'Yes' if table['straddle'][row] else 'No'}|"
                f"Split={SPLITS[int(table['split'][row])]}")
        fields = (str(i + 1), display_text(forms[i]), "_",
                  store.tags["coarse"][int(table["coarse_tag"][row])],
                  store.tags["fine"][int(table["fine_tag"][row])], "_", "_", "_", "_", misc)
        out.write("\t".join(fields) + "\n")
    out.write("\n")


def export_hl(store: Store, selection: Selection, tokenizer: Any, out: str | Path,
              overwrite: bool = False) -> Path:
    """Write the export of ``selection`` (see the module docstring) to the directory ``out``;
    ``tokenizer`` gives the token text of the label file."""
    table = store.tokens(["input_id", "story_id", "position", "quoted", "straddle", "split",
                          "fine_tag", "coarse_tag"])
    keep = np.zeros(store.n_tokens, dtype=bool)
    keep[selection.rows(store)] = True
    spans = [span for span in story_spans(table["story_id"]) if keep[span[1]]]
    max_rows = max(1, BLOCK_BYTES // selection.row_bytes(store))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        require_room(store, selection, tmp, out)
        files = _open_site_files(tmp, store, selection, spans)
        try:
            with open(tmp / LABEL_FILE, "w", encoding="utf-8") as labels:
                index = 0
                for block in story_blocks(spans, max_rows):
                    lo, hi = block[0][1], block[-1][2]
                    for site, f in files.items():
                        data = sentence_features(store, site, selection.layers, lo, hi)
                        for i, (sid, a, b) in enumerate(block):
                            ds = f.create_dataset(str(index + i), data=data[:, a - lo:b - lo])
                            ds.attrs["story_id"] = sid
                    for sid, a, b in block:
                        _write_labels(labels, store, table, tokenizer, a, b, sid)
                    index += len(block)
        finally:
            for f in files.values():
                f.close()
    return Path(out)
