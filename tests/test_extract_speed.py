"""What ``extract bench`` measures: the floor's batches and forward, the phases of a store."""

from collections import Counter

import numpy as np

from datasets_build.dataset import load_tagged_dataset
from extract.bench_floor import extract_batches, floor_forward, phase_lines, store_phases
from extract.extractor import extract_store
from extract.models import load_hf_model
from extract.phases import PHASES


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
