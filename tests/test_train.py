"""Training small causal LMs: determinism, resume, attention-only models, the CLI."""

import json

import pytest
import torch
from safetensors.torch import load_file

from datasets_build import chatlog
from extract.train import (
    TrainConfig,
    add_train_arguments,
    checkpoint_path,
    lr_at,
    read_corpus,
    run_train,
    train_model,
)
from headprobe.cli import Parser
from headprobe.errors import UsageError

TINY = dict(layers=2, d_model=16, heads=2, ctx=32, batch=4, steps=6, ckpt_every=3,
            log_every=2)


@pytest.fixture(scope="module")
def chat_texts():
    return chatlog.chat_stories(chatlog.generate_chat(60, seed=3))


def weights(path):
    return load_file(str(path / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_same_seed_gives_identical_weights(tmp_path, chat_texts):
    for name in ("a", "b"):
        train_model(chat_texts, tmp_path / name, "char", progress=False, **TINY)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    train_model(chat_texts, tmp_path / "c", "char", progress=False, **{**TINY, "seed": 1})
    wa, wc = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_ends_with_the_uninterrupted_weights(tmp_path, chat_texts):
    train_model(chat_texts, tmp_path / "full", "char", progress=False, **TINY)
    part = train_model(chat_texts, tmp_path / "part", "char", progress=False, stop_after=3,
                       **TINY)
    assert not part.finished
    assert not (tmp_path / "part").exists()
    assert checkpoint_path(tmp_path / "part").is_file()
    with pytest.raises(UsageError, match="interrupted run") as err:
        train_model(chat_texts, tmp_path / "part", "char", progress=False, **TINY)
    assert "pass resume=True to continue it or overwrite=True" in str(err.value)
    with pytest.raises(UsageError, match="steps"):
        train_model(chat_texts, tmp_path / "part", "char", progress=False, resume=True,
                    **{**TINY, "steps": 8})
    done = train_model(chat_texts, tmp_path / "part", "char", progress=False, resume=True,
                       **TINY)
    assert done.finished
    assert_same_weights(tmp_path / "full", tmp_path / "part")
    assert not checkpoint_path(tmp_path / "part").parent.exists()
    full_log = json.loads((tmp_path / "full" / "training.json").read_text())["log"]
    part_log = json.loads((tmp_path / "part" / "training.json").read_text())["log"]
    assert [r[:2] for r in full_log] == [r[:2] for r in part_log]


def test_training_lowers_the_loss_and_records_it(tmp_path, chat_texts):
    result = train_model(chat_texts, tmp_path / "m", "char", progress=False,
                         **{**TINY, "steps": 40, "log_every": 10, "lr": 1e-2})
    record = json.loads((tmp_path / "m" / "training.json").read_text())
    steps = [row[0] for row in record["log"]]
    assert steps == [0, 10, 20, 30, 39]
    assert record["log"][-1][1] < 0.7 * record["log"][0][1]
    assert record["config"]["layers"] == 2 and record["ctx"] == 32
    assert result.final_loss == pytest.approx(record["log"][-1][1], abs=1e-3)


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


def repeated_batches(gen, batch, vocab=50, half=8):
    seq = torch.randint(1, vocab, (batch, half), generator=gen)
    return torch.cat([torch.zeros(batch, 1, dtype=torch.long), seq, seq], dim=1)


def test_attn_only_model_loads_and_has_no_mlp_output(tmp_path):
    from extract.models import load_model

    out = tmp_path / "attn"
    train_model(repeated_batches, out, vocab_size=50, ctx=17, layers=2, d_model=32, heads=2,
                arch="attn-only", steps=5, batch=8, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["headprobe_arch"] == "attn-only" and config["vocab_size"] == 50
    model = load_model(str(out))
    tokens = repeated_batches(torch.Generator().manual_seed(1), 2)
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (2, 17, 50)
    for layer in range(2):
        assert torch.count_nonzero(cache[f"blocks.{layer}.hook_mlp_out"]) == 0
        assert cache[f"blocks.{layer}.attn.hook_k"].abs().sum() > 0
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(out)
    # compatibility mode centres the unembedding: compare log-probabilities
    assert torch.allclose(hf(tokens).logits.log_softmax(-1), logits.log_softmax(-1), atol=1e-4)


def test_cli_trains_a_chat_model_with_sender_tokens(tmp_path):
    parser = Parser(prog="extract train")
    add_train_arguments(parser)
    out = tmp_path / "chat"
    args = parser.parse_args(["--corpus", "chatgen:80", "--out", str(out), "--layers", "1",
                              "--d-model", "16", "--heads", "2", "--ctx", "32", "--steps",
                              "3", "--batch", "2", "--sender-tokens", "--quiet"])
    assert run_train(args) == 0
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("[06/03/2021, 09:00:28] Member 4: ok", add_special_tokens=False)["input_ids"]
    assert len(ids) == 23 + 1 + 4  # header chars, one sender token, ": ok"
    assert tok.decode(ids) == "[06/03/2021, 09:00:28] Member 4: ok"
    record = json.loads((out / "training.json").read_text())
    assert sorted(record["sender_tokens"]) == chatlog.sender_names(6)
    with pytest.raises(UsageError, match="already exists"):
        run_train(args)
    args.resume, args.out = True, str(tmp_path / "other")
    with pytest.raises(UsageError, match="nothing to resume"):
        run_train(args)


def test_bad_settings_are_usage_errors(tmp_path, chat_texts):
    with pytest.raises(UsageError, match="divisible"):
        train_model(chat_texts, tmp_path / "x", "char", **{**TINY, "heads": 3})
    with pytest.raises(UsageError, match="fewer than one window"):
        train_model(["ab"], tmp_path / "x", "char", **TINY)
    with pytest.raises(UsageError, match="bpe:VOCAB"):
        train_model(chat_texts, tmp_path / "x", "bpe:many", **TINY)
    with pytest.raises(UsageError, match="vocab_size"):
        train_model(repeated_batches, tmp_path / "x", **TINY)


def test_bpe_tokenizer_trained_on_the_corpus(tmp_path, chat_texts):
    from transformers import AutoTokenizer

    train_model(chat_texts, tmp_path / "bpe", "bpe:300", extra_tokens=["Member 1"],
                progress=False, **{**TINY, "steps": 2})
    tok = AutoTokenizer.from_pretrained(tmp_path / "bpe")
    assert len(tok) <= 301 and tok.convert_ids_to_tokens(0) == "<|endoftext|>"
    ids = tok("[06/03/2021, 09:00:28] Member 1: ok", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids).count("Member 1") == 1
    assert len(ids) < 30  # merges learnt from the corpus shorten the text


def test_corpus_and_sender_names_come_through_the_dataset_sources(valid_text):
    from datasets_build.sources import collect_stories, open_source

    texts, senders = read_corpus("chatgen:80")
    source = open_source("chatgen:80")
    assert texts == collect_stories(source)[0] and senders == source.info["senders"]
    assert sorted(senders) == chatlog.sender_names(6)
    texts, senders = read_corpus(str(valid_text))
    assert len(texts) == 3117 and senders == []
    with pytest.raises(UsageError, match="does not exist"):
        read_corpus("chat:/nonexistent/export.txt")


def test_python_errors_name_parameters(tmp_path, chat_texts):
    with pytest.raises(UsageError, match="unknown arch 'bert'"):
        train_model(chat_texts, tmp_path / "x", "char", **{**TINY, "arch": "bert"})
    with pytest.raises(UsageError, match="^layers must be a positive integer"):
        train_model(chat_texts, tmp_path / "x", "char", **{**TINY, "layers": 0})
    with pytest.raises(UsageError, match="lower ctx or give more text"):
        train_model(["ab"], tmp_path / "x", "char", **TINY)
    with pytest.raises(TypeError, match="unknown training settings: bogus"):
        train_model(chat_texts, tmp_path / "x", "char", bogus=1)
