"""WhatsApp-style chat logs: reader, per-character structure tags, synthetic generator.

This module is the format; :mod:`datasets_build.sources` opens a chat as a corpus
(``chat:PATH``, ``PATH.chat.txt``, ``chatgen:N[:SEED]``) through :func:`read_chat_source`
and :func:`chat_stories`.

A chat export is a sequence of lines ``[dd/mm/yyyy, hh:mm:ss] Sender: message``. Lines
that do not start with a timestamp continue the message above them (multi-line
messages); a timestamped line without ``Sender: `` is a system line (``Member 2
joined``). Hours may have one or two digits, seconds may be missing, years may have
two or four digits.

Instead of part-of-speech tags a chat gets a **structure tag set**: every character is
tagged with the field it belongs to. Coarse tags are the fields (``day``, ``month``,
``year``, ``hour``, ``minute``, ``second``, ``sender``, ``message``, ``separator``);
fine tags add the digit's place in its field (``minute.tens``, ``minute.ones``) and
which separator a character is (``open_bracket``, ``date_slash``, ``newline`` ...).
:func:`char_tags` returns them per character so the dataset stage aligns them to model
tokens exactly as it aligns spaCy's tags.

:func:`generate_chat` writes synthetic chats with planted regularities: timestamps
strictly increase, the reply delay depends on who sent the previous message (some
senders are answered faster), and messages use a small vocabulary.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from datasets_build.tagging import BOS, SPACE, UNK, StoryTags
from datasets_build.textfiles import read_text
from headprobe.errors import UsageError

HEADER = re.compile(
    r"^\u200e?\[(?P<d1>\d{1,2})/(?P<d2>\d{1,2})/(?P<d3>\d{2}|\d{4}), "
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?\] ")
SENDER = re.compile(r"^(?P<sender>[^:\n]{1,60}?): ")

COARSE_TAGS = ["day", "month", "year", "hour", "minute", "second", "sender", "message",
               "separator"]
_PLACES = {2: ["tens", "ones"], 4: ["thousands", "hundreds", "tens", "ones"]}
_SEPARATORS = ["open_bracket", "date_slash", "comma", "space", "time_colon", "close_bracket",
               "sender_colon", "newline"]
FINE_TAGS = (
    [f"{field}.{place}" for field in ("day", "month", "hour", "minute", "second")
     for place in _PLACES[2]]
    + [f"year.{place}" for place in _PLACES[4]]
    + ["sender", "message", "system"] + _SEPARATORS)
FINE_TO_COARSE = {t: (t.split(".")[0] if "." in t else
                      "message" if t == "system" else t if t == "sender" else "separator")
                  for t in FINE_TAGS}
FINE_TO_COARSE["message"] = "message"
STRUCTURE_TAGS = {"fine": FINE_TAGS, "coarse": COARSE_TAGS}
SEPARATOR_FOR = {"[": "open_bracket", "/": "date_slash", ",": "comma", " ": "space",
                 ":": "time_colon", "]": "close_bracket"}


@dataclass
class Message:
    """One chat message; ``start``/``end`` are its character span in the chat text."""

    time: datetime | None
    sender: str | None          # None for system lines
    text: str                   # message body; continuation lines joined with "\n"
    start: int
    end: int

    @property
    def is_system(self) -> bool:
        return self.sender is None


def _date_fields(m: re.Match, order: str) -> tuple[str, str, str]:
    if order == "dmy":
        return "d1", "d2", "d3"
    if order == "mdy":
        return "d2", "d1", "d3"
    raise UsageError(f"unknown date order {order!r}; use dmy or mdy")


def _time_of(m: re.Match, order: str) -> datetime | None:
    day, month, year = (int(m.group(g)) for g in _date_fields(m, order))
    year += 2000 if year < 100 else 0
    try:
        return datetime(year, month, day, int(m.group("hour")), int(m.group("minute")),
                        int(m.group("second") or 0))
    except ValueError:
        return None


def parse_chat(text: str, date_order: str = "dmy") -> list[Message]:
    """Messages of a chat export, in order (continuation lines joined to their message)."""
    messages: list[Message] = []
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        m = HEADER.match(body)
        if m is None:
            if messages:
                last = messages[-1]
                last.text += "\n" + body
                last.end = pos + len(body)
            elif body:
                messages.append(Message(None, None, body, pos, pos + len(body)))
        else:
            rest = body[m.end():]
            s = SENDER.match(rest)
            sender = s.group("sender") if s else None
            content = rest[s.end():] if s else rest
            messages.append(Message(_time_of(m, date_order), sender, content, pos,
                                    pos + len(body)))
        pos += len(line)
    return messages


def senders(text: str, date_order: str = "dmy") -> list[str]:
    """Distinct sender names in order of first appearance."""
    return list(dict.fromkeys(m.sender for m in parse_chat(text, date_order) if m.sender))


# ---------------------------------------------------------------- structure tags


def fine_tags(text: str, date_order: str = "dmy") -> list[str]:
    """The fine structure tag of every character of ``text``: list of len(text)."""
    tags = ["message"] * len(text)
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        for i in range(pos + len(body), pos + len(line)):
            tags[i] = "newline"
        m = HEADER.match(body)
        if m is None:  # continuation line: message text (its newline stays "newline")
            pos += len(line)
            continue
        for i in range(pos, pos + m.end()):
            tags[i] = SEPARATOR_FOR.get(text[i], "message")
        d, mo, y = _date_fields(m, date_order)
        for group, field in ((d, "day"), (mo, "month"), (y, "year"), ("hour", "hour"),
                             ("minute", "minute"), ("second", "second")):
            if m.group(group) is None:
                continue
            start, end = m.span(group)
            places = _PLACES[4] if end - start == 4 else _PLACES[2]
            places = places[len(places) - (end - start):]
            for k in range(start, end):
                tags[pos + k] = f"{field}.{places[k - start]}"
        rest_start = pos + m.end()
        s = SENDER.match(body[m.end():])
        if s is None:
            for i in range(rest_start, pos + len(body)):
                tags[i] = "system"
        else:
            for i in range(rest_start, rest_start + s.end("sender")):
                tags[i] = "sender"
            for i in range(rest_start + s.end("sender"), rest_start + s.end()):
                tags[i] = "sender_colon"
        pos += len(line)
    # newlines inside a multi-line message belong to the message
    for msg in parse_chat(text, date_order):
        for i in range(msg.start, msg.end):
            if tags[i] == "newline":
                tags[i] = "message"
    return tags


def char_tags(text: str, date_order: str = "dmy") -> tuple[np.ndarray, np.ndarray]:
    """(fine ids, coarse ids) per character, int16 [len(text)], ids into STRUCTURE_TAGS."""
    fine_index = {t: i for i, t in enumerate(FINE_TAGS)}
    coarse_index = {t: i for i, t in enumerate(COARSE_TAGS)}
    fine = fine_tags(text, date_order)
    return (np.array([fine_index[t] for t in fine], dtype=np.int16),
            np.array([coarse_index[FINE_TO_COARSE[t]] for t in fine], dtype=np.int16))


# ---------------------------------------------------------------- chats as stories


def chat_stories(text: str, max_chars: int = 120, date_order: str = "dmy") -> list[str]:
    """Split a chat into stories of consecutive whole messages of <= ``max_chars``.

    A message longer than ``max_chars`` is a story of its own.
    """
    stories: list[str] = []
    current: list[str] = []
    size = 0
    for msg in parse_chat(text, date_order):
        line = text[msg.start:msg.end]
        if current and size + 1 + len(line) > max_chars:
            stories.append("\n".join(current))
            current, size = [], 0
        size += len(line) + (1 if current else 0)
        current.append(line)
    if current:
        stories.append("\n".join(current))
    return stories


def format_time(t: datetime) -> str:
    """``dd/mm/yyyy, hh:mm:ss`` (the generator's timestamp format)."""
    return t.strftime("%d/%m/%Y, %H:%M:%S")


def format_message(t: datetime, sender: str | None, text: str) -> str:
    head = f"[{format_time(t)}] "
    return head + (f"{sender}: {text}" if sender else text)


# ---------------------------------------------------------------- synthetic chats

WORDS = ("ok yes no lol haha sure maybe later now today tomorrow tonight coffee lunch "
         "dinner game film beer call home work late soon see you me we go where when "
         "what nice good great thanks").split()
SYSTEM_LINES = ("{s} changed the group name", "{s} added a new member", "{s} left")


@dataclass
class ChatStyle:
    """Parameters of :func:`generate_chat` (defaults: the demo's planted regularities)."""

    n_senders: int = 6
    # mean reply delay in seconds after a message of sender i: Member 1 is answered
    # fastest, the last member slowest
    reply_mean: tuple[float, ...] = (20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
    long_gap_p: float = 0.03      # a pause of 1-12 hours instead of a reply
    multiline_p: float = 0.04
    system_p: float = 0.01
    max_words: int = 4
    start: datetime = datetime(2021, 3, 6, 9, 0, 0)


def sender_names(n: int) -> list[str]:
    return [f"Member {i + 1}" for i in range(n)]


def _words(rng: random.Random, style: ChatStyle) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, style.max_words)))


def generate_chat(n_messages: int, seed: int = 0, style: ChatStyle | None = None) -> str:
    """A synthetic chat of ``n_messages`` lines (plus continuation lines), deterministic.

    Timestamps strictly increase; the delay before a message is exponential with a mean
    set by the previous message's sender (``style.reply_mean``), at least one second.
    """
    style = style or ChatStyle()
    if n_messages < 1:
        raise UsageError(f"a chat needs at least one message, got {n_messages}")
    if len(style.reply_mean) < style.n_senders:
        raise UsageError("reply_mean needs one mean delay per sender")
    rng = random.Random(seed)
    names = sender_names(style.n_senders)
    t, prev, lines = style.start, 0, []
    for _ in range(n_messages):
        if rng.random() < style.long_gap_p:
            delay = rng.uniform(3600, 12 * 3600)
        else:
            delay = rng.expovariate(1.0 / style.reply_mean[prev])
        t += timedelta(seconds=max(1, int(delay)))
        if rng.random() < style.system_p:
            text = rng.choice(SYSTEM_LINES).format(s=rng.choice(names))
            lines.append(format_message(t, None, text))
            continue
        prev = rng.choice([i for i in range(style.n_senders) if i != prev])
        text = _words(rng, style)
        if rng.random() < style.multiline_p:
            text += "\n" + _words(rng, style)
        lines.append(format_message(t, names[prev], text))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- chats named by a spec


def is_chat_source(spec: str) -> bool:
    """True for ``chat:PATH``, ``chatgen:N[:SEED]`` and files ending in ``.chat.txt``."""
    return spec.startswith(("chat:", "chatgen:")) or spec.lower().endswith(".chat.txt")


def read_chat_source(source: str, decode_errors: str = "strict") -> str:
    """Chat text of ``chat:PATH``, ``PATH.chat.txt`` or ``chatgen:N[:SEED]``; a file is
    decoded as UTF-8 strictly or replacing invalid bytes (:mod:`datasets_build.textfiles`)."""
    kind, _, arg = source.partition(":")
    if kind == "chatgen":
        n, _, seed = arg.partition(":")
        try:
            n_messages, seed_value = int(n), int(seed or 0)
        except ValueError as exc:
            raise UsageError(f"bad source {source!r}; write chatgen:N or chatgen:N:SEED") from exc
        return generate_chat(n_messages, seed_value)
    path = Path(arg if kind == "chat" else source).expanduser()
    if not path.is_file():
        raise UsageError(f"chat log {str(path)!r} does not exist")
    text = read_text(path, decode_errors)
    if not any(m.time for m in parse_chat(text)):
        raise UsageError(f"{path} holds no '[dd/mm/yyyy, hh:mm:ss] Sender: text' lines")
    return text


# ---------------------------------------------------------------- dataset stage hooks


def structure_vocabularies() -> dict[str, list[str]]:
    """tags.json of a structure-tagged dataset: the chat tags plus BOS, SPACE and UNK."""
    return {"fine": FINE_TAGS + [BOS, SPACE, UNK], "coarse": COARSE_TAGS + [SPACE, BOS, UNK]}


def structure_story_tags(text: str, vocab: dict[str, list[str]] | None = None) -> StoryTags:
    """A story's structure tags as ``datasets_build.tagging.StoryTags``.

    Each "token" is a maximal run of characters with the same fine tag, so the dataset
    stage's alignment gives a model token the tag of its first non-space character and
    marks tokens that cross a field border (``"09:"``) as straddling. Nothing is quoted.
    """
    vocab = vocab or structure_vocabularies()
    fine_index = {t: i for i, t in enumerate(vocab["fine"])}
    coarse_index = {t: i for i, t in enumerate(vocab["coarse"])}
    fine = fine_tags(text)
    starts = [i for i in range(len(fine)) if i == 0 or fine[i] != fine[i - 1]]
    ends = starts[1:] + [len(fine)]
    names = [fine[s] for s in starts]
    return StoryTags(np.array(starts, dtype=np.int32), np.array(ends, dtype=np.int32),
                     np.array([fine_index[t] for t in names], dtype=np.int16),
                     np.array([coarse_index[FINE_TO_COARSE[t]] for t in names], dtype=np.int16),
                     np.zeros(len(starts), dtype=bool))
