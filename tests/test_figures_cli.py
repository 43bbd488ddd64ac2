"""``python -m figures`` end to end on synthetic results: files, sidecars, up-to-date checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from figures.__main__ import main
from figures.registry import file_stem, matches
from figures.writer import sha256_file
from headprobe.cli import run_main
from tests.fixtures_figures import write_synthetic_studies


def cli(*argv: str) -> int:
    return run_main(main, list(argv), prog="python -m figures")


def figure_files(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.iterdir())}


def test_run_dir_draws_every_figure_with_sidecars(synthetic_run: Path, tmp_path: Path):
    out = tmp_path / "figs"
    assert cli("--run", str(synthetic_run), "--out", str(out)) == 0
    stems = {"repeated_scores", "repeated_loss", "repeated_mlp_patching", "repeated_pattern",
             "patching", "patching_topk", "quote_activity", "quote_attention",
             "tag_induction_activity", "tag_induction_attention", "quote_heads",
             "tag_induction_heads", "next_token_table", "time_order_mass", "time_order_hist"}
    for stem in stems:
        for ext in ("png", "pdf"):
            path = out / f"{stem}.{ext}"
            assert path.stat().st_size > 1000, path
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    side = json.loads((out / "patching.json").read_text())
    data = synthetic_run / "studies" / "patch" / "results.h5"
    assert side["inputs"] == {str(data): sha256_file(data)}
    assert side["formats"] == ["png", "pdf"] and side["headprobe_version"]
    assert side["command"].startswith("python -m figures --run")
    assert side["axes"][0]["xlabel"] == "position (token)" and side["axes"][0]["ylabel"] == "layer"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_unchanged_inputs_rewrite_nothing_and_force_redraws(synthetic_run: Path, tmp_path: Path,
                                                             capsys):
    out = tmp_path / "figs"
    assert cli("--results", str(synthetic_run), "--out", str(out)) == 0
    before = figure_files(out)
    assert cli("--results", str(synthetic_run), "--out", str(out)) == 0
    assert figure_files(out) == before
    assert "0 figure(s) written" in capsys.readouterr().out
    assert cli("--results", str(synthetic_run), "--out", str(out), "--force",
               "--only", "patching") == 0
    after = figure_files(out)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"patching.png", "patching.pdf", "patching.json"}


def test_changed_input_redraws_only_its_figures(synthetic_run: Path, tmp_path: Path):
    out = tmp_path / "figs"
    assert cli("--run", str(synthetic_run), "--out", str(out)) == 0
    before = figure_files(out)
    shutil.rmtree(synthetic_run / "studies")
    write_synthetic_studies(synthetic_run / "studies", np.random.default_rng(1))
    assert cli("--run", str(synthetic_run), "--out", str(out), "--only", "patching*") == 0
    after = figure_files(out)
    assert {n for n in after if after[n] != before[n]} == {
        f"{s}.{e}" for s in ("patching", "patching_topk") for e in ("png", "pdf", "json")}


def test_only_formats_and_study_dir(synthetic_run: Path, tmp_path: Path):
    out = tmp_path / "figs"
    assert cli("--results", str(synthetic_run / "studies" / "repeated"), "--out", str(out),
               "--format", "svg", "--only", "repeated_loss") == 0
    assert sorted(p.name for p in out.iterdir()) == ["repeated_loss.json", "repeated_loss.svg"]
    # Asking for more formats than the sidecar records redraws.
    assert cli("--results", str(synthetic_run / "studies" / "repeated"), "--out", str(out),
               "--format", "svg,png", "--only", "repeated_loss") == 0
    assert (out / "repeated_loss.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--out", "X"], "give --results"),
    (["--results", "/nonexistent/dir", "--out", "X"], "does not exist"),
    (["--results", "{run}", "--out", "X", "--format", "jpg"], "unknown --format"),
    (["--results", "{run}", "--out", "X", "--only", "nosuchfigure"], "no figure matches"),
    (["--results", "{run}/studies"], "give --out"),
    (["--results", "{run}", "--out", "{run}/studies/patch/results.h5"], "not a directory"),
])
def test_bad_input_is_one_line_exit_2(synthetic_run: Path, tmp_path: Path, capsys, argv, message):
    argv = [a.replace("{run}", str(synthetic_run)).replace("X", str(tmp_path / "o")) for a in argv]
    assert cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_not_a_results_dir(tmp_path: Path, capsys):
    assert cli("--results", str(tmp_path), "--out", str(tmp_path / "o")) == 2
    assert "neither probe results" in capsys.readouterr().err


def test_list_names_figure_types_and_found_figures(synthetic_run: Path, capsys):
    assert cli("list") == 0
    listing = capsys.readouterr().out
    for name in ("repeated_scores", "patching", "patching_topk"):
        assert name in listing
    assert cli("list", "--run", str(synthetic_run)) == 0
    found = capsys.readouterr().out
    assert "repeated_mlp_patching\trepeated_mlp_patching\t" in found


def test_names_and_stems():
    assert file_stem("f1:PRP$") == "f1_PRP-dollar"
    assert file_stem("f1:``") == "f1_openquote" and file_stem("f1:VBD") == "f1_VBD"
    assert matches("f1:VBD", ["f1"]) and matches("f1:VBD", ["f1:VBD"])
    assert matches("repeated_loss", ["repeated_*"]) and not matches("patching", ["f1"])


def test_module_entry_point(synthetic_run: Path, tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "figures", "--results",
                           str(synthetic_run / "studies" / "patch"), "--out", str(tmp_path / "o"),
                           "--only", "patching_topk"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    side = json.loads((tmp_path / "o" / "patching_topk.json").read_text())
    assert side["command"].startswith("python -m figures --results")
