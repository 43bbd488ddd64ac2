"""A store records the fingerprint of its tokenizer's vocabulary; every command given a
tokenizer or a model checks it against the store's before it decodes a token id."""

from pathlib import Path

import numpy as np

from extract.store import open_store, write_store
from headprobe.tokenization import load_tokenizer, vocab_hash
from tests.test_stage_faults import one_line_error, run


def test_the_store_records_its_tokenizers_fingerprint(shared_store, shared_model):
    with open_store(shared_store) as store:
        assert store.attrs["tokenizer_vocab_hash"] == vocab_hash(load_tokenizer(str(shared_model)))


def test_probing_fit_refuses_a_tokenizer_of_another_vocabulary(shared_store, gpt2_tokenizer,
                                                               tmp_path, capsys):
    assert run("probing", "fit", "--store", shared_store, "--out", tmp_path / "probes",
               "--layers", "0", "--sites", "key", "--bootstrap", "10",
               "--controls", "control-task", "--word-types", "lower",
               "--tokenizer", gpt2_tokenizer) == 2
    line = one_line_error(capsys)
    assert f"tokenizer {gpt2_tokenizer} has another vocabulary" in line, line
    assert not (tmp_path / "probes").exists()


def test_the_viewer_refuses_a_model_of_another_vocabulary(shared_model, gpt2_tokenizer,
                                                          tmp_path, capsys):
    # token ids of the GPT-2 vocabulary, beyond the shared model's 4096 embeddings
    gpt2 = load_tokenizer(str(gpt2_tokenizer))
    ids = np.array(gpt2.encode(" Once upon a time, a huge elephant marched.")[:12])
    assert ids.max() >= 4096
    n = len(ids)
    store = tmp_path / "store.h5"
    write_store(store, {"input_id": ids, "story_id": np.zeros(n, int), "position": np.arange(n)},
                {"activity": np.zeros((n, 8, 16), np.float32)},
                attrs={"tokenizer_vocab_hash": vocab_hash(gpt2)})
    assert run("figures", "viewer", "--store", store, "--model", shared_model, "--story", 0,
               "--out", tmp_path / "page.html") == 2
    line = one_line_error(capsys)
    assert f"model {shared_model} has another vocabulary than the one {store}" in line, line
    assert not Path(tmp_path / "page.html").exists()
