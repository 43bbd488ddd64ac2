"""Reading UTF-8 text files: strictly, or replacing invalid bytes when asked to.

Every text source (``.txt``, ``.jsonl``, chat logs) is decoded here. By default a byte that
is not UTF-8 stops the read with a one-line error naming the file, the line and the byte
offset; ``decode_errors="replace"`` replaces such bytes with U+FFFD instead.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from headprobe.errors import UsageError, opt

DECODE_ERRORS = ("strict", "replace")
CHUNK_BYTES = 1 << 20


def check_decode_errors(errors: str) -> str:
    """``errors`` if it is one of DECODE_ERRORS; UsageError otherwise."""
    if errors not in DECODE_ERRORS:
        raise UsageError(f"unknown {opt('decode_errors')} {errors!r}; choose from "
                         f"{', '.join(DECODE_ERRORS)}")
    return errors


def iter_text(path: str | Path, errors: str = "strict",
              chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Yield the text of a UTF-8 file piece by piece (pieces end anywhere, even mid-line)."""
    decoder = codecs.getincrementaldecoder("utf-8")(check_decode_errors(errors))
    offset, lines = 0, 1
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            held = decoder.getstate()[0]     # bytes of a character cut by the last chunk
            try:
                yield decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = held + chunk
                at = offset - len(held) + exc.start
                line = lines + data[:exc.start].count(b"\n")
                raise UsageError(
                    f"{path} is not valid UTF-8 (line {line}, byte {at}: {exc.reason}); fix the "
                    f"file or pass {opt('decode_errors', 'replace')} to replace invalid "
                    "bytes") from None
            offset += len(chunk)
            lines += chunk.count(b"\n")
        try:
            yield decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UsageError(f"{path} is not valid UTF-8 (it ends inside a character); fix "
                             f"the file or pass {opt('decode_errors', 'replace')} to "
                             "replace invalid bytes") from None


def read_text(path: str | Path, errors: str = "strict") -> str:
    """The whole text of a UTF-8 file (see :func:`iter_text`)."""
    return "".join(iter_text(path, errors))


def iter_lines(path: str | Path, errors: str = "strict") -> Iterator[str]:
    """Yield the lines of a UTF-8 file, without their line breaks."""
    rest = ""
    for piece in iter_text(path, errors):
        *lines, rest = (rest + piece).split("\n")
        yield from lines
    if rest:
        yield rest
