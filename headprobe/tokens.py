"""How a model token is shown to people: in reports, figures and the viewer alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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


def show_tokens(strings: Sequence[str]) -> str:
    """A one-line rendering of a tokenisation: ``['Tom', ' had', ...]``."""
    return "[" + ", ".join(repr(s) for s in strings) + "]"
