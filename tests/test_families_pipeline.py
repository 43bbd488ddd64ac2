"""Every stage on stores of a Llama-shaped (grouped-query, rotary) and a GPT-NeoX-shaped
tiny model: probe grid, top/summary/export, the case studies, the figures and the viewer."""

import json

import h5py
import numpy as np
import pytest

from extract.__main__ import main as extract_main
from figures.__main__ import main as figures_main
from headprobe.cli import run_main
from probing.__main__ import main as probing_main
from probing.results import read_results
from probing.study_io import read_study

PIPELINE = ("llama", "gpt_neox")
CLEAN, CORRUPT = "Lily gave the ball to Tom. Later, Tom gave it back to", \
    "Lily gave the ball to Sam. Later, Tom gave it back to"


def run(main, prog, *args):
    assert run_main(main, [str(a) for a in args], prog=prog) == 0, args


def probe(*args):
    run(probing_main, "python -m probing", *args)


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=PIPELINE)
def family_run(request, family_models, gpt2_dataset, tmp_path_factory):
    """(family, run directory, model) after extract, probing fit and every case study."""
    family, model = request.param, family_models[request.param]
    out = tmp_path_factory.mktemp(f"run_{family}")
    sites = "key,query" + (",key_rot" if family == "llama" else "")
    run(extract_main, "python -m extract", "--dataset", gpt2_dataset, "--model", model,
        "--run", out, "--sites", sites + ",activity", "--quiet")
    probe("fit", "--run", out, "--bootstrap", "50", "--sites", sites, "--tags", "DT,NN,VBD,PRP")
    probe("quote", "--run", out, "--max-stories", "6")
    probe("tag-induction", "--run", out, "--before", "VBD", "--max-stories", "6")
    probe("ablate", "--run", out, "--heads", "1.0,1.3", "--random-draws", "2")
    probe("patch", "--run", out, "--model", model, "--site", "head", "--clean", CLEAN,
          "--corrupt", CORRUPT)
    probe("repeated", "--run", out, "--model", model, "--seq-len", "8", "--batch", "4")
    return family, out, model


def test_probe_grid_holds_keys_per_key_value_head(family_run, capsys):
    family, out, _ = family_run
    res = read_results(out / "probes")
    kv = 2 if family == "llama" else 4
    assert res.heads("key") == kv and res.heads("query") == 4 and res.n_heads == 4
    assert res.head_axes[res.site_index("key")] == ("kv_head" if kv < 4 else "head")
    f1 = res.arrays["f1"][res.site_index("key")]
    assert np.isnan(f1[:, kv:]).all() and np.isfinite(f1[:, :kv]).all()
    assert (res.arrays["n_iter"][res.site_index("key"), :, kv:] == -1).all()
    assert res.grid("f1", "key", res.tags[0]).shape == (2, kv)
    if family == "llama":
        assert res.heads("key_rot") == 2
    capsys.readouterr()
    probe("top", "--run", out, "--tag", "DT", "--site", "key", "-k", "8")
    table = capsys.readouterr().out
    rows = table.split("\n\n")[0].splitlines()[2:]    # the table, not the legend below it
    cells = [line.split()[1] for line in rows]
    assert len(cells) == 2 * kv       # every real cell, no padding
    assert all(("KV" in c) == (kv < 4) for c in cells)
    probe("export", "--run", out, "--format", "seed004", "--out", out / "seed004")
    keys = json.loads((out / "seed004" / "key_probes.json").read_text())
    queries = json.loads((out / "seed004" / "query_probes.json").read_text())
    assert [len(layer) for layer in keys] == [kv, kv]
    assert [len(layer) for layer in queries] == [4, 4]
    assert 0.0 <= keys[1][kv - 1]["DT"]["f1-score"] <= 1.0
    probe("summary", "--run", out)
    assert "probe grid" in capsys.readouterr().out


def test_case_studies_use_the_per_query_head_pattern(family_run):
    family, out, _ = family_run
    studies = out / "studies"
    for name in ("quote", "tag-induction"):
        r = read_study(studies / name)
        assert r["example_pattern"].shape[0] == r["example_pattern"].shape[1]
        np.testing.assert_allclose(r["example_pattern"].sum(-1), 1.0, atol=1e-4)
    assert read_study(studies / "tag-induction")["score_before"].shape == (2, 4)
    assert read_study(studies / "patch")["grid"].shape == (2, 4)
    repeated = read_study(studies / "repeated")
    assert repeated["induction_score"].shape == (2, 4)
    circuit = repeated.meta["circuit"]
    assert 0.0 <= circuit["k_circuit_top1"] <= 1.0
    assert repeated["k_composition"].shape == (2, 4, 2, 4)      # per query head
    assert np.isfinite(repeated["k_composition"][0, :, 1, :]).all()
    assert repeated["ablation_drop"].shape == (2, 4)
    ablate = read_study(studies / "ablate")
    assert np.isfinite(ablate["ablated_delta"]).all() and ablate.meta["heads"] == "1.0,1.3"


def test_figures_and_viewer_draw_the_family_results(family_run, tmp_path):
    family, out, model = family_run
    run(figures_main, "python -m figures", "--run", out, "--format", "png")
    drawn = {p.stem for p in (out / "figures").rglob("*.png")}
    assert {"probes_keys", "probes_queries", "f1_DT", "quote_activity", "tag_induction_heads",
            "ablation", "patching", "repeated_scores"} <= drawn, drawn
    page = tmp_path / "viewer.html"
    with h5py.File(out / "activations.h5", "r") as f:
        story = int(f["tokens/story_id"][0])
    run(figures_main, "python -m figures", "viewer", "--store", out / "activations.h5",
        "--model", model, "--story", story, "--out", page)
    text = page.read_text()
    assert ('"kv_head":[0,0,1,1]' in text) == (family == "llama")
