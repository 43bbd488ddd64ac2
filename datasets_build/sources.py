"""Reading corpora: every source kind yields raw story texts, one string per story.

``open_source(spec)`` picks a reader from the source string:

=====================  ==================================================================
``chat:PATH``, ...     a chat log cut into stories of whole messages (datasets_build.chatlog)
``demo:N[:SEED]``      N synthetic stories (datasets_build.demo_corpus)
``PATH.txt``           stories separated by ``<|endoftext|>`` (TinyStories' own files)
``PATH.jsonl``         one JSON object per line with a ``text`` field
``PATH.parquet``       a table with a ``text`` column
``NAME``               a Hugging Face dataset (``datasets.load_dataset``), ``text`` column
=====================  ==================================================================

Readers are lazy (generators), so a ``limit`` on a large file reads only what it needs.
New kinds are added to ``SOURCE_KINDS``; order matters, the first match wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build import chatlog
from datasets_build.demo_corpus import demo_story
from datasets_build.textfiles import check_decode_errors, iter_lines, iter_text
from headprobe.errors import UsageError, opt
from headprobe.hub import looks_like_path, resolve_pretrained

STORY_SEPARATOR = "<|endoftext|>"
CHAT_STORY_CHARS = 120
TEXT_COLUMN = "text"
DEFAULT_SOURCE = "roneneldan/TinyStories"
LOCAL_EXAMPLE = "../shared/data/tinystories/valid-3117.txt"


@dataclass
class Source:
    """An opened corpus: ``stories()`` yields raw texts; ``info`` goes into the manifest."""

    spec: str
    kind: str
    stories: Callable[[], Iterator[str]]
    info: dict[str, Any] = field(default_factory=dict)


def read_separated(path: Path, separator: str = STORY_SEPARATOR,
                   decode_errors: str = "strict") -> Iterator[str]:
    """Yield the pieces of a UTF-8 text file split on ``separator``, reading it in chunks.

    decode_errors: "strict" or "replace" (:mod:`datasets_build.textfiles`).
    """
    buffer = ""
    for chunk in iter_text(path, decode_errors):
        buffer += chunk
        *complete, buffer = buffer.split(separator)
        yield from complete
    yield buffer


def read_jsonl(path: Path, column: str = TEXT_COLUMN,
               decode_errors: str = "strict") -> Iterator[str]:
    """Yield ``column`` of every non-blank line of a JSON-lines file."""
    for number, line in enumerate(iter_lines(path, decode_errors), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or column not in row:
            raise UsageError(f"{path}:{number}: no {column!r} field")
        yield str(row[column] or "")


def read_parquet(path: Path, column: str = TEXT_COLUMN) -> Iterator[str]:
    """Yield ``column`` of a parquet file, batch by batch."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise UsageError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from exc
    if column not in table.schema_arrow.names:
        raise UsageError(f"{path} has no {column!r} column "
                         f"(columns: {', '.join(table.schema_arrow.names)})")
    for batch in table.iter_batches(columns=[column], batch_size=1024):
        for text in batch.column(0).to_pylist():
            yield text or ""


def read_hub(name: str, split: str, limit: int | None,
             column: str = TEXT_COLUMN) -> Iterator[str]:
    """Yield ``column`` of a Hugging Face dataset split (streamed when ``limit`` is set)."""
    from datasets import load_dataset

    try:
        data = load_dataset(name, split=split, streaming=limit is not None)
    except Exception as exc:  # datasets raises many types for missing names/splits
        raise UsageError(f"cannot load dataset {name!r} split {split!r}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from exc
    for row in data:
        if column not in row:
            raise UsageError(f"dataset {name!r} has no {column!r} column")
        yield row[column] or ""


def _scan(source: Source, limit: int | None) -> Iterator[str | None]:
    """Each raw story of ``source`` stripped, None for one that is then empty, until the
    ``limit``-th non-empty one (empty stories after it are not read)."""
    kept = 0
    for raw in source.stories():
        if limit is not None and kept >= limit:
            return
        text = raw.strip()
        kept += bool(text)
        yield text or None


def _no_story(source: Source) -> UsageError:
    return UsageError(f"source {source.spec!r} holds no non-empty story")


def collect_stories(source: Source, limit: int | None = None) -> tuple[list[str], int]:
    """Stripped non-empty stories (the first ``limit`` of them) and the number dropped."""
    texts, dropped = [], 0
    for text in _scan(source, limit):
        if text is None:
            dropped += 1
        else:
            texts.append(text)
    if not texts:
        raise _no_story(source)
    return texts, dropped


@dataclass(frozen=True)
class StoryStream:
    """The stories :func:`collect_stories` would return, read from the source as a stream
    each time they are iterated, never held together: what a shard of a build reads."""

    source: Source
    limit: int | None = None

    def __iter__(self) -> Iterator[str]:
        return (text for text in _scan(self.source, self.limit) if text is not None)

    def count(self) -> tuple[int, int]:
        """(non-empty stories, empty ones dropped), as :func:`collect_stories` counts them."""
        kept = dropped = 0
        for text in _scan(self.source, self.limit):
            kept += text is not None
            dropped += text is None
        if not kept:
            raise _no_story(self.source)
        return kept, dropped

    def run(self, first: int, end: int) -> list[str]:
        """Stories ``first`` to ``end - 1`` (numbered from 0 as in the list); the source is
        read up to the last of them."""
        texts = []
        for i, text in enumerate(self):
            if i >= end:
                break
            if i >= first:
                texts.append(text)
        return texts


def _chat(spec: str, limit: int | None = None, max_chars: int = CHAT_STORY_CHARS,
          decode_errors: str = "strict", **_: Any) -> Source:
    """A chat cut into stories of consecutive whole messages, at most ``max_chars`` each
    (:func:`datasets_build.chatlog.chat_stories`); ``info["senders"]`` names its senders."""
    text = chatlog.read_chat_source(spec, decode_errors)
    stories = chatlog.chat_stories(text, max_chars)
    if limit is not None:
        stories = stories[:limit]
    info = {"chat": spec, "messages": len(chatlog.parse_chat(text)),
            "senders": chatlog.senders(text), "story_max_chars": max_chars}
    return Source(spec, "chat", lambda: iter(stories), info)


def _demo(spec: str, **_: Any) -> Source:
    parts = spec.split(":")
    try:
        n = int(parts[1])
        seed = int(parts[2]) if len(parts) > 2 else 0
        if n < 1 or len(parts) > 3:
            raise ValueError
    except (ValueError, IndexError) as exc:
        raise UsageError(f"bad demo source {spec!r}; write demo:N or demo:N:SEED "
                         "with N >= 1 (e.g. demo:200)") from exc
    return Source(spec, "demo", lambda: (demo_story(i, seed) for i in range(n)),
                  {"stories": n, "demo_seed": seed})


def _existing_file(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(f"source file {spec!r} does not exist")
    return path


def _text_file(spec: str, decode_errors: str = "strict", **_: Any) -> Source:
    path = _existing_file(spec)
    return Source(spec, "txt", lambda: read_separated(path, decode_errors=decode_errors),
                  {"path": str(path.resolve()), "separator": STORY_SEPARATOR,
                   "decode_errors": decode_errors})


def _jsonl_file(spec: str, decode_errors: str = "strict", **_: Any) -> Source:
    path = _existing_file(spec)
    return Source(spec, "jsonl", lambda: read_jsonl(path, decode_errors=decode_errors),
                  {"path": str(path.resolve()), "column": TEXT_COLUMN,
                   "decode_errors": decode_errors})


def _parquet_file(spec: str, **_: Any) -> Source:
    path = _existing_file(spec)
    return Source(spec, "parquet", lambda: read_parquet(path),
                  {"path": str(path.resolve()), "column": TEXT_COLUMN})


def _hub_dataset(spec: str, split: str = "validation", limit: int | None = None,
                 **_: Any) -> Source:
    if looks_like_path(spec) or Path(spec).suffix:
        raise UsageError(f"unknown source {spec!r}: not an existing file, a demo:N corpus "
                         "or a Hugging Face dataset name (local files end in .txt, .jsonl "
                         "or .parquet)")
    try:
        resolve_pretrained(spec, "dataset", repo_type="dataset", example=LOCAL_EXAMPLE)
    except UsageError as exc:
        raise UsageError(f"dataset {spec!r} is not a local file and the Hugging Face Hub "
                         f"cannot be reached; pass a local file instead, e.g. "
                         f"{opt('source', LOCAL_EXAMPLE)}") from exc
    return Source(spec, "hub", lambda: read_hub(spec, split, limit),
                  {"name": spec, "split": split, "column": TEXT_COLUMN})


def _is_demo(spec: str) -> bool:
    return spec.startswith("demo:")


def _suffix(*suffixes: str) -> Callable[[str], bool]:
    return lambda spec: spec.lower().endswith(suffixes)


def _anything(spec: str) -> bool:
    return True


# (matches(spec), open(spec, split=..., limit=...) -> Source), tried in order. Chat logs
# come before ".txt" because their files end in ".chat.txt".
SOURCE_KINDS: list[tuple[Callable[[str], bool], Callable[..., Source]]] = [
    (chatlog.is_chat_source, _chat),
    (_is_demo, _demo),
    (_suffix(".txt"), _text_file),
    (_suffix(".jsonl"), _jsonl_file),
    (_suffix(".parquet"), _parquet_file),
    (_anything, _hub_dataset),
]


def open_source(spec: str, split: str = "validation", limit: int | None = None,
                decode_errors: str = "strict") -> Source:
    """Pick the reader for ``spec`` (see the module docstring) and open it.

    decode_errors: how text files treat bytes that are not UTF-8: "strict" (refused) or
    "replace" (:mod:`datasets_build.textfiles`).
    """
    if not spec:
        raise UsageError(f"empty {opt('source')}")
    check_decode_errors(decode_errors)
    for matches, opener in SOURCE_KINDS:
        if matches(spec):
            return opener(spec, split=split, limit=limit, decode_errors=decode_errors)
    raise UsageError(f"unknown source {spec!r}")  # unreachable while _anything is last
