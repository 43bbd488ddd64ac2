"""Progress bars on stderr for the steps of a command that take more than a few seconds.

A bar shows only where stderr is a terminal (tqdm's ``disable=None``), so logs, pipes and
tests see nothing of it; the command's own report goes to stdout as before.
"""

from __future__ import annotations

import sys
from typing import Any


def progress(total: int, desc: str, unit: str = "story") -> Any:
    """A tqdm bar over ``total`` ``unit``s, named ``desc``, on stderr (a context manager;
    ``update(n)`` moves it). It disappears when done."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False,
                dynamic_ncols=True, mininterval=0.5)
