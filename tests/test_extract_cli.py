"""The extract command: stores, resume after a kill, shards and merge, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from datasets_build.dataset import load_tagged_dataset
from datasets_build.untagged import write_untagged_dataset
from extract.__main__ import main
from extract.extractor import KILL_AFTER_ENV, extract_store
from extract.forward import FastForward
from extract.models import load_hf_model
from extract.store import open_store
from headprobe.cli import run_main
from headprobe.tokenization import load_tokenizer

REPO = Path(__file__).resolve().parents[1]


def cli(*args):
    return run_main(main, [str(a) for a in args], prog="python -m extract")


def assert_same_store(a, b, atol=0.0):
    """Equal token tables; per-head values equal (atol=0) or within atol."""
    with open_store(a) as x, open_store(b) as y:
        assert x.n_tokens == y.n_tokens and x.sites == y.sites
        for col, values in x.tokens().items():
            np.testing.assert_array_equal(values, y.tokens()[col], err_msg=col)
        for site in x.sites:
            for layer in range(x.n_layers):
                np.testing.assert_allclose(x.read_layer(site, layer),
                                           y.read_layer(site, layer), atol=atol, rtol=0,
                                           err_msg=site)


def test_shared_store_matches_dataset_and_a_direct_forward(shared_store, shared_dataset,
                                                           shared_model):
    dataset = load_tagged_dataset(shared_dataset)
    table = dataset.token_table()
    with open_store(shared_store) as store:
        assert store.n_tokens == dataset.n_tokens
        for col in ("input_id", "story_id", "position", "fine_tag", "split", "quoted"):
            np.testing.assert_array_equal(store.tokens([col])[col], table[col])
        assert store.tags == dataset.tags
        attrs = store.attrs
        assert attrs["tokenizer_vocab_hash"] == dataset.vocab_hash
        assert attrs["dataset_manifest"] == dataset.manifest
        assert len(attrs["model_weights_sha256"]) == 64 and attrs["reinit_seed"] == -1
        assert attrs["dtype"] == "float32" and store.file["keys"].dtype == np.float32
        sid, ids, rows = next(dataset.iter_stories("test"))
        want = FastForward(load_hf_model(str(shared_model)), ["query", "activity"])(
            torch.from_numpy(ids)[None])
        np.testing.assert_allclose(store.read("query", 5, 5, np.arange(rows.start, rows.stop)),
                                   want["query"][0, :, 5, 5].numpy(), atol=1e-5)
        np.testing.assert_allclose(store.read_layer("activity", 2)[rows],
                                   want["activity"][0, :, 2].numpy(), atol=1e-5)


def test_resume_after_sigkill_gives_the_same_file(untagged_dataset, shared_model, tmp_path):
    opts = ["--dataset", untagged_dataset, "--model", shared_model, "--chunk-rows", "512",
            "--batch-tokens", "1024", "--quiet"]
    full = tmp_path / "full.h5"
    assert cli(*opts, "--out", full) == 0
    out = tmp_path / "killed.h5"
    env = {**os.environ, KILL_AFTER_ENV: "2", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "extract", *map(str, opts), "--out", str(out)]
    killed = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    partial = tmp_path / "killed.h5.partial"
    assert not out.exists() and partial.exists()
    with h5py.File(partial, "r") as f:
        assert f.attrs["rows_written"] == 1024 and f.attrs["complete"] == 0
    assert cli(*opts, "--out", out) == 2                       # partial needs --resume
    env.pop(KILL_AFTER_ENV)
    resumed = subprocess.run([*cmd, "--resume"], env=env, cwd=REPO, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "tokens/s" in resumed.stdout
    assert out.exists() and not partial.exists()
    assert_same_store(full, out)


def test_shards_merge_into_the_unsharded_store(untagged_dataset, shared_model, tmp_path):
    opts = dict(sites=["key", "activity", "argmax"], dtype="float16", group_tokens=512)
    full = extract_store(untagged_dataset, str(shared_model), tmp_path / "full.h5", **opts)
    shard_dir = tmp_path / "shards"
    shards = [extract_store(untagged_dataset, str(shared_model), shard_dir / f"s{i}.h5",
                            shard=f"{i}/3", **opts) for i in range(3)]
    sizes = [open_store(s).n_tokens for s in shards]
    assert min(sizes) > 0
    merged = shard_dir / "merged.h5"
    assert cli("merge", merged, shards[2], shards[0], shards[1]) == 0
    with h5py.File(merged, "r") as f:
        assert f["keys"].is_virtual
    assert_same_store(full, merged)        # every story batched as without shards
    forward = 0.0                          # the loop's phases add up over the shards
    for shard in shards:
        with open_store(shard) as store:
            forward += store.attrs["extract_phases"]["forward"]
    with open_store(merged) as store:
        assert store.attrs["extract_phases"]["forward"] == pytest.approx(forward, abs=2e-3)
    cwd = os.getcwd()
    try:                                   # shard paths resolve relative to the merged file
        os.chdir(tmp_path)
        with open_store(merged) as store:
            assert store.read("key", 0, 0).shape == (sum(sizes), 4)
    finally:
        os.chdir(cwd)
    assert cli("merge", tmp_path / "m2.h5", shards[0], shards[1]) == 2      # 2/3 missing
    other = extract_store(untagged_dataset, str(shared_model), tmp_path / "o.h5", shard="1/3",
                          **{**opts, "dtype": "float32"})
    assert cli("merge", tmp_path / "m3.h5", shards[0], other, shards[2]) == 2


def test_usage_errors_are_one_line_exit_2(untagged_dataset, shared_model, gpt2_tokenizer,
                                          tmp_path, capsys):
    base = ["--dataset", untagged_dataset, "--model", shared_model, "--quiet"]
    assert cli(*base, "--out", tmp_path / "a.h5", "--split", "test") == 0
    assert cli(*base, "--out", tmp_path / "a.h5") == 2
    assert "already exists" in capsys.readouterr().err
    assert cli(*base, "--out", tmp_path / "b.h5", "--resume") == 2
    assert cli("--dataset", tmp_path / "none", "--model", shared_model,
               "--out", tmp_path / "c.h5") == 2
    assert "not found; make it with: python -m datasets_build" in capsys.readouterr().err
    assert cli(*base[:2], "--model", tmp_path / "no-model", "--out", tmp_path / "d.h5") == 2
    assert "not found; make it with: python -m extract train" in capsys.readouterr().err
    assert cli(*base, "--out", tmp_path / "e.h5", "--sites", "key,bogus") == 2
    assert "bogus" in capsys.readouterr().err
    gpt2_data = write_untagged_dataset(tmp_path / "gpt2data", ["Once upon a time."],
                                       load_tokenizer(str(gpt2_tokenizer)))
    assert cli("--dataset", gpt2_data, "--model", shared_model, "--out", tmp_path / "f.h5") == 2
    err = capsys.readouterr().err
    assert "tokenizer" in err and len(err.strip().splitlines()) == 1
    manifest = json.loads((gpt2_data / "manifest.json").read_text())
    (gpt2_data / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    assert cli("--dataset", gpt2_data, "--model", shared_model, "--out", tmp_path / "g.h5") == 2
    assert "version" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.partial"))


def test_stories_longer_than_the_context_are_refused(untagged_dataset, shared_model, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from headprobe.errors import UsageError

    config = AutoConfig.from_pretrained(str(shared_model), max_position_embeddings=32)
    config._name_or_path = str(shared_model)
    short = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(UsageError, match="context is 32"):
        extract_store(untagged_dataset, short, tmp_path / "x.h5")


def test_reinit_seed_and_general_path(untagged_dataset, shared_model, tmp_path):
    """Random re-initialised weights are recorded, reproducible across forward paths and
    differ from the trained ones; the TransformerLens path matches the fused path."""
    a = extract_store(untagged_dataset, str(shared_model), tmp_path / "a.h5", split="test")
    b = extract_store(untagged_dataset, str(shared_model), tmp_path / "b.h5", split="test",
                      reinit_seed=7, dtype="float32")
    assert cli("--dataset", untagged_dataset, "--model", shared_model, "--out",
               tmp_path / "c.h5", "--split", "test", "--reinit-seed", "7", "--path", "general",
               "--dtype", "float32", "--quiet") == 0
    with open_store(a) as x, open_store(b) as y, open_store(tmp_path / "c.h5") as z:
        assert y.attrs["reinit_seed"] == 7 and "seed 7" in y.attrs["weights"]
        assert z.attrs["forward_path"] == "general" and y.attrs["forward_path"] == "fast"
        assert not np.allclose(x.read("key", 0, 0), y.read("key", 0, 0), atol=1e-2)
        for site in y.sites:
            np.testing.assert_allclose(y.read_layer(site, 3), z.read_layer(site, 3), atol=1e-5)


def test_python_errors_name_parameters_and_the_cli_names_flags(untagged_dataset, tmp_path,
                                                                capsys):
    """Options are checked before anything is loaded; messages say ``overwrite=True`` from
    Python and ``--overwrite`` from the command line."""
    from headprobe.errors import UsageError

    (tmp_path / "a.h5").write_text("")
    with pytest.raises(UsageError) as err:
        extract_store(untagged_dataset, "no-such-model", tmp_path / "a.h5")
    assert "pass overwrite=True" in str(err.value) and "--" not in str(err.value)
    for kwargs, needle in (({"batch_tokens": 0}, "batch_tokens must be a positive number or auto"),
                           ({"shard": "1-2"}, "shard '1-2': expected i/n"),
                           ({"sites": ["key", "bogus"]}, "unknown site(s) bogus"),
                           ({"compression": "lzma"}, "unknown compression 'lzma'"),
                           ({"resume": True}, "nothing to resume")):
        with pytest.raises(UsageError) as err:
            extract_store(untagged_dataset, "no-such-model", tmp_path / "b.h5", **kwargs)
        assert needle in str(err.value), str(err.value)
    assert cli("--dataset", untagged_dataset, "--out", tmp_path / "a.h5") == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert cli("--dataset", untagged_dataset, "--out", tmp_path / "b.h5", "--shard", "1-2") == 2
    assert "--shard '1-2'" in capsys.readouterr().err
    assert cli("--dataset", untagged_dataset) == 2
    assert "give --out or --run" in capsys.readouterr().err
