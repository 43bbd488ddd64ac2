"""Missing inputs name the command that makes them; tokens are shown the same way in figures
and the viewer; attention plots fit the story; studies read the store in bounded blocks."""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest

from headprobe.errors import UsageError
from headprobe.rundir import MAKERS, make_command, missing_input, run_path
from headprobe.stories import Story, row_blocks
from headprobe.tokens import display_text


def _stage_parser(argv: list[str]):
    """The parser that reads ``python -m STAGE ...`` and the arguments after the stage."""
    import importlib

    stage, rest = argv[2], argv[3:]
    parsers = {p.prog: p for p in importlib.import_module(f"{stage}.__main__").parsers()}
    sub = f"python -m {stage} {rest[0]}" if rest else ""
    if sub in parsers:
        return parsers[sub], rest[1:]
    return parsers[f"python -m {stage}"], rest


@pytest.mark.parametrize("what", sorted(MAKERS))
@pytest.mark.parametrize("run", [None, "runs/x"])
def test_every_named_command_parses(what: str, run: str | None):
    argv = shlex.split(make_command(what, "runs/x/out", run, study="quote"))
    parser, rest = _stage_parser(argv)
    parser.parse_args(rest)


@pytest.mark.parametrize("argv, command", [
    (["probing", "fit", "--run", "{tmp}"], "python -m extract --run {tmp} --model MODEL"),
    (["probing", "fit", "--store", "{store}", "--out", "{tmp}/o", "--controls", "random"],
     "--reinit-seed 0 --out FILE.h5"),
    (["probing", "top", "--run", "{tmp}", "--tag", "NN"], "python -m probing fit --run {tmp}"),
    (["probing", "quote", "--run", "{tmp}"], "python -m extract --run {tmp}"),
    (["probing", "summary", "--run", "{tmp}/none"], "python -m datasets_build"),
    (["extract", "--run", "{tmp}"], "python -m datasets_build --source FILE"),
    (["figures", "--results", "{tmp}/studies/quote", "--out", "{tmp}/f"],
     "python -m probing quote --run {tmp}"),
])
def test_missing_input_is_one_line_naming_its_command(argv, command, tmp_path, capsys):
    import importlib

    from headprobe.cli import run_main

    fill = {"tmp": str(tmp_path), "store": str(tmp_path / "activations.h5")}
    main = importlib.import_module(f"{argv[0]}.__main__").main
    assert run_main(main, [a.format(**fill) for a in argv[1:]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "make it with: " in err and command.format(**fill) in err


def test_fit_with_the_random_control_looks_for_the_run_s_random_store(tmp_path, capsys):
    from headprobe.cli import run_main
    from probing.__main__ import main

    assert run_main(main, ["fit", "--run", str(tmp_path), "--controls", "random"]) == 2
    assert "activation store" in capsys.readouterr().err
    error = missing_input("control_store", run_path(tmp_path, "control_store"), tmp_path)
    assert str(error).startswith(f"random-weights control store {tmp_path}/activations-random")
    assert "--reinit-seed 0 --out" in str(error)
    assert isinstance(error, UsageError)


def test_display_text_escapes_what_shows_nothing():
    assert display_text("a\nb\tc") == "a\u21b5b\u21e5c"
    assert display_text("\r\x1b\u200b") == "\\r\\x1b\\u200b"
    assert display_text(" the \u201cend\u201d é") == " the \u201cend\u201d é"


def test_token_labels_draw_every_token_of_the_shared_tokenizer(shared_model):
    from transformers import AutoTokenizer

    from figures.plotting import new_figure, token_labels
    from headprobe.tokens import token_strings

    tokenizer = AutoTokenizer.from_pretrained(str(shared_model))
    strings = token_strings(tokenizer, range(len(tokenizer)))
    strings += ["\x00", "\x7f", "\u0085", "\u4e2d ok"]
    labels = token_labels(strings)
    fig = new_figure(8, 2)
    ax = fig.subplots()
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.canvas.draw()
    assert labels[-4:] == ["\\x00", "\\x7f", "\\x85", "\\u4e2d ok"]


def test_attention_plot_is_sized_to_the_story_and_marks_tokens():
    from figures.traces import MAX_PATTERN_TOKENS, draw_attention_pattern

    def size(n: int, **kw) -> tuple[float, float]:
        pattern = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
        return draw_attention_pattern(pattern, [f"t{i}" for i in range(n)], "L0H0", **kw)

    small, large = size(10), size(300, focus=100)
    assert small.get_size_inches()[0] < large.get_size_inches()[0] < 13
    ax = large.get_axes()[0]
    assert len(ax.get_xticklabels()) == MAX_PATTERN_TOKENS
    assert ax.get_xticklabels()[0].get_text() == "t96" and "of 300" in ax.get_title()
    marks = np.zeros(12, dtype=bool)
    marks[[3, 7]] = True
    ax = size(12, marks=marks, marks_label="quotation mark").get_axes()[0]
    colours = [t.get_color() for t in ax.get_yticklabels()]
    assert [i for i, c in enumerate(colours) if c == "tab:red"] == [3, 7]
    assert ax.get_legend().get_texts()[0].get_text() == "quotation mark"


def test_row_blocks_cover_every_story_once_within_the_bound():
    lengths = [5, 40, 3, 70, 8, 8]
    starts = np.cumsum([0, *lengths[:-1]])
    stories = [Story(i, int(s), np.zeros(n, dtype=np.int64))
               for i, (s, n) in enumerate(zip(starts, lengths, strict=True))]
    blocks = list(row_blocks(stories[::-1], max_rows=50))
    seen = sorted(i for _, _, members in blocks for i in members)
    assert seen == list(range(len(stories)))
    for lo, hi, members in blocks:
        span = [stories[::-1][i] for i in members]
        assert lo == min(s.start for s in span) and hi == max(s.stop for s in span)
        assert hi - lo <= 50 or len(members) == 1


def test_activity_sums_match_a_whole_layer_read(shared_store: Path):
    from extract.store import open_store
    from headprobe.stories import read_stories
    from probing.studies.common import activity_sums

    with open_store(shared_store) as store:
        stories = read_stories(store, "all")
        mask = np.random.default_rng(0).random(store.n_tokens) < 0.5
        (got,) = activity_sums(store, stories, [mask], max_rows=7)
        for layer in range(store.n_layers):
            act = store.read_layer("activity", layer)
            for i, s in enumerate(stories):
                rows = s.rows[mask[s.rows]]
                np.testing.assert_allclose(got[i, layer], act[rows].sum(0), rtol=1e-5,
                                           atol=1e-6)
