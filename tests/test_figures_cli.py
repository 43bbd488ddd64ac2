"""``python -m figures`` end to end on synthetic results: files, sidecars, up-to-date checks."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from figures.__main__ import main
from figures.registry import figure_types, file_stem, matches
from figures.writer import sha256_file
from headprobe.cli import run_main
from probing.studies import STUDY_MODULES, quote, repeated
from probing.study_io import read_study
from tests.fixtures_figures import write_synthetic_studies

REPO = Path(__file__).resolve().parents[1]


def cli(*argv: str) -> int:
    return run_main(main, list(argv), prog="python -m figures")


def figure_files(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.iterdir())}


def test_run_dir_draws_every_figure_with_sidecars(synthetic_run: Path, tmp_path: Path):
    out = tmp_path / "figs"
    assert cli("--run", str(synthetic_run), "--out", str(out)) == 0
    stems = {"repeated_scores", "repeated_loss", "repeated_mlp_patching", "repeated_pattern",
             "repeated_scatter", "repeated_composition", "repeated_ablation", "patching",
             "patching_topk", "quote_activity", "quote_attention", "quote_shift",
             "tag_induction_activity", "tag_induction_attention", "quote_heads",
             "tag_induction_heads", "next_token_table", "time_order_mass", "time_order_hist",
             "activation_stats", "activation_hist", "mlp_sparsity", "ablation"}
    assert {t.name for t in figure_types() if t.source in STUDY_MODULES} == stems
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
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "repeated_loss.json",
                                                     "repeated_loss.svg"]
    # Asking for more formats than the sidecar records redraws.
    assert cli("--results", str(synthetic_run / "studies" / "repeated"), "--out", str(out),
               "--format", "svg,png", "--only", "repeated_loss") == 0
    assert (out / "repeated_loss.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--out", "X"], "give --results"),
    (["--results", "/nonexistent/dir", "--out", "X"],
     "results directory /nonexistent/dir not found; give probe results"),
    (["--results", "{run}/studies/patch/results.h5", "--out", "X"],
     "results directory expected, but {run}/studies/patch/results.h5 is a file"),
    (["--results", "{run}", "--out", "X", "--format", "jpg"], "unknown --format"),
    (["--results", "{run}", "--out", "X", "--only", "nosuchfigure"], "no figure matches"),
    (["--results", "{run}/studies"], "give --out"),
    (["--results", "{run}", "--out", "{run}/studies/patch/results.h5"], "not a directory"),
])
def test_bad_input_is_one_line_exit_2(synthetic_run: Path, tmp_path: Path, capsys, argv, message):
    argv = [a.replace("{run}", str(synthetic_run)).replace("X", str(tmp_path / "o")) for a in argv]
    assert cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert message.replace("{run}", str(synthetic_run)) in err and len(err.splitlines()) == 1


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
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    side = json.loads((tmp_path / "o" / "patching_topk.json").read_text())
    assert side["command"].startswith("python -m figures --results")


def drop_array(study_dir: Path, name: str) -> None:
    """Remove one array from written results (as a renamed array would leave them)."""
    with h5py.File(study_dir / "results.h5", "a") as f:
        del f[name]


def test_missing_required_array_is_one_line_exit_2(synthetic_run: Path, tmp_path: Path):
    study_dir = synthetic_run / "studies" / quote.STUDY
    drop_array(study_dir, quote.RATIO.name)
    proc = subprocess.run([sys.executable, "-m", "figures", "--run", str(synthetic_run),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'ratio'" in lines[0] and str(study_dir) in lines[0] and "quote_heads" in lines[0]
    assert not (tmp_path / "o").exists()


def test_figure_of_an_optional_array_is_not_planned(synthetic_run: Path, tmp_path: Path,
                                                     capsys):
    # quote without the model, repeated without the MLP grid: the layouts mark those optional
    drop_array(synthetic_run / "studies" / quote.STUDY, quote.EXAMPLE_PATTERN.name)
    drop_array(synthetic_run / "studies" / repeated.STUDY, repeated.MLP_PATCH_DELTA.name)
    assert cli("list", "--run", str(synthetic_run)) == 0
    listing = capsys.readouterr().out
    assert "quote_attention\t(not planned: " in listing
    assert "holds no example_pattern (written only with the model)" in listing
    assert "repeated_mlp_patching\t(not planned: " in listing
    assert "quote_activity\tquote_activity\t" in listing
    out = tmp_path / "figs"
    assert cli("--run", str(synthetic_run), "--out", str(out), "--format", "png") == 0
    captured = capsys.readouterr()
    assert "2 not planned" in captured.out and "not planned quote_attention" in captured.err
    assert (out / "quote_activity.png").exists() and not (out / "quote_attention.png").exists()


def test_figures_read_results_without_stored_axes(synthetic_run: Path, tmp_path: Path):
    study_dir = synthetic_run / "studies" / repeated.STUDY
    with h5py.File(study_dir / "results.h5", "a") as f:
        for ds in f.values():
            del ds.attrs["dims"], ds.attrs["description"]
    assert read_study(study_dir).axes == {}
    assert cli("--results", str(study_dir), "--out", str(tmp_path / "o"), "--format", "png",
               "--only", "repeated_scores") == 0


def test_figures_doc_names_the_arrays_each_figure_needs():
    rows = [line for line in (REPO / "docs" / "figures.md").read_text().splitlines()
            if line.startswith("| `")]
    for ftype in figure_types():
        row = next((r for r in rows if f"`{ftype.name}`" in r.split("|")[1]), None)
        if ftype.needs:
            assert row is not None, ftype.name
            cells = row.split("|")
            assert cells[2].strip() == f"`{ftype.source}`", ftype.name
            assert all(f"`{a.name}`" in cells[3] for a in ftype.needs), ftype.name


def test_index_page_shows_every_figure_with_how_to_read_it(synthetic_run: Path, tmp_path: Path):
    from figures.index import index_entries
    from figures.registry import READING, type_of

    out = tmp_path / "figs"
    assert cli("--run", str(synthetic_run), "--out", str(out), "--format", "png") == 0
    assert cli("--run", str(synthetic_run), "--out", str(out), "--format", "svg",
               "--only", "repeated_loss") == 0        # a later, partial run keeps them all
    page = (out / "index.html").read_text()
    stems = sorted(p.stem for p in out.glob("*.png"))
    assert len(stems) >= 20 and [e.stem for e in sorted(index_entries(out),
                                                        key=lambda e: e.stem)] == stems
    for stem in stems:
        name = json.loads((out / f"{stem}.json").read_text())["params"]["name"]
        ftype = type_of(name)
        assert f'<img src="{stem}.png"' in page or f'<img src="{stem}.svg"' in page, stem
        assert html.escape(ftype.help) in page and html.escape(READING[ftype.name]) in page
    assert "http://" not in page and "https://" not in page          # works offline
    assert page.count("How to read it:") == len(stems)


def test_every_figure_type_says_how_to_read_it():
    from figures.registry import READING

    names = {t.name for t in figure_types()}
    assert set(READING) == names
    assert all(len(line) > 30 and "\n" not in line for line in READING.values())
