"""Optional packages of the exports and the reading guide (the ``interop`` extra).

headprobe itself never needs them: each is imported only where an export asks for it, and
a missing one is a one-line :class:`~headprobe.errors.UsageError` naming the install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from headprobe.errors import UsageError

INSTALL = "pip install 'headprobe[interop]'"


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"pandas"``) for ``purpose`` ("the tidy export"), or raise a
    UsageError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{purpose} needs the Python package {module.split('.')[0]}; "
                         f"install it with: {INSTALL}") from None
