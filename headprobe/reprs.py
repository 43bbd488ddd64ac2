"""One-paragraph reprs of results read back from disk: what they hold, not every number.

A notebook that prints a probe grid, a study or a dataset sees its path, its axes and the
names, shapes and dtypes of its arrays, wrapped at :data:`WIDTH` columns.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

WIDTH = 100
SHOWN = 8   # items of a long list shown before "... (N in all)"


def shape_text(value: Any) -> str:
    """``float32[2x8x16]`` for an array, ``str[40]`` for strings, the type otherwise."""
    arr = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else None
    if arr is None:
        return type(value).__name__
    kind = "str" if arr.dtype.kind in "USO" else str(arr.dtype)
    return f"{kind}[{'x'.join(map(str, arr.shape))}]"


def few(items: Sequence[Any], shown: int = SHOWN, sep: str = ", ") -> str:
    """``[a, b, ...]``: the first ``shown`` items joined by ``sep``, and how many there are
    in all when that is more."""
    items = [str(i) for i in items]
    if len(items) <= shown:
        return f"[{sep.join(items)}]"
    return f"[{sep.join(items[:shown])}{sep}... ({len(items)} in all)]"


def tags_text(tags: Sequence[str]) -> str:
    """``[a b c ...]``: tag names separated by spaces (they include ',' and ':')."""
    return few(tags, sep=" ")


def int_range(values: Sequence[int]) -> str:
    """``0..7`` for consecutive integers, else the list ``[0, 2]`` (shortened)."""
    values = [int(v) for v in values]
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return few(values)


def arrays_text(arrays: Mapping[str, Any], shown: int = SHOWN) -> str:
    """``[name:float32[2x8], ...]`` (the first ``shown`` of them)."""
    return few([f"{name}:{shape_text(value)}" for name, value in arrays.items()], shown)


def paragraph(name: str, fields: Sequence[tuple[str, str]]) -> str:
    """``Name(key=value, ...)`` wrapped into one paragraph of lines at most WIDTH wide."""
    body = ", ".join(f"{key}={value}" for key, value in fields)
    return textwrap.fill(f"{name}({body})", width=WIDTH, subsequent_indent="    ",
                         break_long_words=False, break_on_hyphens=False)
