"""Figures drawn from results written by the real writers: a probe grid fitted by
``probing fit`` on a tiny store, and case studies run on the shared model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from extract.store import open_store, write_store
from figures.__main__ import main as figures_main
from figures.registry import plan_all
from figures.sources import discover
from headprobe.cli import run_main
from probing.__main__ import main as probing_main
from probing.results import read_results
from probing.study_io import write_study

TAGS = {"fine": ["BOS", "NN", "VBD", "``", "DT"], "coarse": ["BOS", "NOUN", "VERB", "PUNCT",
                                                              "DET"]}
N_LAYERS, N_HEADS = 2, 3


def tiny_store(path: Path, signal: tuple[int, int], seed: int = 0) -> Path:
    """30 stories of 20 tokens; only the keys of head ``signal`` (layer, head) encode the tag."""
    rng = np.random.default_rng(seed)
    n_stories, per = 30, 20
    n = n_stories * per
    story, position = np.repeat(np.arange(n_stories), per), np.tile(np.arange(per), n_stories)
    fine = rng.integers(1, 5, n)
    fine[position == 0] = 0
    keys = rng.normal(size=(n, N_LAYERS, N_HEADS, 4)).astype(np.float32)
    queries = rng.normal(size=(n, N_LAYERS, N_HEADS, 4)).astype(np.float32)
    keys[:, signal[0], signal[1]] += 4 * np.eye(5)[fine][:, 1:]
    table = {"input_id": fine + 10, "story_id": story, "position": position,
             "fine_tag": fine, "coarse_tag": fine, "split": story >= 22}
    return write_store(path, table, {"key": keys, "query": queries}, tags=TAGS,
                       dtype="float32")


def heat(fig) -> list:
    return [ax for ax in fig.get_axes() if ax.get_images()]


@pytest.fixture(scope="module")
def probe_results(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("probes")
    store = tiny_store(tmp / "a.h5", signal=(1, 2))
    control = tiny_store(tmp / "r.h5", signal=(0, 0))
    out = tmp / "probes"
    assert run_main(probing_main, ["fit", "--store", str(store), "--out", str(out),
                                   "--control-store", str(control), "--bootstrap", "50"],
                    prog="python -m probing") == 0
    return out


def test_probe_figures_from_a_real_fit(probe_results: Path, tmp_path: Path):
    res = read_results(probe_results)
    planned, not_planned = plan_all(discover([probe_results]))
    assert [name for name, _ in not_planned] == ["probes_compression"]  # fitted without MDL
    by_name = {p.name: p for p in planned}
    grids = {f"probes_{s}{x}" for s in ("keys", "queries")
             for x in ("", "_shuffled", "_random", "_selectivity")}
    assert set(by_name) == grids | {f"f1:{t}" for t in res.tags} | {"probes_selectivity"}

    keys = by_name["probes_keys"].draw()
    panels = heat(keys)
    lexical = res.arrays["f1_lexical"][0, 0, 0]
    assert [ax.get_title() for ax in panels] == [
        f"{t} (n={int(n)})\nlex {x:.2f}" for t, n, x in zip(
            res.tags, res.arrays["support"][0, 0, 0], lexical, strict=True)]
    # a dot on every cell whose F1 exceeds the lexical baseline
    for k, ax in enumerate(panels):
        dots = sum(len(c.get_offsets()) for c in ax.collections)
        assert dots == np.sum(res.grid("f1", "key", res.tags[k]) > lexical[k])
    np.testing.assert_allclose(panels[1].get_images()[0].get_array(), res.grid("f1", "key", "VBD"))
    random = heat(by_name["probes_keys_random"].draw())
    np.testing.assert_allclose(random[1].get_images()[0].get_array(),
                               res.grid("f1_random", "key", "VBD"))
    # selectivity against the strongest control held: random weights, whose queries here
    # are the trained store's (same seed), so the query selectivity is zero everywhere
    sel = heat(by_name["probes_queries_selectivity"].draw())
    expected = res.selectivity("random")[res.sites.index("query"), :, :, res.tags.index("NN")]
    np.testing.assert_allclose(sel[0].get_images()[0].get_array(), expected)
    assert not expected.any() and res.grid("selectivity", "query", "NN").any()

    detail = heat(by_name["f1:``"].draw())
    assert len(detail) == 8  # keys and queries x (F1, shuffled, random model, selectivity)
    assert detail[0].get_title().startswith("keys: F1, best L1H2 = ")  # the planted head
    assert detail[2].get_title().startswith("keys: control, randomly initialised model")
    assert detail[3].get_title().startswith("keys: selectivity vs randomly initialised model")

    out = tmp_path / "figs"
    assert run_main(figures_main, ["--results", str(probe_results), "--out", str(out),
                                   "--format", "png", "--only", "probes_keys,f1:``"],
                    prog="python -m figures") == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["f1_openquote.png", "probes_keys.png"]


def test_study_figures_from_real_writers(studies_store, study_model, tmp_path: Path):
    from probing.studies import ablation, quote, stats

    studies = tmp_path / "studies"
    with open_store(studies_store) as store:
        results = {
            "ablate": ablation.ablation_study(store, study_model, [(1, 2)], draws=2,
                                              max_stories=2),
            "quote": quote.quote_study(store, study_model, max_stories=4),
        }
    results["stats"] = stats.stats_study(study_model, "Tom said: \"Hi, Sue.\" She smiled.")
    layouts = {"ablate": ablation.LAYOUT, "quote": quote.LAYOUT, "stats": stats.LAYOUT}
    for name, (arrays, meta, report) in results.items():
        write_study(studies / name, layouts[name], arrays, meta, report)

    planned, not_planned = plan_all(discover([studies]))
    assert not not_planned
    figs = {p.name: p.draw() for p in planned}
    assert set(figs) == {"ablation", "activation_stats", "activation_hist", "mlp_sparsity",
                         "quote_heads", "quote_activity", "quote_attention", "quote_shift"}

    arrays = results["ablate"][0]
    bars = figs["ablation"].get_axes()[0].patches
    order = np.argsort(-(arrays["ablated_delta"] - arrays["random_delta"].mean(0)),
                       kind="stable")
    np.testing.assert_allclose([b.get_height() for b in bars[:len(order)]],
                               arrays["ablated_delta"][order])

    arrays = results["stats"][0]
    names = list(arrays["summary_names"])
    boxes = figs["activation_stats"].get_axes()
    assert len(boxes) == 3  # attention output, normalised residual, MLP neurons
    medians = [line.get_ydata()[0] for line in boxes[0].get_lines()
               if len(line.get_xdata()) == 2 and line.get_color() == "C1"]
    np.testing.assert_allclose(medians, arrays["attn_out_summary"][:, names.index("median")])
    assert [ax.get_title() for ax in figs["activation_hist"].get_axes()][:2] == [
        "attention output (hook_attn_out)",
        "residual after attention + LayerNorm (ln2.hook_out)"]

    arrays, meta = results["quote"][:2]
    trace = figs["quote_activity"].get_axes()[0]
    assert f"L{meta['best_head'][0]}H{meta['best_head'][1]}" in trace.get_title()
    dashed = [line.get_xdata()[0] for line in trace.get_lines() if line.get_linestyle() == "--"]
    assert dashed == np.flatnonzero(arrays["example_closing"]).tolist()
    shift = figs["quote_shift"].get_axes()
    layer, head = meta["close_head"]
    to_close = [line for line in shift[-1].get_lines() if line.get_label() == "to the closing mark"]
    np.testing.assert_allclose(to_close[0].get_ydata(), arrays["shift_to_close"][:, layer, head])


def test_chat_study_figures_from_real_writers(chat_organism, tmp_path: Path):
    prompt = "[04/11/2023, 18:21:13] {SENDER}: ok\\n[04/11/2023, 18:"
    runs = {"next-token": ["--prompt", prompt, "--vary", "SENDER=Member 1,Member 2", "-k", "3"],
            "time-order": ["--prompts", "8", "--generations", "2", "--gen-tokens", "120"]}
    for study, argv in runs.items():
        assert run_main(probing_main, [study, "--model", str(chat_organism), *argv, "--out",
                                       str(tmp_path / "studies" / study)],
                        prog="python -m probing") == 0
    planned, not_planned = plan_all(discover([tmp_path / "studies"]))
    figs = {p.name: p.draw() for p in planned}
    # a barely trained model may write no readable pair of timestamps: then only that
    # histogram is not planned, and it says why
    assert all(name == "time_order_hist" and "gen_deltas is empty" in why
               for name, why in not_planned)
    assert {"next_token_table", "time_order_mass"} <= set(figs)
    table = figs["next_token_table"].get_axes()[0]
    assert [t.get_text() for t in table.get_yticklabels()] == ["Member 1", "Member 2"]
    shown = table.get_images()[0].get_array()
    assert shown.shape[0] == 2 and np.all((shown >= 0) & (shown <= 1))
    bars = figs["time_order_mass"].get_axes()[0].patches
    assert max(b.get_y() + b.get_height() for b in bars) == pytest.approx(1.0, abs=1e-3)


def test_control_task_selectivity_and_compression_figures(tmp_path: Path):
    store = tiny_store(tmp_path / "a.h5", signal=(1, 2))
    control = tiny_store(tmp_path / "r.h5", signal=(0, 0))
    out = tmp_path / "probes"
    assert run_main(probing_main, ["fit", "--store", str(store), "--out", str(out),
                                   "--control-store", str(control), "--controls",
                                   "shuffled,control-task", "--mdl"],
                    prog="python -m probing") == 0
    res = read_results(out)
    planned, not_planned = plan_all(discover([out]))
    assert not not_planned
    by_name = {p.name: p for p in planned}
    assert {"probes_keys_control_task", "probes_selectivity", "probes_compression"} <= set(
        by_name)
    panels = heat(by_name["probes_compression"].draw())
    assert len(panels) == 6  # keys and queries x (tags, random model, control task)
    assert panels[0].get_title().startswith("keys: tags, trained model\n(best L1H2 = ")
    np.testing.assert_allclose(panels[1].get_images()[0].get_array(),
                               res.grid("compression_random", "key"))
    shared = max(res.arrays[n].max() for n in ("compression", "compression_random",
                                                "compression_control_task"))
    assert all(ax.get_images()[0].norm.vmax == pytest.approx(shared) for ax in panels)
    panels = heat(by_name["probes_selectivity"].draw())
    assert [ax.get_title().split("\n")[0] for ax in panels[:2]] == [
        "keys: minus control task", "keys: minus shuffled labels"]
    np.testing.assert_allclose(panels[0].get_images()[0].get_array(),
                               res.grid("selectivity_accuracy", "key"))
    detail = heat(by_name["f1:VBD"].draw())
    assert len(detail) == 10  # per site: F1, control task, shuffled, random model, selectivity
    assert "selectivity vs randomly initialised model" in detail[4].get_title()  # strongest
