"""Training small causal LMs: determinism, resume, attention-only models, the CLI."""

import itertools
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
from headprobe.cli import Parser, run_main
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


def test_repeated_segments_vary_in_length_gap_and_offset():
    from extract.training.repeats import place_repeat, repeat_pool, with_repeats
    from headprobe.tokenization.char import id_tokenizer

    cfg = TrainConfig(ctx=63, repeat_frac=1.0, repeat_min=4, repeat_max=20, repeat_gap=6)
    pool = repeat_pool(id_tokenizer(50), 50)
    assert 0 not in pool.tolist() and len(pool) == 49     # BOS/EOS is never drawn
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        row = torch.full((64,), -1)
        start, length, gap = place_repeat(row, gen, cfg, pool)
        second = start + length + gap
        assert 4 <= length <= 20 and 0 <= gap <= 6 and second + length <= 64
        assert torch.equal(row[start:start + length], row[second:second + length])
        assert (row >= 0).sum() == 2 * length                     # the rest is left as it was
        seen.add((start, length, gap))
    lengths, gaps, offsets = ({s[i] for s in seen} for i in (1, 2, 0))
    assert len(lengths) > 10 and len(gaps) == 7 and len(offsets) > 20

    def text(gen, batch):
        return torch.full((batch, 64), 7)

    half = with_repeats(text, TrainConfig(ctx=63, repeat_frac=0.5, repeat_max=20), pool)
    batch = half(torch.Generator().manual_seed(1), 400)
    mixed = (batch != 7).any(1).float().mean().item()
    assert 0.4 < mixed < 0.6
    assert torch.equal(batch, half(torch.Generator().manual_seed(1), 400))


def test_training_with_repeats_is_deterministic_and_checked(tmp_path, chat_texts):
    settings = {**TINY, "repeat_frac": 1.0, "repeat_min": 3, "repeat_max": 8}
    for name in ("a", "b"):
        train_model(chat_texts, tmp_path / name, "char", progress=False, **settings)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    record = json.loads((tmp_path / "a" / "training.json").read_text())
    assert record["config"]["repeat_frac"] == 1.0 and record["config"]["repeat_max"] == 8
    with pytest.raises(UsageError, match="^two copies of repeat_max 20 tokens do not fit"):
        train_model(chat_texts, tmp_path / "x", "char", **{**settings, "repeat_max": 20})
    with pytest.raises(UsageError, match="repeat_frac acts on windows of texts"):
        train_model(repeated_batches, tmp_path / "x", vocab_size=50, **settings)


def test_short_steps_end_the_run_on_half_windows(tmp_path, chat_texts):
    from extract.training.data import prepare_data
    from extract.training.loop import Trainer

    settings = {**TINY, "short_steps": 3, "repeat_frac": 1.0, "repeat_min": 3, "repeat_max": 8}
    cfg = TrainConfig(**settings)
    trainer = Trainer(cfg, prepare_data(chat_texts, "char", cfg), tmp_path / "ckpt")
    batches = [torch.as_tensor(trainer.sample(step)) for step in range(6)]
    # ctx 32: 4 windows of 32 + 1 tokens, then twice 4 of 16 + 1
    assert [tuple(b.shape) for b in batches] == [(4, 33)] * 3 + [(8, 17)] * 3
    # resuming across the switch ends with the weights of the run that did not stop
    train_model(chat_texts, tmp_path / "full", "char", progress=False, **settings)
    train_model(chat_texts, tmp_path / "part", "char", progress=False, stop_after=2, **settings)
    train_model(chat_texts, tmp_path / "part", "char", progress=False, resume=True, **settings)
    assert_same_weights(tmp_path / "full", tmp_path / "part")
    record = json.loads((tmp_path / "full" / "training.json").read_text())
    assert record["config"]["short_steps"] == 3
    with pytest.raises(UsageError, match=r"^two copies of repeat_max 9 .* ctx // 2 \+ 1 = 17"):
        train_model(chat_texts, tmp_path / "x", "char", **{**settings, "repeat_max": 9})
    with pytest.raises(UsageError, match=r"^short_steps must be in 0\.\.steps \(6\), got 7"):
        train_model(chat_texts, tmp_path / "x", "char", **{**settings, "short_steps": 7})
    with pytest.raises(UsageError, match="short_steps acts on windows of texts"):
        train_model(repeated_batches, tmp_path / "x", vocab_size=50,
                    **{**TINY, "short_steps": 2})


def test_local_first_layers_alternate_from_layer_zero():
    from extract.train import gpt_neo_config

    config = gpt_neo_config(TrainConfig(layers=3, attention="local-global", window=4), 10)
    assert config.attention_layers == ["local", "global", "local"] and config.window_size == 4
    assert gpt_neo_config(TrainConfig(layers=3), 10).attention_layers == [
        "global", "local", "global"]
    config = gpt_neo_config(TrainConfig(layers=3, attention="local-global-global"), 10)
    assert config.attention_layers == ["local", "global", "global"]
    for bad in ("sparse", "local-", "global-dense"):
        with pytest.raises(UsageError, match=f"unknown attention '{bad}': give layer kinds"):
            TrainConfig(attention=bad).check()


def test_stories_recipe_trains_on_the_shared_text_with_the_shared_tokenizer(
        tmp_path, monkeypatch, valid_text):
    from extract.__main__ import main
    from extract.training.recipes import STORIES
    from headprobe.tokenization import load_tokenizer

    shared = valid_text.parents[2]
    monkeypatch.setenv("HEADPROBE_SHARED", str(shared))
    out = tmp_path / "stories"
    assert main(["train", "--recipe", "stories", "--steps", "2", "--batch", "2", "--threads",
                 "1", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["layers"] == STORIES.settings["layers"] == 4
    assert record["corpus"] == str(shared / STORIES.corpus)
    # the shared tokenizer is used as it is: the same vocabulary, no BPE trained
    assert load_tokenizer(out).get_vocab() == load_tokenizer(shared / STORIES.tokenizer).get_vocab()


def test_recipe_sets_defaults_that_flags_override(tmp_path, monkeypatch, valid_text):
    from extract.__main__ import main
    from extract.training.cli import config_from_args, parse_train_args
    from extract.training.recipes import RECIPES

    def parse(*argv):
        parser = Parser(prog="extract train")
        add_train_arguments(parser)
        return parse_train_args(parser, list(argv))

    monkeypatch.setenv("HEADPROBE_SHARED", str(valid_text.parents[2]))
    recipe = RECIPES["induction"]
    args = parse("--recipe", "induction", "--out", str(tmp_path / "m"))
    cfg = config_from_args(args)
    assert {k: getattr(cfg, k) for k in recipe.settings} == recipe.settings
    assert args.corpus == str(valid_text.parents[2] / recipe.corpus)
    assert args.tokenizer == recipe.tokenizer == "char"
    # a recipe's tokenizer directory lies in the shared assets, as its corpus does
    args = parse("--recipe", "stories", "--out", str(tmp_path / "m"))
    assert args.tokenizer == str(valid_text.parents[2] / RECIPES["stories"].tokenizer)
    assert args.corpus == str(valid_text.parents[2] / RECIPES["stories"].corpus)
    args = parse("--recipe", "induction", "--steps", "7", "--corpus", "chatgen:50")
    assert config_from_args(args).steps == 7 and args.corpus == "chatgen:50"
    assert config_from_args(args).layers == recipe.settings["layers"]
    assert config_from_args(parse("--corpus", "chatgen:50")) == TrainConfig()
    monkeypatch.setenv("HEADPROBE_SHARED", str(tmp_path))
    assert run_main(main, ["train", "--recipe", "induction", "--out", str(tmp_path / "m")]) == 2
    with pytest.raises(SystemExit, match="2"):
        run_main(main, ["train", "--recipe", "nope", "--out", str(tmp_path / "m")])
    assert run_main(main, ["train", "--out", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m").exists()


def test_training_from_the_command_line_prints_no_library_chatter(tmp_path):
    """transformers' offline kernel trust notes and its shard-writing bar stay silent; the
    command's own progress bar and result line remain."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    got = subprocess.run(
        [sys.executable, "-m", "extract", "train", "--corpus", "demo:40:1", "--out",
         str(tmp_path / "m"), "--tokenizer", "bpe:300", "--layers", "1", "--heads", "2",
         "--d-model", "16", "--ctx", "32", "--batch", "4", "--steps", "2", "--threads", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "publisher trust" not in got.stderr and "Writing model shards" not in got.stderr
    assert "train:" in got.stderr and got.stdout.startswith("wrote ")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_rotary_attn_only_model_with_grouped_query_attention_loads(tmp_path, family):
    from transformers import AutoModelForCausalLM

    from extract.models import architecture, load_model

    out = tmp_path / family
    train_model(repeated_batches, out, vocab_size=50, ctx=17, layers=2, d_model=32, heads=4,
                kv_heads=2, family=family, arch="attn-only", steps=5, batch=8, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == family and config["num_key_value_heads"] == 2
    assert config["headprobe_arch"] == "attn-only" and "position_embeddings" not in str(
        weights(out).keys())
    model = load_model(str(out))
    assert architecture(model)["n_kv_heads"] == 2 and architecture(model)["n_heads"] == 4
    tokens = repeated_batches(torch.Generator().manual_seed(1), 2)
    logits, cache = model.run_with_cache(tokens)
    for layer in range(2):
        assert torch.count_nonzero(cache[f"blocks.{layer}.hook_mlp_out"]) == 0
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert torch.allclose(hf(tokens).logits.log_softmax(-1), logits.log_softmax(-1), atol=1e-4)


def test_rotary_settings_are_checked():
    assert TrainConfig(family="llama").layer_pattern() == ["global"]
    assert TrainConfig().layer_pattern() == ["global", "local"]
    with pytest.raises(UsageError, match="has no local attention layers"):
        TrainConfig(family="llama", attention="local-global").check()
    with pytest.raises(UsageError, match="must divide"):
        TrainConfig(family="llama", heads=16, kv_heads=3).check()
    with pytest.raises(UsageError, match="needs a rotary"):
        TrainConfig(kv_heads=4).check()
    with pytest.raises(UsageError, match="unknown family"):
        TrainConfig(family="gpt3").check()


def test_random_filler_keeps_bos_and_only_the_repeat(tmp_path):
    from extract.training.repeats import with_repeats

    cfg = TrainConfig(ctx=32, repeat_frac=1.0, repeat_min=8, repeat_max=8, repeat_gap=0,
                      repeat_filler="random")
    pool = torch.arange(5, 200)
    text = lambda gen, batch: torch.full((batch, 33), 3, dtype=torch.long)  # noqa: E731
    ids = with_repeats(text, cfg, pool, bos=0)(torch.Generator().manual_seed(0), 4)
    assert (ids[:, 0] == 0).all() and (ids[:, 1:] >= 5).all()
    for row in ids[:, 1:]:
        segs = [row[i:i + 8] for i in range(len(row) - 15)]
        assert any(torch.equal(s, row[i + 8:i + 16]) for i, s in enumerate(segs))


def test_repeat_count_writes_disjoint_pairs_in_the_free_stretches(monkeypatch):
    from extract.training import repeats

    cfg = TrainConfig(ctx=64, repeat_frac=1.0, repeat_count=3, repeat_min=4, repeat_max=32,
                      repeat_gap=4)
    pool = torch.arange(10, 60)
    placed: list[tuple[int, int, int]] = []
    original = repeats.place_repeat

    def recording(row, gen, cfg, pool):
        start, length, gap = original(row, gen, cfg, pool)
        placed.append((row.storage_offset() + start, length, gap))   # in the whole row
        return start, length, gap

    monkeypatch.setattr(repeats, "place_repeat", recording)
    counts = []
    for seed in range(20):
        row, placed[:] = torch.zeros(64, dtype=torch.long), []
        counts.append(repeats.place_repeats(row, torch.Generator().manual_seed(seed), cfg, pool))
        assert counts[-1] == len(placed)
        spans = sorted((s, s + 2 * n + g) for s, n, g in placed)
        assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))  # disjoint
        for s, n, g in placed:      # each pair intact after the later ones were written
            assert n >= cfg.repeat_min and g <= cfg.repeat_gap
            assert torch.equal(row[s:s + n], row[s + n + g:s + 2 * n + g])
    assert max(counts) == 3 and min(counts) >= 1
    # one pair draws exactly what place_repeat draws, so --repeat-count 1 keeps old runs
    monkeypatch.undo()
    one = TrainConfig(ctx=64, repeat_frac=1.0, repeat_min=4, repeat_max=32, repeat_gap=4)
    a, b = torch.zeros(64, dtype=torch.long), torch.zeros(64, dtype=torch.long)
    assert repeats.place_repeats(a, torch.Generator().manual_seed(3), one, pool) == 1
    repeats.place_repeat(b, torch.Generator().manual_seed(3), one, pool)
    assert torch.equal(a, b)


def test_repeat_count_and_d_head_are_checked():
    with pytest.raises(UsageError, match="repeat.count must be a positive"):
        TrainConfig(repeat_frac=1.0, repeat_count=0).check()
    with pytest.raises(UsageError, match="repeat.count"):          # without --repeat-frac
        TrainConfig(repeat_count=2).check()
    with pytest.raises(UsageError, match="d.head must be an even"):
        TrainConfig(family="llama", attention="global", d_head=7).check()
    with pytest.raises(UsageError, match="needs a rotary"):
        TrainConfig(d_head=8).check()


def test_cli_seeds_train_one_directory_per_seed(tmp_path):
    parser = Parser(prog="extract train")
    add_train_arguments(parser)
    base = ["--corpus", "chatgen:80", "--run", str(tmp_path / "run"), "--family", "llama",
            "--attn-only", "--layers", "1", "--d-model", "16", "--heads", "2", "--ctx", "32",
            "--steps", "3", "--batch", "2", "--quiet"]
    assert run_train(parser.parse_args([*base, "--seeds", "0-2"])) == 0
    dirs = [tmp_path / "run" / f"model-seed{s}" for s in range(3)]
    assert [json.loads((d / "training.json").read_text())["seed"] for d in dirs] == [0, 1, 2]
    assert len({(d / "tokenizer.json").read_text() for d in dirs}) == 1
    assert not (tmp_path / "run" / "model").exists()
    wa, wb = weights(dirs[0]), weights(dirs[1])
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)
    for bad in ("2-", "a,b", "1,1"):
        with pytest.raises(UsageError, match="--seeds"):
            run_train(parser.parse_args([*base, "--seeds", bad, "--overwrite"]))
