"""Tagging in shards: a Ray run, a job array's --shard commands, the merge."""

import numpy as np
import pytest

from datasets_build import build as build_module
from datasets_build.__main__ import PROG, main
from datasets_build.bench import main as bench_main
from datasets_build.bench_shard import shard_rss
from datasets_build.build import build_dataset
from datasets_build.dataset import load_tagged_dataset
from datasets_build.shards import shard_path
from datasets_build.sources import (
    STORY_SEPARATOR,
    Source,
    StoryStream,
    collect_stories,
    open_source,
)
from headprobe.cli import run_main
from headprobe.errors import UsageError

# Written by each run, not part of what was built.
PROVENANCE = ("created", "command", "merged")


def cli(*args):
    return run_main(main, [str(a) for a in args], prog=PROG)


def assert_same_dataset(a, b):
    """Equal token and story tables, tags and manifests (but for when and how made)."""
    x, y = load_tagged_dataset(a), load_tagged_dataset(b)
    assert x.tags == y.tags
    for table in ("token_table", "story_table"):
        cx, cy = getattr(x, table)(), getattr(y, table)()
        assert cx.keys() == cy.keys()
        for name in cx:
            assert np.array_equal(np.asarray(cx[name]), np.asarray(cy[name])), (table, name)
    mx, my = ({k: v for k, v in m.items() if k not in PROVENANCE}
              for m in (x.manifest, y.manifest))
    assert mx == my


def source_args(valid_text, model, out, *extra):
    return ["--source", valid_text, "--tokenizer", model, "--out", out, "--limit", "40",
            "--test-fraction", "0.25", "--quiet", *extra]


def test_ray_shards_merge_into_the_single_build(ray_cluster, shared_dataset, valid_text,
                                                shared_model, tmp_path, capsys):
    out = tmp_path / "dataset"
    args = source_args(valid_text, shared_model, out, "--ray", "local:2", "--shards", "4")
    assert cli(*args) == 0
    assert "4 shards merged" in capsys.readouterr().out
    assert_same_dataset(shared_dataset, out)
    merged = load_tagged_dataset(out).manifest
    assert merged["merged"]["shards"] == 4 and merged["counts"]["parents"] == 40
    assert cli(*args) == 0                              # a rerun keeps shards and the merge
    assert "every shard was already complete" in capsys.readouterr().out


@pytest.fixture(scope="module")
def windowed_single(tmp_path_factory, valid_text, shared_model):
    """The 40 stories cut into windows of 64 tokens, by one process."""
    out = tmp_path_factory.mktemp("windowed") / "dataset"
    return build_dataset(str(valid_text), str(shared_model), out, limit=40,
                         test_fraction=0.25, max_tokens=64)


def test_shard_commands_then_merge_equal_the_single_build(windowed_single, valid_text,
                                                          shared_model, tmp_path, capsys):
    run = tmp_path / "run"
    args = source_args(valid_text, shared_model, run / "dataset", "--max-tokens", "64")
    for i in range(3):
        assert cli(*args, "--shard", f"{i}/3") == 0
    assert cli("merge", "--run", run) == 0
    assert_same_dataset(windowed_single, run / "dataset")
    counts = load_tagged_dataset(run / "dataset").manifest["counts"]
    assert counts["cut_parents"] > 0 and counts["stories"] > counts["parents"]
    first = (run / "dataset" / "manifest.json").read_bytes()
    assert cli("merge", "--out", run / "dataset") == 0       # merged again: kept as it is
    assert "kept" in capsys.readouterr().out
    assert (run / "dataset" / "manifest.json").read_bytes() == first
    again = shard_path(run / "dataset", 1, 3)
    mtime = (again / "manifest.json").stat().st_mtime_ns
    assert cli(*args, "--shard", "1/3") == 0                 # complete: kept
    assert (again / "manifest.json").stat().st_mtime_ns == mtime
    assert cli(*args, "--shard", "1/3", "--overwrite") == 0  # one shard rerun alone
    assert cli("merge", "--out", run / "dataset") == 0
    assert "wrote" in capsys.readouterr().out
    assert_same_dataset(windowed_single, run / "dataset")


def test_bad_shards_are_one_line(valid_text, shared_model, tmp_path, capsys):
    out = tmp_path / "dataset"
    args = source_args(valid_text, shared_model, out, "--max-tokens", "64")
    assert cli(*args, "--shard", "3/3") == 2
    assert cli(*args, "--shard", "0/41") == 2
    assert cli(*args, "--shard", "0/2") == 0
    assert cli("merge", "--out", out) == 2                  # shard 1/2 missing
    assert cli(*args, "--seed", "1", "--shard", "1/2") == 0  # another build's shard
    assert cli("merge", "--out", out) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 4
    assert "need 0 <= i < n" in err[0] and "use at most 40 shards" in err[1]
    assert "1/2 are missing" in err[2] and "two different builds" in err[3]
    assert not out.exists()


def test_a_story_stream_counts_and_reads_only_up_to_its_run():
    raw = ["Tom ran.", "  ", "Mia sat.", "", "The dog slept.", "A cat ate."]
    reads = []

    def stories():
        for i, text in enumerate(raw):
            reads.append(i)
            yield text

    source = Source("list", "demo", stories)
    for limit in (None, 3, 10):
        texts, dropped = collect_stories(source, limit)
        stream = StoryStream(source, limit)
        assert list(stream) == texts and stream.count() == (len(texts), dropped)
        assert stream.run(1, 3) == texts[1:3]
    reads.clear()
    assert StoryStream(source).run(0, 2) == ["Tom ran.", "Mia sat."]
    assert max(reads) == 4      # stops at the next non-empty story, "The dog slept."
    with pytest.raises(UsageError, match="no non-empty story"):
        StoryStream(Source("none", "demo", lambda: iter(["", " "]))).count()


def test_demo_shards_stream_the_source_and_train_the_same_bpe(tmp_path, monkeypatch):
    """Shards of a demo corpus without a tokenizer never collect the story list, train the
    BPE of the whole corpus from the stream, and merge into the single build."""
    monkeypatch.setenv("HEADPROBE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sharded"
    args = ["--source", "demo:30", "--out", out, "--test-fraction", "0.3", "--quiet"]

    def refuse(*_, **__):
        raise AssertionError("a shard collected the whole story list")

    with monkeypatch.context() as patch:
        patch.setattr(build_module, "collect_stories", refuse)
        for i in range(3):
            assert cli(*args, "--shard", f"{i}/3") == 0
        assert cli("merge", "--out", out) == 0
    single = build_dataset("demo:30", None, tmp_path / "single", test_fraction=0.3)
    assert len(list((tmp_path / "cache" / "bpe").iterdir())) == 1   # the same corpus key
    assert_same_dataset(single, out)


def test_shard_rss_tags_the_same_shard_of_a_source_and_a_larger_one(valid_text, shared_model,
                                                                      tmp_path, capsys):
    texts, _ = collect_stories(open_source(str(valid_text)), 8)
    rows = dict(shard_rss(texts, str(shared_model), 2, 3, tmp_path))
    small, large = rows["small"], rows["large"]
    assert (small["source_stories"], large["source_stories"]) == (8, 24)
    assert small["shard_stories"] == large["shard_stories"] == 4
    assert small["n_tokens"] == large["n_tokens"] > 0
    assert min(small["peak_rss_mb"], large["peak_rss_mb"]) > 0
    assert (tmp_path / "large.txt").read_text().count(STORY_SEPARATOR) == 24
    too_many = ["--source", valid_text, "--stories", "100", "--shard-rss", "100"]
    assert run_main(bench_main, [str(a) for a in too_many], prog=PROG) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs 10000 stories" in err[0]
