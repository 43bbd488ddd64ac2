"""The error every stage raises for bad input, and how it names options.

Library code names a setting by its Python parameter, marked with :func:`opt`; the
command line words the same mark as its flag. So one message reads
``runs/x already exists; pass overwrite=True to replace it`` from Python and
``runs/x already exists; pass --overwrite to replace it`` from ``python -m ...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_OPEN, _SEP, _CLOSE = "\ue000", "\ue001", "\ue002"
_MARK = re.compile(f"{_OPEN}([^{_SEP}{_CLOSE}]*){_SEP}([^{_CLOSE}]*){_CLOSE}")


def opt(name: str, value: object = None) -> str:
    """Mark Python parameter ``name`` (optionally with the ``value`` to set) in a message."""
    return f"{_OPEN}{name}{_SEP}{'' if value is None else repr(value)}{_CLOSE}"


def python_option(name: str, value: str) -> str:
    """How a marked option reads from Python: ``overwrite=True`` or ``limit``."""
    return f"{name}={value}" if value else name


def render(message: str, word: Callable[[str, str], str] = python_option) -> str:
    """``message`` with every :func:`opt` mark replaced by ``word(name, value)``."""
    return _MARK.sub(lambda m: word(m.group(1), m.group(2)), message)


class UsageError(ValueError):
    """Bad input from the user (a path, a setting, a file that is not what it should be).

    The message is one line; options in it are marked with :func:`opt`. ``str(error)``
    names them as Python parameters, :meth:`cli_message` as command-line flags.
    """

    def __str__(self) -> str:
        return render(self.raw_message())

    def raw_message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def cli_message(self, word: Callable[[str, str], str]) -> str:
        """The message with options worded by ``word(name, value)``."""
        return render(self.raw_message(), word)


def only_with(given: list[str], setting: str, why: str = "") -> UsageError:
    """The error for settings ``given`` (Python names) that only ``setting`` makes
    meaningful, and it was not given: ``--a and --b go with --mode (why); give --mode or
    leave them out``."""
    verb, them = ("goes", "it") if len(given) == 1 else ("go", "them")
    because = f" ({why})" if why else " only"
    return UsageError(f"{' and '.join(opt(name) for name in given)} {verb} with "
                      f"{opt(setting)}{because}; give {opt(setting)} or leave {them} out")
