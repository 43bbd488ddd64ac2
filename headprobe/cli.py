"""Conventions every headprobe command line shares.

Bad input, file-system errors and damaged files are reported as one line on stderr with
exit code 2; every stage's ``__main__`` runs its entry point through :func:`run_main`,
which also words the options a library error names (:func:`headprobe.errors.opt`) as flags.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from headprobe.devices import AUTO, DEFAULT_MODEL_DTYPE, MODEL_DTYPES, resolve_device
from headprobe.errors import UsageError
from headprobe.failures import failure_line
from headprobe.locks import release_claims
from headprobe.quiet import quiet_third_party

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
                or default is argparse.SUPPRESS or default in ([], "")):
            return text
        if isinstance(default, (list, tuple)):
            default = ",".join(map(str, default))
        return f"{text} (default {str(default).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit with code 2, whose help shows
    every option's default (:class:`HelpFormatter`), and which names the flag or
    subcommand a misspelled one was probably meant to be."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        args = [str(a) for a in (sys.argv[1:] if args is None else args)]
        _GIVEN[:] = args
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = chosen_parser(self, args)
            hint = did_you_mean(extras, option_strings(parser))
            parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed

    def error(self, message: str):  # type: ignore[override]
        choice = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)$",
                          message)
        if choice:
            names = [n.strip().strip("'") for n in choice.group(3).split(",")]
            message += did_you_mean([choice.group(2)], names)
        elif message.startswith("the following arguments are required"):
            # a misspelled required flag is reported as missing before as unknown
            known = option_strings(self)
            unknown = [a.split("=", 1)[0] for a in _GIVEN if a.startswith("--")
                       and not any(k.startswith(a.split("=", 1)[0]) for k in known)]
            hint = did_you_mean(unknown, known)
            if hint:
                message += f"; unrecognized arguments: {' '.join(unknown)}{hint}"
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


_GIVEN: list[str] = []   # the arguments the last Parser.parse_args was given


def chosen_parser(parser: argparse.ArgumentParser,
                  args: Sequence[str]) -> argparse.ArgumentParser:
    """The (sub)parser the subcommand names in ``args`` lead to from ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for arg in args:
                if arg in action.choices:
                    rest = list(args)[list(args).index(arg) + 1:]
                    return chosen_parser(action.choices[arg], rest)
    return parser


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag ``parser`` takes (``--layers``, ``-k`` ...)."""
    return [s for action in parser._actions for s in action.option_strings]


def did_you_mean(given: Sequence[str], known: Sequence[str]) -> str:
    """``; did you mean --layers?`` for the given words (a flag's ``=value`` dropped) that
    are close to a known one, else ''."""
    guesses = []
    for word in given:
        word = word.split("=", 1)[0]
        close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
        if close and close[0] not in guesses and close[0] != word:
            guesses.append(close[0])
    return f"; did you mean {' or '.join(guesses)}?" if guesses else ""


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
    Outputs the command claimed (:func:`headprobe.locks.claim_output`) are released, and a
    command that fails leaves no empty directory behind (:func:`absent_dirs`). Third-party
    chatter is silenced (:mod:`headprobe.quiet`).
    """
    quiet_third_party()
    new_dirs = absent_dirs(sys.argv[1:] if argv is None else argv)
    code = 1
    try:
        code = main(argv) or 0
        return code
    except UsageError as exc:
        print(f"{prog}: error: {error_line(exc)}", file=sys.stderr)
        code = 2
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
        return code
    except Exception as exc:
        line = failure_line(exc)
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        code = 2
        return code
    finally:
        release_claims()
        if code != 0:
            remove_empty(new_dirs)


def absent_dirs(argv: Sequence[str]) -> tuple[list[Path], set[Path]]:
    """The directories a command with these arguments could make, as they are before it
    runs: every path argument (or ``--flag=value``) and its parents up to the first that
    exists, which are not there yet; and the directories now inside (two levels deep) the
    arguments that are existing directories."""
    absent: list[Path] = []
    present: set[Path] = set()
    for arg in argv:
        text = str(arg).split("=", 1)[-1] if str(arg).startswith("-") else str(arg)
        if not text or text.startswith("-") or "\n" in text:
            continue
        path = Path(text)
        if _is_dir(path):
            present.update(_subdirs(path))
        while not os.path.lexists(path) and path != path.parent:
            absent.append(path)
            path = path.parent
    return absent, present


def _subdirs(path: Path, depth: int = 2) -> set[Path]:
    """``path`` and the directories under it, ``depth`` levels deep (links not followed)."""
    found = {path}
    if depth > 0:
        try:
            entries = [e for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return found
        for entry in entries:
            found |= _subdirs(Path(entry.path), depth - 1)
    return found


def remove_empty(dirs: tuple[list[Path], set[Path]]) -> None:
    """Remove the directories a failed command made (all but those :func:`absent_dirs`
    saw) that are empty, deepest first."""
    absent, present = dirs
    tops = [p for p in absent if _is_dir(p) and not p.is_symlink()]
    tops += [p for p in _subdirs_of(present) if p not in present]
    found = set()
    for top in tops:
        found.update(Path(root) for root, _, _ in os.walk(top))
    for path in sorted(found, key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()
        except OSError:   # not empty: leave it
            pass


def _subdirs_of(present: set[Path]) -> set[Path]:
    """The directories now inside (two levels deep) the outermost of ``present``."""
    tops = {p for p in present if not any(q in present for q in p.parents)}
    return set().union(*(_subdirs(p) for p in tops if _is_dir(p)))


def _is_dir(path: Path) -> bool:
    """Whether ``path`` is a directory; False for any text that cannot be a path (too long,
    a NUL byte)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


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
