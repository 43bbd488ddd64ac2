"""Conventions every headprobe command line shares.

Bad input, file-system errors and damaged files are reported as one line on stderr with
exit code 2; every stage's ``__main__`` runs its entry point through :func:`run_main`,
which also words the options a library error names (:func:`headprobe.errors.opt`) as flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from headprobe.devices import AUTO, DEFAULT_MODEL_DTYPE, MODEL_DTYPES, resolve_device
from headprobe.errors import UsageError
from headprobe.failures import failure_line
from headprobe.locks import release_claims

# Parameters whose flag is not ``--`` + the name with dashes.
FLAG_NAMES = {"C": "-C", "k": "-k", "prepend_bos": "--no-bos", "draws": "--random-draws",
              "n_boot": "--bootstrap"}


class HelpFormatter(argparse.HelpFormatter):
    """A description or epilog written on several lines is kept as written, one written on
    one line is wrapped; an option's help ends with its default when it does not say it."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or action.nargs == 0 or default is None
                or default is argparse.SUPPRESS or default == []):
            return text
        if isinstance(default, (list, tuple)):
            default = ",".join(map(str, default))
        return f"{text} (default {str(default).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit with code 2, and whose help shows
    every option's default (:class:`HelpFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def flag(name: str, value: str = "") -> str:
    """The command-line flag of Python parameter ``name`` (``value`` is how it was set)."""
    text = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
    if value and value not in ("True", "False", "None"):
        text += f" {value.strip(chr(39))}"
    return text


def error_line(exc: UsageError) -> str:
    """A library error as the command line says it."""
    return exc.cli_message(flag)


def run_main(main: Callable[[Sequence[str] | None], int | None],
             argv: Sequence[str] | None = None, prog: str = "headprobe") -> int:
    """Run ``main(argv)`` and turn expected failures into one-line errors.

    Bad input (:class:`UsageError`), file-system errors and files that cannot be decoded
    (:mod:`headprobe.failures`) give one line and exit code 2; Ctrl-C gives one line and 130.
    Outputs the command claimed (:func:`headprobe.locks.claim_output`) are released.
    """
    try:
        return main(argv) or 0
    except UsageError as exc:
        print(f"{prog}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        line = failure_line(exc)
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 2
    finally:
        release_claims()


def device_argument(text: str) -> str:
    """argparse type of ``--device``: the device resolved and checked
    (:func:`headprobe.devices.resolve_device`); 'auto' picks cuda when available."""
    try:
        return resolve_device(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(error_line(exc)) from None


def add_device_arguments(parser: argparse.ArgumentParser, resolve: bool = True) -> None:
    """``--device`` and ``--model-dtype``, the same for every command that runs a model.

    resolve: turn ``--device`` into the device to use while parsing (False: keep 'auto'
    for the library to resolve where the model runs, e.g. on a cluster's workers).
    """
    parser.add_argument("--device", default=AUTO, type=device_argument if resolve else str,
                        help="cpu, cuda, cuda:N or mps (default: cuda when available, else cpu)")
    parser.add_argument("--model-dtype", default=DEFAULT_MODEL_DTYPE, choices=MODEL_DTYPES,
                        help="dtype the model computes in (default %(default)s)")


def split_list(text: str | None) -> list[str]:
    """Split a comma-separated option value, dropping empty items."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def walk_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and, depth first, the parser of every subcommand under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from walk_parsers(sub)
