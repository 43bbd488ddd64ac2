"""Forward paths: the fused path equals hooks on plain Hugging Face and TransformerLens."""

import numpy as np
import pytest
import torch

from extract.extractor import Extractor
from extract.forward import FastForward, HookForward, local_attention, local_mask
from extract.models import load_hf_model, load_model
from headprobe.stories import Story

ALL_SITES = ["key", "query", "value", "z", "activity", "entropy", "argmax"]


def hf_reference(hf, ids):
    """Per-head sites from forward hooks and output_attentions on a plain HF model."""
    got = {"key": [], "query": [], "value": [], "z": []}
    handles = []
    for block in hf.transformer.h:
        att = block.attn.attention if hasattr(block.attn, "attention") else block.attn
        if hasattr(att, "k_proj"):
            for site, mod in (("key", att.k_proj), ("query", att.q_proj), ("value", att.v_proj)):
                handles.append(mod.register_forward_hook(
                    lambda m, i, o, site=site: got[site].append(o)))
            out_proj = att.out_proj
        else:
            def split(m, i, o):
                q, k, v = o.split(o.shape[-1] // 3, dim=-1)
                got["query"].append(q), got["key"].append(k), got["value"].append(v)
            handles.append(att.c_attn.register_forward_hook(split))
            out_proj = att.c_proj
        handles.append(out_proj.register_forward_hook(lambda m, i, o: got["z"].append(i[0])))
    with torch.no_grad():
        res = hf(ids, output_attentions=True)
    for h in handles:
        h.remove()
    cfg = hf.config
    n_heads = cfg.num_attention_heads
    b, t = ids.shape
    out = {k: torch.stack([x.reshape(b, t, n_heads, -1) for x in v], 2) for k, v in got.items()}
    acts = []
    for layer, block in enumerate(hf.transformer.h):
        att = block.attn.attention if hasattr(block.attn, "attention") else block.attn
        w = att.out_proj.weight.T if hasattr(att, "out_proj") else att.c_proj.weight  # [in, out]
        w = w.reshape(n_heads, -1, w.shape[-1])
        acts.append(torch.einsum("bthd,hdm->bthm", out["z"][:, :, layer], w).norm(dim=-1))
    out["activity"] = torch.stack(acts, 2)
    pattern = torch.stack(res.attentions, 1)                     # [b, layer, head, q, k]
    out["entropy"] = (-torch.special.xlogy(pattern, pattern).sum(-1)).permute(0, 3, 1, 2)
    out["argmax"] = pattern.argmax(-1).permute(0, 3, 1, 2)
    return out


def assert_sites_close(got, want, sites, atol=2e-5):
    for site in sites:
        if site == "argmax":
            agree = (got[site] == want[site]).float().mean().item()
            assert agree > 0.999, site
        else:
            torch.testing.assert_close(got[site].float(), want[site].float(), atol=atol,
                                       rtol=1e-4, msg=site)


@pytest.fixture(scope="module")
def shared_hf(shared_model):
    return load_hf_model(str(shared_model))


def test_fast_path_equals_hf_hooks_beyond_the_local_window(shared_hf):
    """300 tokens cross the shared model's 256-token local window."""
    ids = torch.randint(0, 4096, (2, 300), generator=torch.Generator().manual_seed(0))
    got = FastForward(shared_hf, ALL_SITES)(ids)
    want = hf_reference(shared_hf, ids)
    assert_sites_close(got, want, ALL_SITES)
    # keys and queries alone stop before the last layer's attention
    assert_sites_close(FastForward(shared_hf, ["key", "query"])(ids), want, ["key", "query"])


def test_fast_path_equals_hf_with_a_small_local_window(shared_model):
    """A window of 8 makes every local layer mask keys further back than the window."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(shared_model), window_size=8,
                                              attn_implementation="eager").eval()
    ids = torch.randint(0, 4096, (3, 40), generator=torch.Generator().manual_seed(1))
    got = FastForward(hf, ALL_SITES)(ids)
    want = hf_reference(hf, ids)
    assert_sites_close(got, want, ALL_SITES)
    wide = FastForward(load_hf_model(str(shared_model)), ["key"])(ids)
    assert not torch.allclose(wide["key"][:, 20:, 3], got["key"][:, 20:, 3], atol=1e-3)


@pytest.mark.parametrize(("seq", "window", "block"), [(75, 8, 16), (40, 32, 5), (20, 30, 4)])
def test_blockwise_local_attention_equals_one_masked_attention(seq, window, block):
    q, k, v = torch.randn(3, 2, 3, seq, 4, generator=torch.Generator().manual_seed(seq))
    mask = local_mask(seq, window, q.device)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    torch.testing.assert_close(local_attention(q, k, v, window, 1.0, block), want)


def test_fast_path_equals_hf_for_a_small_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=300,
                                    n_positions=64, attn_implementation="eager")).eval()
    ids = torch.randint(0, 300, (2, 30))
    assert_sites_close(FastForward(hf, ALL_SITES)(ids), hf_reference(hf, ids), ALL_SITES)


def test_general_transformerlens_path_equals_fast_path(shared_model, shared_hf):
    bridge = load_model(str(shared_model), compat=False)
    ids = torch.randint(0, 4096, (2, 270), generator=torch.Generator().manual_seed(2))
    assert_sites_close(HookForward(bridge, ALL_SITES)(ids), FastForward(shared_hf, ALL_SITES)(ids),
                       ALL_SITES)


def test_general_path_asks_for_attention_weights_only_for_pattern_sites(shared_model,
                                                                        shared_hf):
    bridge = load_model(str(shared_model), compat=False)
    asked = []
    attention = bridge.original_model.transformer.h[0].attn.original_component
    handle = attention.register_forward_pre_hook(
        lambda m, args, kwargs: asked.append(bool(kwargs.get("output_attentions"))),
        with_kwargs=True)
    ids = torch.randint(0, 4096, (2, 40), generator=torch.Generator().manual_seed(3))
    sites = ["key", "query", "activity"]
    got = HookForward(bridge, sites)(ids)
    assert asked[-1] is False
    assert_sites_close(got, FastForward(shared_hf, sites)(ids), sites)
    HookForward(bridge, ["entropy"])(ids)
    handle.remove()
    assert asked[-1] is True


def test_batched_padded_run_equals_one_story_at_a_time(shared_hf):
    rng = np.random.default_rng(0)
    lengths = [5, 40, 17, 63, 1, 29]
    ids = rng.integers(0, 4096, sum(lengths))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    stories = [Story(i, int(s), ids[s:s + n])
               for i, (s, n) in enumerate(zip(starts, lengths, strict=True))]
    forward = FastForward(shared_hf, ["key", "query", "activity"])
    batched = Extractor(forward, batch_tokens=4096).run_group(stories)
    single = Extractor(forward, batch_tokens=1).run_group(stories)
    for site in batched:
        np.testing.assert_allclose(batched[site], single[site], atol=1e-5, rtol=1e-5)
    # and each story equals its own unpadded forward
    one = forward(torch.from_numpy(ids[starts[3]:starts[3] + 63])[None])
    np.testing.assert_allclose(batched["key"][starts[3]:starts[3] + 63], one["key"][0].numpy(),
                               atol=1e-5)


def test_reinit_seed_gives_reproducible_random_weights(shared_model, shared_hf):
    a = load_hf_model(str(shared_model), reinit_seed=3)
    b = load_hf_model(str(shared_model), reinit_seed=3)
    c = load_hf_model(str(shared_model), reinit_seed=4)
    name = "transformer.h.0.attn.attention.k_proj.weight"
    wa, wb, wc = (m.state_dict()[name] for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert wa.shape == shared_hf.state_dict()[name].shape
    assert not torch.allclose(wa, shared_hf.state_dict()[name])


LLAMA_SITES = ["key", "query", "value", "z", "key_rot", "query_rot", "activity", "entropy",
               "argmax"]


def hf_attentions(hf, ids):
    """Attention patterns [b, layer, head, q, k] of an eager HF forward."""
    with torch.no_grad():
        return torch.stack(hf(ids, output_attentions=True).attentions, 1)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_fused_llama_family_equals_hooks_and_hf_patterns(family, family_models, tmp_path,
                                                         gpt2_tokenizer):
    """Rotary, grouped-query (and for Qwen2 and Mistral sliding-window) attention: the fused
    path equals the TransformerLens hook path on every site, and its patterns equal HF's."""
    from transformers import AutoModelForCausalLM, MistralConfig

    from tests.fixtures_families import GQA, save_tiny_model

    if family == "mistral":   # one key/value head (multi-query), a window of 16 everywhere
        model_dir = save_tiny_model(tmp_path / "mistral", MistralConfig(
            **{**GQA, "num_key_value_heads": 1}, sliding_window=16), gpt2_tokenizer)
    else:
        model_dir = family_models[family]
    hf = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    ids = torch.randint(0, 50257, (2, 70), generator=torch.Generator().manual_seed(3))
    fused = FastForward(hf, LLAMA_SITES)(ids)
    hooked = HookForward(load_model(str(model_dir), compat=False), LLAMA_SITES)(ids)
    assert fused["key"].shape[3] == hf.config.num_key_value_heads
    assert_sites_close(fused, hooked, LLAMA_SITES, atol=5e-5)
    pattern = hf_attentions(hf, ids)
    entropy = (-torch.special.xlogy(pattern, pattern).sum(-1)).permute(0, 3, 1, 2)
    argmax = pattern.argmax(-1).permute(0, 3, 1, 2)
    assert_sites_close(fused, {"entropy": entropy, "argmax": argmax}, ["entropy", "argmax"],
                       atol=5e-5)


def test_fused_llama_batches_equal_single_stories(family_models):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(family_models["qwen2"]).eval()
    lengths = [3, 50, 17, 41]
    ids = np.random.default_rng(1).integers(0, 50257, sum(lengths))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    stories = [Story(i, int(s), ids[s:s + n])
               for i, (s, n) in enumerate(zip(starts, lengths, strict=True))]
    forward = FastForward(hf, ["key", "query_rot", "activity"])
    batched = Extractor(forward, batch_tokens=4096).run_group(stories)
    single = Extractor(forward, batch_tokens=1).run_group(stories)
    for site in batched:
        np.testing.assert_allclose(batched[site], single[site], atol=1e-5, rtol=1e-5)


def test_rotate_half_as_a_matrix_equals_transformers_rotate_half():
    from transformers.models.llama.modeling_llama import rotate_half

    from extract.forward.families import rotate_half_matrix

    x = torch.randn(5, 3 * 8, generator=torch.Generator().manual_seed(0))
    want = rotate_half(x.reshape(5, 3, 8)).reshape(5, 24)
    torch.testing.assert_close(x @ rotate_half_matrix(3, 8), want)
