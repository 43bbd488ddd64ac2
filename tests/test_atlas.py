"""The head atlas: built from a small run (a probe grid of the shared store and synthetic
studies), then driven in headless Chromium as the viewer's page is."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from figures.__main__ import main
from figures.atlas_data import TOP_K, Grid
from headprobe.cli import run_main
from headprobe.errors import UsageError
from headprobe.heads import head_label
from probing.controls import array_suffix, strongest_control
from probing.results import read_results
from probing.study_io import read_study
from probing.top import top_cells
from tests.fixtures_figures import write_synthetic_chat_studies, write_synthetic_studies
from tests.test_viewer import CHROMIUM, DevTools, _click, open_page

MAX_BYTES = 10 * 2**20


def shown(value: float) -> str:
    """A stored number as the page shows it: embedded to 4 decimals, shown to 3."""
    return f"{round(float(value), 4):.3f}"


@pytest.fixture
def atlas_run(tmp_path: Path, probing_results: Path, shared_store: Path) -> Path:
    """A run directory: probes/ (``probing fit`` on the shared store), studies/* and the
    store itself (linked)."""
    run = tmp_path / "run"
    write_synthetic_studies(run / "studies", np.random.default_rng(0))
    shutil.copytree(probing_results, run / "probes")
    (run / "activations.h5").symlink_to(shared_store.resolve())
    return run


def _ready(page: DevTools) -> None:
    deadline = time.monotonic() + 10
    while page.js("document.body && document.body.dataset.ready") != "1":
        assert time.monotonic() < deadline, "the page did not finish its script"
        time.sleep(0.05)


def _choose(page: DevTools, select: str, value: str) -> None:
    page.js(f"(() => {{ const s = document.getElementById({json.dumps(select)});"
            f" s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})()")


def _grid_values(page: DevTools) -> dict[str, float | None]:
    cells = page.js("Array.from(document.querySelectorAll('#grid td.head'))"
                    ".map(td => [td.dataset.head, td.dataset.value])")
    return {name: (float(v) if v else None) for name, v in cells}


def test_list_names_the_atlas_and_a_run_without_results_is_one_line(tmp_path: Path, capsys):
    assert main(["list"]) == 0
    assert any(line.startswith("atlas ") for line in capsys.readouterr().out.splitlines())
    empty = tmp_path / "run"
    empty.mkdir()
    assert run_main(main, ["atlas", "--run", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python -m probing fit" in err
    assert not (empty / "figures").exists()
    # studies without a number per head (chat-log studies) are not enough either
    write_synthetic_chat_studies(empty / "studies", np.random.default_rng(0))
    assert run_main(main, ["atlas", "--run", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no per-head results" in err
    assert "python -m probing fit" in err and not (empty / "figures").exists()


def test_key_value_cells_are_shown_on_the_query_heads_that_read_them():
    grid = Grid(n_layers=3, n_heads=4, n_kv_heads=2)
    values = np.array([[1.0, 2.0], [3.0, 4.0]])            # [layers 0 and 2, kv heads]
    placed = grid.place([0, 2], values, kv=True)
    np.testing.assert_array_equal(placed[0], [1, 1, 2, 2])
    np.testing.assert_array_equal(placed[2], [3, 3, 4, 4])
    assert np.isnan(placed[1]).all()
    query = grid.place([1], np.array([[5.0, 6.0, 7.0, 8.0]]))
    np.testing.assert_array_equal(query[1], [5, 6, 7, 8])


def test_only_atlas_redraws_just_the_page(atlas_run: Path, capsys):
    assert main(["--run", str(atlas_run), "--only", "atlas"]) == 0
    assert sorted(p.name for p in (atlas_run / "figures").iterdir()) == ["atlas.html",
                                                                          "index.html"]
    assert 'href="atlas.html"' in (atlas_run / "figures" / "index.html").read_text()
    page = (atlas_run / "figures" / "atlas.html").read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert len(page.encode()) < MAX_BYTES
    assert '"trace":{"story":' in page


def test_a_run_store_that_cannot_give_a_trace_leaves_it_out(atlas_run: Path, monkeypatch,
                                                             capsys):
    import headprobe.tokenization

    def refuse(name: str):
        raise UsageError(f"cannot load tokenizer {name!r}")

    monkeypatch.setattr(headprobe.tokenization, "load_tokenizer", refuse)
    assert main(["atlas", "--run", str(atlas_run)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("atlas without an activity trace: cannot load tokenizer")
    assert '"trace":null' in (atlas_run / "figures" / "atlas.html").read_text()
    # a store named on the command line must give its trace
    out = atlas_run / "other.html"
    assert run_main(main, ["atlas", "--run", str(atlas_run), "--store",
                           str(atlas_run / "activations.h5"), "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install "
                    "chromium); the page cannot be driven without a browser")
def test_atlas_grid_card_and_search_in_chromium(atlas_run: Path, tmp_path: Path):
    assert main(["atlas", "--run", str(atlas_run)]) == 0
    page_path = atlas_run / "figures" / "atlas.html"
    probes = read_results(atlas_run / "probes")
    quote = read_study(atlas_run / "studies" / "quote")
    n_layers = max(max(probes.layers) + 1, quote["ratio"].shape[0])
    n_heads = max(max(probes.site_heads), quote["ratio"].shape[1])
    profile = tmp_path / "profile"
    profile.mkdir()
    proc, page = open_page(page_path, profile)
    try:
        _ready(page)
        # Every head of the grid is there.
        shown = _grid_values(page)
        assert sorted(shown) == sorted(head_label(la, h) for la in range(n_layers)
                                       for h in range(n_heads))
        _check_hover(page, probes)
        # Another metric recolours it with the stored numbers.
        before = page.js("Array.from(document.querySelectorAll('#grid td.head'))"
                         ".map(td => td.style.background)")
        _choose(page, "kind", "quote|quote: ratio")
        ratio = _grid_values(page)
        for (layer, head), value in np.ndenumerate(quote["ratio"]):
            assert ratio[head_label(layer, head)] == pytest.approx(value, abs=1e-4)
        after = page.js("Array.from(document.querySelectorAll('#grid td.head'))"
                        ".map(td => td.style.background)")
        assert after != before
        _check_card(page, probes, quote)
        _check_trace(page, atlas_run / "activations.h5")
        _check_search(page, probes)
        # Ranking heads by the measure the grid shows lists the largest quote ratios.
        page.js("document.getElementById('search-metric').click()")
        listed = page.js("Array.from(document.querySelectorAll('#search tbody tr'))"
                         ".map(r => r.dataset.cell)")
        order = np.argsort(-quote["ratio"], axis=None, kind="stable")[:len(listed)]
        assert listed == [head_label(*divmod(int(i), quote["ratio"].shape[1])) for i in order]
    finally:
        page.close()
        proc.terminate()
        proc.wait(timeout=10)


def _check_hover(page: DevTools, probes) -> None:
    """The first measure is probe F1 of the first site and tag: a head's hover text gives
    its value, interval and the strongest control's F1, as stored."""
    assert page.js("document.getElementById('kind').value") == "probes|probe F1"
    site, tag = page.js("[document.getElementById('site').value,"
                        " document.getElementById('tag').value]")
    s, t, li = probes.site_index(site), probes.tag_index(tag), probes.layers.index(2)
    control = strongest_control(probes.controls)
    a = probes.arrays
    title = page.js("document.querySelector('#grid td.head[data-head=\"L2H3\"]').title")
    assert title == (f"L2H3  probe F1 {tag} ({site}): {shown(a['f1'][s, li, 3, t])} "
                     f"[{shown(a['f1_lo'][s, li, 3, t])}, {shown(a['f1_hi'][s, li, 3, t])}]; "
                     f"{control} F1: {shown(a['f1_' + array_suffix(control)][s, li, 3, t])}")


def _check_card(page: DevTools, probes, quote) -> None:
    """Clicking L2H1 shows its card: its quote ratio and rank, its best key tag's F1."""
    _click(page, '#grid td.head[data-head="L2H1"]')
    assert page.js("document.getElementById('card').dataset.head") == "L2H1"
    row = page.js("(() => { const r = document.querySelector("
                  "'#card tr[data-metric=\"quote|ratio\"]');"
                  " return [r.dataset.value, r.cells[4].textContent]; })()")
    ratio = quote["ratio"]
    assert float(row[0]) == pytest.approx(ratio[2, 1], abs=1e-4)
    assert row[1] == f"{int((ratio > ratio[2, 1]).sum()) + 1} of {ratio.size}"
    s, li = probes.site_index("key"), probes.layers.index(2)
    f1 = probes.arrays["f1"][s, li, 1]
    best = int(np.nanargmax(f1))
    first = page.js("(() => { const r = document.querySelector("
                    "'#card table[data-site=\"key\"] tbody tr');"
                    " return [r.dataset.tag, r.cells[1].textContent, r.cells[2].textContent];"
                    " })()")
    assert first[0] == probes.tags[best]
    assert float(first[1]) == pytest.approx(f1[best], abs=5e-4)
    lo, hi = probes.arrays["f1_lo"][s, li, 1, best], probes.arrays["f1_hi"][s, li, 1, best]
    assert first[2] == f"[{shown(lo)}, {shown(hi)}]"


def _check_trace(page: DevTools, store_path: Path) -> None:
    """The open card (L2H1) shows the head's stored activity on the trace's story."""
    from extract.store import open_store
    from headprobe.stories import find_story, read_stories

    story = page.js("JSON.parse(document.getElementById('data').textContent).trace.story")
    bars = page.js("Array.from(document.querySelectorAll('#card .trace'))"
                   ".pop().children.length")
    with open_store(store_path) as store:
        rows = find_story(read_stories(store), story).rows[:bars]
        activity = store.read_layer("activity", 2, rows)[:, 1]
    titles = page.js("Array.from(Array.from(document.querySelectorAll('#card .trace'))"
                     ".pop().children).map(b => b.title.split(': ').pop())")
    assert titles == [shown(v) for v in activity]


def _check_search(page: DevTools, probes) -> None:
    """A tag search lists the cells ``probing top`` ranks first, in its order."""
    support = probes.arrays["support"][0, 0, 0]
    tag = probes.tags[int(np.argsort(-support)[1])]
    _choose(page, "search-by", "f1")
    _choose(page, "search-tag", tag)
    listed = page.js("Array.from(document.querySelectorAll('#search tbody tr'))"
                     ".map(r => [r.dataset.site, r.dataset.cell])")
    expected = [[r["site"], r["cell"]] for r in top_cells(probes, tag, k=TOP_K)]
    assert listed == expected
    # Each listed cell links to its head's card.
    _click(page, "#search tbody tr a.head")
    assert page.js("document.getElementById('card').dataset.head") == expected[0][1]
