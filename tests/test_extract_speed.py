"""What ``extract bench`` measures: the floor's batches and forward, the phases of a store."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from datasets_build.dataset import load_tagged_dataset
from extract.batch_trial import CANDIDATES
from extract.bench_floor import extract_batches, floor_forward, phase_lines, store_phases
from extract.extractor import KILL_AFTER_ENV, extract_store
from extract.models import load_hf_model
from extract.phases import PHASES
from extract.store import open_store

REPO = Path(__file__).resolve().parents[1]


def _stripped(ids):
    return tuple(np.trim_zeros(np.asarray(ids), "b").tolist())


def test_floor_runs_the_blocks_over_exactly_extracts_batches(untagged_dataset, shared_model,
                                                             tmp_path):
    hf = load_hf_model(str(shared_model))
    batches = extract_batches(untagged_dataset, hf, 512, ["key", "query"], tmp_path / "s.h5")
    stories = [ids for _, ids, _ in load_tagged_dataset(untagged_dataset).iter_stories()]
    rows = [row for batch in batches for row in batch]
    assert Counter(map(_stripped, rows)) == Counter(map(_stripped, stories))
    assert len(batches) > 1
    assert all(len(b) == 1 or b.size <= 512 for b in batches)
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "s.h5.partial").exists()
    calls = Counter()
    handles = [hf.lm_head.register_forward_hook(lambda *a: calls.update(["unembed"])),
               hf.transformer.h[-1].register_forward_hook(lambda *a: calls.update(["last"]))]
    floor_forward(hf, batches)
    for handle in handles:
        handle.remove()
    assert calls == {"last": len(batches)}


def test_a_store_records_the_phases_of_its_loop(untagged_dataset, shared_model, tmp_path):
    out = extract_store(untagged_dataset, str(shared_model), tmp_path / "s.h5",
                        sites=("key", "query", "activity"), batch_tokens=256, chunk_rows=300)
    loop, phases = store_phases(out)
    assert set(phases) == set(PHASES) and all(v >= 0 for v in phases.values())
    for name in ("forward", "projection", "copies", "write", "checksums"):
        assert phases[name] > 0, name
    # the main thread's phases are disjoint intervals of the loop
    main = phases["forward"] + phases["projection"] + phases["copies"] + phases["wait"]
    assert main <= loop + 0.01
    lines = phase_lines(loop + 1.0, loop, phases)
    assert len(lines) == len(PHASES) + 2 and "setup" in lines[0]


def test_auto_batch_tokens_on_the_cpu_is_the_fastest_of_a_trial(untagged_dataset,
                                                                shared_model, tmp_path):
    sites = ("key", "query", "activity")
    auto = extract_store(untagged_dataset, str(shared_model), tmp_path / "auto.h5",
                         sites=sites, dtype="float32", batch_tokens="auto")
    with open_store(auto) as store:
        chosen, trial = store.attrs["batch_tokens"], store.attrs["batch_tokens_trial"]
        assert sorted(map(int, trial)) == list(CANDIDATES) and min(trial.values()) > 0
        assert chosen == int(min(trial, key=trial.__getitem__))
    fixed = extract_store(untagged_dataset, str(shared_model), tmp_path / "fixed.h5",
                          sites=sites, dtype="float32", batch_tokens=512)
    with open_store(auto) as a, open_store(fixed) as b:
        for site in sites:
            for layer in (0, a.n_layers - 1):
                np.testing.assert_allclose(a.read_layer(site, layer), b.read_layer(site, layer),
                                           atol=1e-5, rtol=1e-5, err_msg=site)


def test_a_resumed_auto_store_keeps_the_batch_size_it_was_started_with(
        untagged_dataset, shared_model, tmp_path):
    out = tmp_path / "s.h5"
    cmd = [sys.executable, "-m", "extract", "--dataset", str(untagged_dataset), "--model",
           str(shared_model), "--out", str(out), "--chunk-rows", "512", "--quiet"]
    env = {**os.environ, KILL_AFTER_ENV: "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([*cmd, "--batch-tokens", "2048"], env=env, cwd=REPO,
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    env.pop(KILL_AFTER_ENV)
    resumed = subprocess.run([*cmd, "--batch-tokens", "auto", "--resume"], env=env, cwd=REPO,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    with open_store(out) as store:
        assert store.attrs["batch_tokens"] == 2048


def test_a_float16_store_is_the_float32_store_rounded(untagged_dataset, shared_model, tmp_path):
    """The forward fills its outputs in the storage dtype: one rounding of the same values."""
    sites = ("key", "query", "activity", "entropy")
    stores = {dtype: extract_store(untagged_dataset, str(shared_model),
                                   tmp_path / f"{dtype}.h5", sites=sites, dtype=dtype)
              for dtype in ("float16", "float32")}
    with open_store(stores["float16"]) as half, open_store(stores["float32"]) as full:
        assert half.file["keys"].dtype == np.float16
        for site in sites:
            for layer in range(half.n_layers):
                got = half.read_layer(site, layer)
                want = full.read_layer(site, layer).astype(np.float16).astype(np.float32)
                np.testing.assert_allclose(got, want,
                                           rtol=2e-3, atol=1e-6, err_msg=f"{site} {layer}")
