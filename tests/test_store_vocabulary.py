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


def test_a_matching_tokenizer_json_is_enough(shared_model, monkeypatch):
    """has_vocabulary reads a model directory's tokenizer.json alone when it matches."""
    import headprobe.tokenization as tokenization

    expected = vocab_hash(load_tokenizer(str(shared_model)))

    def refuse(name):
        raise AssertionError(f"{name} was loaded whole")

    monkeypatch.setattr(tokenization, "load_tokenizer", refuse)
    assert tokenization.has_vocabulary(str(shared_model), expected)


def test_another_vocabulary_is_judged_on_the_loaded_tokenizer(shared_model, gpt2_tokenizer,
                                                               monkeypatch):
    """A tokenizer.json that does not match, or none, leaves the verdict to the whole
    tokenizer, as loaded."""
    import headprobe.tokenization as tokenization

    gpt2 = vocab_hash(load_tokenizer(str(gpt2_tokenizer)))
    loaded = []
    monkeypatch.setattr(tokenization, "load_tokenizer",
                        lambda name: loaded.append(name) or load_tokenizer(name))
    assert not tokenization.has_vocabulary(str(shared_model), gpt2)
    assert tokenization.has_vocabulary(str(gpt2_tokenizer), gpt2)   # no tokenizer.json there
    assert loaded == [str(shared_model), str(gpt2_tokenizer)]
