"""How a model token is shown to people: in reports, figures and the viewer alike."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

# Characters shown as a symbol rather than as themselves wherever a token is shown.
SYMBOLS = {"\n": "\u21b5", "\t": "\u21e5"}
# Unicode categories of characters that show nothing (controls, format characters, line
# and paragraph separators, unassigned and private code points): shown as their escape.
INVISIBLE = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Readable text of each token id, decoded on its own.

    A token that is only part of a multi-byte character decodes to U+FFFD (or nothing);
    it is shown as the tokenizer's own symbol for it instead (``Ġ``-style byte pieces).
    """
    out = []
    for tid in ids:
        text = tokenizer.decode([int(tid)])
        if "\ufffd" in text or text == "":
            text = str(tokenizer.convert_ids_to_tokens(int(tid)))
        out.append(text)
    return out


def display_text(text: str) -> str:
    """A token's text as reports, figures and the viewer show it: a newline as \u21b5, a
    tab as \u21e5, every other invisible character as its escape (``\\r``, ``\\x1b``,
    ``\\u200b``); everything else as it is."""
    out = []
    for ch in text:
        if ch in SYMBOLS:
            out.append(SYMBOLS[ch])
        elif unicodedata.category(ch) in INVISIBLE:
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


def show_tokens(strings: Sequence[str]) -> str:
    """A one-line rendering of a tokenisation: ``['Tom', ' had', ...]``."""
    return "[" + ", ".join(repr(s) for s in strings) + "]"
