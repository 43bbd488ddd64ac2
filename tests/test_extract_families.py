"""Every tested model family through ``python -m extract``, checked against plain
``transformers``: keys are the key projection's output, queries the query projection's,
activity ||z_h W_O[h]||_2 from the output projection's input (forward hooks on the
projection modules, one story at a time)."""

import numpy as np
import pytest
import torch

from datasets_build.dataset import load_tagged_dataset
from extract.__main__ import main
from extract.store import open_store
from headprobe.cli import run_main
from tests.fixtures_families import FAMILIES, save_tiny_model

FAST = {"gpt2", "gpt_neo", "llama", "qwen2"}      # the fused forward implements these
ROTARY_GQA = ("llama", "qwen2", "gemma2")


def cli(*args):
    return run_main(main, [str(a) for a in args], prog="python -m extract")


def attention_modules(hf):
    """Per layer: (the attention module, its output projection, that projection's weight as
    [in, out])."""
    model_type = hf.config.model_type
    if model_type == "gpt2":
        return [(b.attn, b.attn.c_proj, b.attn.c_proj.weight) for b in hf.transformer.h]
    if model_type == "gpt_neo":
        return [(b.attn.attention, b.attn.attention.out_proj, b.attn.attention.out_proj.weight.T)
                for b in hf.transformer.h]
    if model_type == "gpt_neox":
        return [(b.attention, b.attention.dense, b.attention.dense.weight.T)
                for b in hf.gpt_neox.layers]
    return [(b.self_attn, b.self_attn.o_proj, b.self_attn.o_proj.weight.T)
            for b in hf.model.layers]


def projection_hooks(model_type, attention, got, n_heads, d_head):
    """Forward hooks that append queries [seq, n_heads, d] and keys [seq, kv, d] to ``got``."""
    def joint(module, inputs, output):
        seq = output.shape[1]
        if model_type == "gpt2":        # c_attn: all queries, all keys, all values
            q, k, _ = output[0].split(n_heads * d_head, dim=-1)
        else:                           # GPT-NeoX: per head [query | key | value]
            per_head = output[0].reshape(seq, n_heads, 3 * d_head)
            q, k = per_head[..., :d_head], per_head[..., d_head:2 * d_head]
        got["query"].append(q.reshape(seq, -1, d_head))
        got["key"].append(k.reshape(seq, -1, d_head))

    def one(site):
        def hook(module, inputs, output):
            got[site].append(output[0].reshape(output.shape[1], -1, d_head))
        return hook

    if model_type == "gpt2":
        return [attention.c_attn.register_forward_hook(joint)]
    if model_type == "gpt_neox":
        return [attention.query_key_value.register_forward_hook(joint)]
    return [attention.q_proj.register_forward_hook(one("query")),
            attention.k_proj.register_forward_hook(one("key"))]


def reference(hf, ids):
    """keys [seq, L, kv, d], queries [seq, L, H, d], activity [seq, L, H] of one story."""
    cfg = hf.config
    n_heads = cfg.num_attention_heads
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    got = {"key": [], "query": [], "z": []}
    handles = []
    for attention, out_proj, _ in attention_modules(hf):
        handles += projection_hooks(cfg.model_type, attention, got, n_heads, d_head)
        handles.append(out_proj.register_forward_hook(
            lambda m, i, o: got["z"].append(i[0][0].reshape(len(ids), n_heads, d_head))))
    with torch.no_grad():
        hf(torch.as_tensor(ids)[None])
        for handle in handles:
            handle.remove()
        out = {site: torch.stack(values, 1) for site, values in got.items()}
        out["activity"] = torch.stack([
            torch.einsum("thd,hdm->thm", out["z"][:, i], w.reshape(n_heads, d_head, -1))
            .norm(dim=-1) for i, (_, _, w) in enumerate(attention_modules(hf))], 1)
    return {site: value.numpy() for site, value in out.items()}


def load_plain(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_family_store_equals_hooks_on_the_projections(family, family_models, gpt2_dataset,
                                                      tmp_path):
    out = tmp_path / "store.h5"
    assert cli("--dataset", gpt2_dataset, "--model", family_models[family], "--out", out,
               "--dtype", "float32", "--quiet") == 0
    hf = load_plain(family_models[family])
    cfg = hf.config
    dataset = load_tagged_dataset(gpt2_dataset)
    with open_store(out) as store:
        assert store.attrs["forward_path"] == ("fast" if family in FAST else "general")
        assert store.attrs["model_type"] == family
        kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        assert (store.n_heads, store.n_kv_heads) == (4, kv)
        assert store.file["keys"].shape[2] == kv and store.file["queries"].shape[2] == 4
        for _, ids, span in list(dataset.iter_stories())[:4]:
            rows = np.arange(span.start, span.stop)
            want = reference(hf, ids)
            for site in ("key", "query", "activity"):
                got = np.stack([store.read_layer(site, layer, rows) for layer in range(2)], 1)
                np.testing.assert_allclose(got, want[site], atol=2e-4, rtol=1e-3,
                                           err_msg=f"{family} {site}")


def test_qwen3_key_norm_side_and_rotary_sites(tmp_path, gpt2_tokenizer, gpt2_dataset):
    """A family the fused path does not implement goes through hooks; with key/query norms
    the store says the projections are stored before the norm, the rotary sites after."""
    from transformers import Qwen3Config

    from tests.fixtures_families import GQA

    model = save_tiny_model(tmp_path / "qwen3", Qwen3Config(head_dim=16, **GQA), gpt2_tokenizer)
    out = tmp_path / "store.h5"
    assert cli("--dataset", gpt2_dataset, "--model", model, "--out", out, "--quiet",
               "--sites", "key,query,key_rot,query_rot,activity") == 0
    with open_store(out) as store:
        assert store.attrs["forward_path"] == "general"
        assert store.file["keys"].attrs["stage"] == ("before the rotary embedding; before the "
                                                     "key norm")
        assert store.file["queries_rot"].attrs["stage"] == ("after the query norm and the "
                                                            "rotary embedding")
        assert store.read_layer("key_rot", 1).shape == (store.n_tokens, 2, 16)
        # the norm changes the vectors: rotated keys are not a rotation of the stored ones
        k, k_rot = store.read("key", 1, 0)[5:], store.read("key_rot", 1, 0)[5:]
        assert not np.allclose(np.linalg.norm(k, axis=-1), np.linalg.norm(k_rot, axis=-1),
                               rtol=1e-2)


def test_a_family_that_cannot_be_hooked_is_one_line_exit_2(tmp_path, gpt2_tokenizer,
                                                         gpt2_dataset, capsys):
    from transformers import BioGptConfig

    model = save_tiny_model(tmp_path / "biogpt", BioGptConfig(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=128,
        vocab_size=50257), gpt2_tokenizer)
    capsys.readouterr()
    assert cli("--dataset", gpt2_dataset, "--model", model, "--out", tmp_path / "s.h5") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'biogpt'" in err and "cannot be hooked" in err
    assert not (tmp_path / "s.h5").exists()


def test_rotary_sites_need_a_rotary_model_and_fast_needs_a_fused_family(
        family_models, gpt2_dataset, tmp_path, capsys):
    assert cli("--dataset", gpt2_dataset, "--model", family_models["gpt2"], "--out",
               tmp_path / "a.h5", "--sites", "key,key_rot") == 2
    assert "'gpt2'" in capsys.readouterr().err
    assert cli("--dataset", gpt2_dataset, "--model", family_models["gpt_neox"], "--out",
               tmp_path / "b.h5", "--path", "fast") == 2
    err = capsys.readouterr().err
    assert "gpt_neox" in err and "--path general" in err


def test_a_fused_path_that_disagrees_with_the_model_is_not_used(
        family_models, gpt2_dataset, tmp_path, monkeypatch, capsys):
    """The fused path is checked against the model's own projections before it is used."""
    from extract.forward import families

    def wrong(hf, window_override=None):   # forgets the rotary embedding
        fused = families.llama(hf, window_override)
        fused.rotary = lambda x: (torch.ones(1), torch.zeros(1))
        return fused

    monkeypatch.setitem(families.FAMILIES, "llama", wrong)
    out = tmp_path / "s.h5"
    assert cli("--dataset", gpt2_dataset, "--model", family_models["llama"], "--out", out,
               "--quiet") == 0
    with open_store(out) as store:
        assert store.attrs["forward_path"] == "general"
        assert "disagrees" in store.attrs["forward_check"]["fast_path"]
    assert cli("--dataset", gpt2_dataset, "--model", family_models["llama"], "--out",
               tmp_path / "t.h5", "--path", "fast") == 2
    assert "disagrees" in capsys.readouterr().err


def model_layers(hf):
    return hf.gpt_neox.layers if hf.config.model_type == "gpt_neox" else hf.model.layers


def attention_scale(block):
    att = getattr(block, "self_attn", None) or block.attention
    return att.scaling


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt_neox"])
def test_rotated_queries_meet_the_keys_of_their_key_value_head(family, family_models,
                                                               gpt2_dataset, tmp_path):
    """softmax(query_rot[h] . key_rot[kv_head[h]]) from the store is the model's own pattern
    (Gemma 2: with its logit soft-capping), on tokens inside the sliding window. GPT-NeoX's
    bridge does not fire its rotated hooks: they are computed from its cos and sin."""
    out = tmp_path / "store.h5"
    assert cli("--dataset", gpt2_dataset, "--model", family_models[family], "--out", out,
               "--dtype", "float32", "--sites", "query_rot,key_rot", "--quiet") == 0
    hf = load_plain(family_models[family])
    _, ids, span = next(load_tagged_dataset(gpt2_dataset).iter_stories())
    n = 30
    with torch.no_grad():
        want = torch.stack(hf(torch.as_tensor(ids[:n])[None], output_attentions=True)
                           .attentions, 1)[0].numpy()                # [layer, head, n, n]
    cap = getattr(hf.config, "attn_logit_softcapping", None)
    with open_store(out) as store:
        assert store.kv_head.tolist() == ([0, 1, 2, 3] if family == "gpt_neox" else [0, 0, 1, 1])
        rows = np.arange(span.start, span.start + n)
        for layer, block in enumerate(model_layers(hf)):
            q, k = store.read_layer("query_rot", layer, rows), store.read_layer("key_rot", layer,
                                                                                rows)
            scores = np.einsum("qhd,khd->hqk", q, k[:, store.kv_head]) * attention_scale(block)
            scores = np.tanh(scores / cap) * cap if cap else scores
            scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
            pattern = np.exp(scores - scores.max(-1, keepdims=True))
            pattern /= pattern.sum(-1, keepdims=True)
            np.testing.assert_allclose(pattern, want[layer], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_bench_baseline_hooks_every_layers_projections(family, family_models):
    """The seed-style baseline of ``extract bench`` finds the key/query projections and the
    output projection of every layer, whatever the family."""
    from extract.bench import hooked_modules

    hf = load_plain(family_models[family])
    projections, outs = hooked_modules(hf)
    joint = family in ("gpt2", "gpt_neox")       # one module gives queries, keys and values
    assert len(projections) == (1 if joint else 2) * 2 and len(outs) == 2
    layers = [o for _, o, _ in attention_modules(hf)]
    assert all(any(o is m for m in outs) for o in layers)
