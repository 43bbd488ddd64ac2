"""The public Python API: ``import headprobe as hp``, its readers and its errors."""

import subprocess
import sys
from pathlib import Path

import pytest

import headprobe as hp
from headprobe.atomic import check_target
from headprobe.cli import error_line
from headprobe.errors import UsageError, opt

REPO = Path(__file__).resolve().parents[1]
PUBLIC = {"UsageError", "load_dataset", "open_store", "read_probes", "read_study", "load_model",
          "fit_probe"}


def test_public_names_are_the_stage_readers():
    from datasets_build.dataset import load_tagged_dataset
    from extract.models import load_model
    from extract.store import open_store
    from probing.grid import fit_probe
    from probing.results import read_results
    from probing.study_io import read_study

    assert set(hp.__all__) == PUBLIC and PUBLIC <= set(dir(hp))
    assert hp.load_dataset is load_tagged_dataset and hp.open_store is open_store
    assert hp.read_probes is read_results and hp.read_study is read_study
    assert hp.load_model is load_model and hp.UsageError is UsageError
    assert hp.fit_probe is fit_probe
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        hp.fit  # noqa: B018


def test_readers_return_the_right_objects(shared_dataset, shared_store, probing_results,
                                          quote_study):
    from datasets_build.dataset import TaggedDataset
    from extract.store import Store
    from probing.results import ProbeResults
    from probing.study_io import StudyResults

    ds = hp.load_dataset(shared_dataset)
    assert isinstance(ds, TaggedDataset) and ds.n_stories == 40
    with hp.open_store(shared_store) as store:
        assert isinstance(store, Store) and store.n_tokens == ds.n_tokens
    probes = hp.read_probes(probing_results)
    assert isinstance(probes, ProbeResults) and probes.layers == [0, 2]
    study = hp.read_study(quote_study)
    assert isinstance(study, StudyResults) and study.study == "quote"
    assert study.arrays["ratio"].shape == (8, 16) and study.report.startswith("Quotation")


def test_readers_refuse_bad_input_with_usage_errors(tmp_path):
    assert issubclass(hp.UsageError, ValueError)
    (tmp_path / "notes.h5").write_text("not HDF5")
    for read, path in ((hp.open_store, tmp_path / "missing.h5"),
                       (hp.open_store, tmp_path / "notes.h5"),
                       (hp.read_probes, tmp_path), (hp.read_study, tmp_path),
                       (hp.load_dataset, tmp_path)):
        with pytest.raises(hp.UsageError):
            read(path)
    with pytest.raises(ValueError, match="not found; make it with"):
        hp.open_store(tmp_path / "missing.h5")


def test_options_read_as_parameters_from_python_and_as_flags_on_the_command_line(tmp_path):
    err = UsageError(f"runs/x already exists; pass {opt('overwrite', True)} to replace it")
    assert str(err) == "runs/x already exists; pass overwrite=True to replace it"
    assert error_line(err) == "runs/x already exists; pass --overwrite to replace it"
    err = UsageError(f"{opt('min_support')} must be >= 0 and {opt('k')} at least 1")
    assert str(err) == "min_support must be >= 0 and k at least 1"
    assert error_line(err) == "--min-support must be >= 0 and -k at least 1"
    with pytest.raises(UsageError) as caught:
        check_target(tmp_path, overwrite=False)
    assert str(caught.value).endswith("pass overwrite=True to replace it")
    assert error_line(caught.value).endswith("pass --overwrite to replace it")


def test_import_headprobe_loads_no_stage_and_no_model_library():
    heavy = ("torch", "transformers", "transformer_lens", "datasets", "spacy", "sklearn",
             "h5py", "matplotlib", "datasets_build", "extract", "probing", "figures")
    code = ("import sys, headprobe, headprobe.errors, headprobe.cli; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("what", ["dataset", "probes", "study"])
def test_reprs_summarise_in_one_paragraph(what, request):
    fixture, read, name = {"dataset": ("shared_dataset", hp.load_dataset, "TaggedDataset"),
                           "probes": ("probing_results", hp.read_probes, "ProbeResults"),
                           "study": ("quote_study", hp.read_study, "StudyResults")}[what]
    path = request.getfixturevalue(fixture)
    opened = read(path)
    text = repr(opened)
    lines = text.splitlines()
    assert text.startswith(f"{name}(path={str(path)!r}") and text.endswith(")")
    assert 1 <= len(lines) <= 8 and all(line.strip() and len(line) <= 100 for line in lines)
    assert "array(" not in text and "..." in text                 # names, not numbers
    text = " ".join(text.split())
    if what == "dataset":
        assert f"n_stories={opened.n_stories}," in text and "in all)" in text
    else:
        arrays = opened.arrays
        first = next(iter(arrays))
        shape = "x".join(map(str, arrays[first].shape))
        assert f"{first}:{arrays[first].dtype}[{shape}]" in text
        assert f"({len(arrays)} in all)" in text
