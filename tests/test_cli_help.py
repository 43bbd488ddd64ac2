"""Every command line of every stage documents itself: a description per (sub)command, help
text for every option and the default of every option that takes a value."""

from __future__ import annotations

import argparse
import importlib

import pytest

from headprobe.cli import walk_parsers

STAGES = ("datasets_build", "extract", "probing", "figures")
SKIPPED = (argparse._HelpAction, argparse._SubParsersAction)


def _all_parsers() -> list[argparse.ArgumentParser]:
    return [parser for stage in STAGES
            for top in importlib.import_module(f"{stage}.__main__").parsers()
            for parser in walk_parsers(top)]


def _problems(parser: argparse.ArgumentParser) -> list[str]:
    problems = [] if (parser.description or "").strip() else ["no description"]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, SKIPPED):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = formatter._expand_help(action) if action.help else ""
        if not text.strip():
            problems.append(f"{name}: no help text")
        elif action.nargs != 0 and not action.required and "default" not in text:
            problems.append(f"{name}: default not shown")
        elif "(default )" in text:
            problems.append(f"{name}: empty default shown")
    return problems


def test_every_parser_is_found():
    progs = {parser.prog for parser in _all_parsers()}
    assert {"python -m datasets_build bench", "python -m extract train", "python -m extract merge",
            "python -m probing top", "python -m probing quote", "python -m figures viewer"} <= progs


@pytest.mark.parametrize("parser", _all_parsers(), ids=lambda p: p.prog.replace("python -m ", ""))
def test_parser_documents_every_option(parser: argparse.ArgumentParser):
    assert _problems(parser) == []
    assert parser.format_help()


def test_defaults_are_shown_in_help():
    from extract.__main__ import train_parser
    from extract.training.config import TrainConfig

    text = " ".join(train_parser().format_help().split())
    d = TrainConfig()
    assert f"transformer layers (default {d.layers})" in text
    assert f"residual width (default {d.d_model})" in text
    assert "(default RUN/model)" in text and "(default RUN/model) (default" not in text


def test_top_help_explains_every_column(capsys):
    from probing.__main__ import build_parser
    from probing.top import COLUMNS

    with pytest.raises(SystemExit):
        build_parser().parse_args(["top", "--help"])
    text = capsys.readouterr().out
    for _, title, _ in COLUMNS:
        assert f"\n  {title:>8}  " in text
    assert "bootstrap 95% interval" in text and "F1 minus the chosen control" in text


@pytest.mark.parametrize("stage, argv, hint", [
    ("probing", ["fit", "--lyers", "0"], "; did you mean --layers?"),
    ("probing", ["top", "--run", "r", "--bye=f1"], "; did you mean --by?"),
    ("probing", ["fitt"], "; did you mean fit?"),
    ("extract", ["--modle", "m"], "; did you mean --model?"),
    ("figures", ["--formt", "png"], "; did you mean --format?"),
    ("datasets_build", ["--sorce", "x", "--limt", "3"], "; did you mean --source or --limit?"),
])
def test_a_misspelled_flag_gets_a_suggestion(stage, argv, hint, capsys):
    main = importlib.import_module(f"{stage}.__main__").main
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.endswith(f"{hint} (see --help)"), err


def test_a_word_far_from_every_flag_gets_no_suggestion(capsys):
    main = importlib.import_module("probing.__main__").main
    with pytest.raises(SystemExit):
        main(["fit", "--zzzzzz"])
    assert "did you mean" not in capsys.readouterr().err


def test_help_shows_no_empty_default(capsys):
    main = importlib.import_module("figures.__main__").main
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "(default )" not in out and "--only" in out
