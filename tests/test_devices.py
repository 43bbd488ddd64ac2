"""Devices and compute dtypes: --device and --model-dtype for extraction, training and the
studies; on a CUDA machine the same runs on the GPU (tests marked gpu)."""

import json

import numpy as np
import pytest
import torch

from extract.extractor import extract_store
from extract.forward import FastForward, check_fast
from extract.forward.check import TOLERANCES
from extract.models import load_hf_model
from extract.store import open_store
from extract.train import train_model
from headprobe.cli import run_main
from headprobe.devices import resolve_device
from headprobe.errors import UsageError
from probing.__main__ import main as probing_main
from probing.study_io import read_study
from tests.test_extract_cli import assert_same_store, cli

TINY = dict(layers=2, d_model=16, heads=2, ctx=32, batch=4, steps=6, ckpt_every=3,
            log_every=2)


def assert_close_store(reference, other, rtol):
    """Same rows and sites; every layer within ``rtol`` of the reference's largest value."""
    with open_store(reference) as x, open_store(other) as y:
        assert x.n_tokens == y.n_tokens and x.sites == y.sites
        for site in x.sites:
            for layer in range(x.n_layers):
                a, b = x.read_layer(site, layer), y.read_layer(site, layer)
                assert np.abs(a - b).max() <= rtol * np.abs(a).max(), (site, layer)


def test_devices_are_checked_in_one_line(untagged_dataset, shared_model, tmp_path, capsys):
    assert resolve_device(None) == resolve_device("auto") in ("cpu", "cuda")
    assert resolve_device("cpu") == "cpu"
    for bad in ("tpu", "cuda:x", "cpu:1"):
        with pytest.raises(UsageError, match="choose cpu, cuda, cuda:N or mps"):
            resolve_device(bad)
    args = ["--dataset", untagged_dataset, "--model", shared_model, "--out", tmp_path / "a.h5"]
    assert cli(*args, "--device", "cuda:99") == 2               # no such device anywhere
    err = capsys.readouterr().err
    assert "--device cuda:99 was asked for" in err and err.count("\n") == 1
    with pytest.raises(SystemExit, match="2"):
        cli(*args, "--model-dtype", "int8")
    assert "invalid choice: 'int8'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_bfloat16_extraction_keeps_the_fused_path_and_its_values(untagged_dataset,
                                                                 shared_model, tmp_path):
    opts = dict(split="test", sites=["key", "query", "activity"], dtype="float32")
    full = extract_store(untagged_dataset, str(shared_model), tmp_path / "f32.h5", **opts)
    half = extract_store(untagged_dataset, str(shared_model), tmp_path / "bf16.h5",
                         model_dtype="bfloat16", **opts)
    with open_store(half) as store:
        assert store.attrs["model_dtype"] == "bfloat16" and store.attrs["forward_path"] == "fast"
        error = store.attrs["forward_check"]["fast_path_check_error"]
        assert 0 < error <= TOLERANCES[torch.bfloat16]
    assert_close_store(full, half, rtol=0.1)
    with pytest.raises(AssertionError):
        assert_same_store(full, half)                 # bfloat16 really computed in bfloat16


def test_training_in_bfloat16_records_its_compute_dtype(tmp_path):
    texts = ["Tom had a red ball. He gave it to Sue."] * 30
    result = train_model(texts, tmp_path / "m", "char", progress=False, model_dtype="bfloat16",
                         **TINY)
    record = json.loads((tmp_path / "m" / "training.json").read_text())
    assert record["model_dtype"] == "bfloat16" and record["device"] == "cpu"
    assert np.isfinite(result.final_loss)
    weights = load_hf_model(str(tmp_path / "m")).transformer.wte.weight
    assert weights.dtype == torch.float32          # autocast: the weights stay float32


def test_a_study_runs_in_bfloat16(shared_model, tmp_path):
    out = tmp_path / "stats"
    assert run_main(probing_main, ["stats", "--model", str(shared_model), "--prompt",
                                   "Tom was happy.", "--model-dtype", "bfloat16", "--out",
                                   str(out)]) == 0
    values = read_study(out).arrays["attn_out"]
    assert values.dtype == np.float32 and np.isfinite(values).all()


# ---------------------------------------------------------------- on a CUDA device


@pytest.mark.gpu
def test_fused_forward_on_cuda_equals_the_cpu(shared_model, family_models):
    for model in (shared_model, family_models["llama"], family_models["qwen2"]):
        cpu = load_hf_model(str(model), device="cpu")
        gpu = load_hf_model(str(model), device="cuda")
        fused = FastForward(gpu, ["key", "query", "value", "activity", "entropy"])
        assert check_fast(fused, gpu) <= TOLERANCES[torch.float32]
        ids = torch.randint(0, cpu.config.vocab_size, (3, 200),
                            generator=torch.Generator().manual_seed(0))
        want = FastForward(cpu, fused.sites)(ids)
        got = fused(ids.cuda())
        for site, value in want.items():
            scale = float(value.abs().max())
            assert float((got[site].cpu() - value).abs().max()) <= 1e-4 * scale, (model, site)


@pytest.mark.gpu
@pytest.mark.parametrize("model_dtype", ["float32", "bfloat16", "float16"])
def test_extraction_on_cuda(untagged_dataset, shared_model, tmp_path, model_dtype):
    opts = dict(sites=["key", "query", "activity", "entropy", "argmax"], dtype="float32")
    cpu = extract_store(untagged_dataset, str(shared_model), tmp_path / "cpu.h5", **opts)
    gpu = extract_store(untagged_dataset, str(shared_model), tmp_path / "gpu.h5",
                        device="cuda", model_dtype=model_dtype, **opts)
    with open_store(gpu) as store:
        assert store.attrs["device"].startswith("cuda") and store.attrs["forward_path"] == "fast"
    float_sites = ["key", "query", "activity", "entropy"]
    tolerance = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 0.1}[model_dtype]
    with open_store(cpu) as x, open_store(gpu) as y:
        for site in float_sites:
            for layer in range(x.n_layers):
                a, b = x.read_layer(site, layer), y.read_layer(site, layer)
                assert np.abs(a - b).max() <= tolerance * np.abs(a).max(), (site, layer)


@pytest.mark.gpu
@pytest.mark.parametrize("model_dtype", ["float32", "bfloat16", "float16"])
def test_training_on_cuda(tmp_path, model_dtype):
    texts = ["Tom had a red ball. He gave it to Sue."] * 30
    result = train_model(texts, tmp_path / "m", "char", progress=False, device="cuda",
                         model_dtype=model_dtype, **{**TINY, "steps": 20})
    assert np.isfinite(result.final_loss) and result.log[-1][1] < result.log[0][1]
    record = json.loads((tmp_path / "m" / "training.json").read_text())
    assert record["device"] == "cuda" and record["model_dtype"] == model_dtype


@pytest.mark.gpu
def test_studies_on_cuda(shared_store, shared_model, tmp_path):
    model = ["--model", str(shared_model), "--device", "cuda"]
    runs = {
        "quote": ["--store", str(shared_store), "--max-stories", "8"],
        "tag-induction": ["--store", str(shared_store), "--max-stories", "8", "--before",
                          "VBD"],
        "ablate": ["--store", str(shared_store), "--max-stories", "8", "--heads", "5.7"],
        "patch": ["--clean", "Lily gave the ball to Tom. Later, Tom gave it back to",
                  "--corrupt", "Lily gave the ball to Sam. Later, Tom gave it back to"],
        "stats": ["--prompt", "Tom was happy."],
        "repeated": ["--no-mlp-grid", "--batch", "4", "--seq-len", "20"],
    }
    for study, args in runs.items():
        out = tmp_path / study
        assert run_main(probing_main, [study, *model, *args, "--out", str(out)]) == 0, study
        assert read_study(out).meta["model"] == str(shared_model)


@pytest.mark.gpu
def test_ray_shards_on_a_gpu(ray_cluster, shared_dataset, shared_model, tmp_path):
    single = extract_store(shared_dataset, str(shared_model), tmp_path / "single.h5",
                           group_tokens=2048, device="cuda")
    out = tmp_path / "ray.h5"
    assert cli("--dataset", shared_dataset, "--model", shared_model, "--out", out, "--ray",
               "local:2", "--shards", "2", "--gpus-per-shard", "0.5", "--group-tokens", "2048",
               "--quiet") == 0
    with open_store(out) as store:
        assert store.attrs["device"].startswith("cuda")
    assert_close_store(single, out, rtol=1e-3)
