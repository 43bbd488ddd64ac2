"""Conventions every headprobe command line shares.

Bad input, file-system errors and damaged files are reported as one line on stderr with
exit code 2; every stage's ``__main__`` runs its entry point through :func:`run_main`,
which also words the options a library error names (:func:`headprobe.errors.opt`) as flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from headprobe.devices import AUTO, DEFAULT_MODEL_DTYPE, MODEL_DTYPES, resolve_device
from headprobe.errors import UsageError
from headprobe.failures import failure_line
from headprobe.locks import release_claims

# Parameters whose flag is not ``--`` + the name with dashes.
FLAG_NAMES = {"C": "-C", "k": "-k", "prepend_bos": "--no-bos", "draws": "--random-draws"}


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit with code 2."""

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
