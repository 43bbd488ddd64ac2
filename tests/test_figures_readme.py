"""The README's pictures redrawn from a stored run: small PNGs, the same bytes twice."""

import shutil

import pytest
from PIL import Image

import figures.readme
from figures.readme import (
    README_DPI_RANGE,
    README_FIGURES,
    README_WIDTH_PX,
    main,
    write_readme_figures,
)
from headprobe.cli import run_main
from headprobe.errors import UsageError
from probing.__main__ import main as probing_main


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory, probing_results, studies_store, shared_model,
               induction_model_dir):
    run = tmp_path_factory.mktemp("readme") / "run"
    shutil.copytree(probing_results, run / "probes")
    assert probing_main(["quote", "--store", str(studies_store), "--model", str(shared_model),
                         "--max-stories", "3", "--out", str(run / "studies" / "quote")]) == 0
    assert probing_main(["repeated", "--model", str(induction_model_dir), "--seq-len", "20",
                         "--batch", "4", "--no-mlp-grid", "--run", str(run)]) == 0
    return run


def test_readme_pictures_are_small_and_reproducible(readme_run, tmp_path, capsys):
    paths = write_readme_figures(readme_run, tmp_path / "a")
    assert [p.name for p in paths] == list(README_FIGURES.values())
    for path in paths:
        assert 2_000 < path.stat().st_size < 250_000, path
        with Image.open(path) as im:      # as wide as the README's column, or as near as
            dpi = im.info["dpi"][0]       # the resolution range allows
            assert README_DPI_RANGE[0] - 0.5 <= dpi <= README_DPI_RANGE[1] + 0.5
            assert im.width == pytest.approx(README_WIDTH_PX, abs=2) or dpi == pytest.approx(
                README_DPI_RANGE[0], abs=0.5) or dpi == pytest.approx(README_DPI_RANGE[1],
                                                                      abs=0.5)
    assert run_main(main, ["--run", str(readme_run), "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.count("wrote ") == len(README_FIGURES)
    for path in paths:
        assert (tmp_path / "b" / path.name).read_bytes() == path.read_bytes()


def test_a_run_without_the_studies_names_what_is_missing(probing_results, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(probing_results, run / "probes")
    with pytest.raises(UsageError, match="quote_heads, repeated_scores"):
        write_readme_figures(run, tmp_path / "out")
    assert not (tmp_path / "out" / README_FIGURES["f1:``"]).exists()
    assert run_main(main, ["--run", str(tmp_path / "nope")]) == 2


def test_the_readme_pictures_in_the_checkout_change_only_when_asked(readme_run, tmp_path,
                                                                    monkeypatch, capsys):
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    assert figures.readme.README_IMAGES == repo / "docs" / "images"
    run = tmp_path / "run"
    shutil.copytree(readme_run, run)
    images = tmp_path / "images"
    monkeypatch.setattr(figures.readme, "README_IMAGES", images)
    assert run_main(main, ["--run", str(run)]) == 0          # by default: into the run
    assert sorted(p.name for p in (run / "figures" / "readme").iterdir()) == sorted(
        README_FIGURES.values())
    assert not images.exists()
    assert run_main(main, ["--run", str(run), "--update-readme"]) == 0
    assert sorted(p.name for p in images.iterdir()) == sorted(README_FIGURES.values())
    assert "replaced the README's pictures" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:       # one place or the other, never both
        main(["--run", str(run), "--update-readme", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
