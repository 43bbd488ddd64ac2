"""The repeated-random-tokens study: inputs with their own repeat boundaries, scores, halves,
MLP patching, the induction circuit (composition, ablation, key-path patching), CLI."""

import json

import numpy as np
import pytest
import torch
from transformer_lens import FactoredMatrix, head_detector

from headprobe.cli import run_main
from headprobe.hooks import hook_name, layer_hooks
from probing.__main__ import main
from probing.studies import circuits, repeated
from probing.studies.common import capture
from probing.study_io import read_study
from probing.thresholds import (
    CIRCUIT_ABLATION,
    CIRCUIT_ACCURACY,
    CIRCUIT_INDUCTION,
    CIRCUIT_PREV_TOKEN,
    CIRCUIT_RANDOM_DROP,
)

TEXT = "Tom and Sue went to the park. Tom saw a big dog and Sue saw a cat."


def test_repeat_batch_repeats_distinct_tokens_at_each_sequences_boundary():
    rep = repeated.repeat_batch(90, seq_len=12, batch=40, seed=3, min_len=4, max_prefix=6)
    tokens, start, length = rep.tokens, rep.start, rep.length
    assert tokens.shape == (40, 1 + 6 + 24) and (tokens[:, 0] == 0).all()
    assert (tokens[:, 1:] != 0).all()
    for row, s, n in zip(tokens.tolist(), start.tolist(), length.tolist(), strict=True):
        assert row[s:s + n] == row[s + n:s + 2 * n]
        rest = row[1:s + n] + row[s + 2 * n:]
        assert len(set(rest)) == len(rest) == len(row) - 1 - n   # nothing else repeats
    assert len(set(length.tolist())) > 5 and len(set(start.tolist())) > 4
    assert 4 <= length.min() and length.max() <= 12 and 1 <= start.min() and start.max() <= 7
    again = repeated.repeat_batch(90, 12, 40, seed=3, min_len=4, max_prefix=6)
    assert torch.equal(tokens, again.tokens)
    classic = repeated.repeat_batch(50, seq_len=12, batch=5, seed=3)
    assert torch.equal(classic.tokens[:, 1:13], classic.tokens[:, 13:])
    assert (classic.start == 1).all() and (classic.length == 12).all()
    # targets: the tokens of each copy after its first one
    mask = rep.targets(1)
    assert mask.sum(1).tolist() == (length - 1).tolist()
    assert mask[0, start[0] + length[0] + 1] and not mask[0, start[0] + length[0]]
    with pytest.raises(ValueError, match="need 2 <= min_len <= seq_len"):
        repeated.repeat_batch(50, seq_len=5, batch=2, min_len=6)
    with pytest.raises(ValueError, match="distinct tokens"):
        repeated.repeat_batch(10, seq_len=12, batch=2)


def test_scores_agree_with_transformer_lens_head_detector(study_model):
    model = study_model
    # previous-token score on a real sentence against head_detector (it divides by all rows)
    ids = model.to_tokens(TEXT)
    n = ids.shape[-1]
    _, acts = capture(model, ids, layer_hooks("pattern", model.cfg.n_layers))
    mine = torch.stack([repeated.diagonal_score(acts[hook_name("pattern", layer)], -1, 1)
                        for layer in range(model.cfg.n_layers)])
    reference = head_detector.detect_head(model, TEXT, "previous_token_head")
    np.testing.assert_allclose(mine.numpy() * (n - 1) / n, reference.numpy(), atol=1e-5)
    # induction score on the classic input against the detector's induction pattern
    seq_len = 10
    rep = repeated.repeat_batch(model.cfg.d_vocab, seq_len, 1, seed=0)
    _, scores = repeated.head_scores(model, rep)
    detection = head_detector.get_induction_head_detection_pattern(rep.tokens)
    _, acts = capture(model, rep.tokens, [hook_name("pattern", 2)])
    for head in (0, 7):
        ref = head_detector.compute_head_attention_similarity_score(
            acts[hook_name("pattern", 2)][0, head], detection, exclude_bos=False,
            exclude_current_token=False, error_measure="mul")
        assert scores["induction_score"][2, head] * seq_len / (2 * seq_len + 1) == \
            pytest.approx(ref, abs=1e-5)


def test_induction_score_follows_each_sequences_own_boundary(study_model):
    model = study_model
    rep = repeated.repeat_batch(model.cfg.d_vocab, 9, 6, seed=2, min_len=3, max_prefix=5)
    logits, scores = repeated.head_scores(model, rep)
    _, acts = capture(model, rep.tokens, [hook_name("pattern", 3)])
    pattern = acts[hook_name("pattern", 3)]
    total, count = torch.zeros(model.cfg.n_heads), 0
    for b, (s, n) in enumerate(zip(rep.start.tolist(), rep.length.tolist(), strict=True)):
        for p in range(s + n, s + 2 * n):
            total += pattern[b, :, p, p - n + 1]
            count += 1
    np.testing.assert_allclose(scores["induction_score"][3], (total / count).numpy(), atol=1e-6)
    halves = repeated.half_metrics(logits, rep, 9)
    hits = [int(logits[b, p - 1].argmax() == rep.tokens[b, p])
            for b, (s, n) in enumerate(zip(rep.start.tolist(), rep.length.tolist(), strict=True))
            for p in range(s + n + 1, s + 2 * n)]
    assert halves["accuracy"][1] == pytest.approx(np.mean(hits))
    assert halves["accuracy"][1] == pytest.approx(repeated.second_half_accuracy(logits, rep))
    assert np.isnan(halves["position_loss"][:, rep.length.max():]).all()


def test_mlp_patching_grid_matches_single_patched_runs(study_model, monkeypatch):
    model = study_model
    n_layers = model.cfg.n_layers
    rep = repeated.repeat_batch(model.cfg.d_vocab, 6, 3, seed=1, min_len=4, max_prefix=3)
    grid = repeated.mlp_patching_grid(model, rep, max_rows=4)
    assert grid.shape == (n_layers, int(rep.length.max()))
    names = layer_hooks("mlp_out", n_layers)
    logits, clean = capture(model, rep.tokens, names)
    mask = rep.targets(1)[:, 1:]

    def second_copy_loss(logits):                    # [batch]
        loss = -torch.log_softmax(logits[:, :-1], -1).gather(-1, rep.tokens[:, 1:, None])[..., 0]
        return (loss * mask).sum(1) / mask.sum(1)

    base = second_copy_loss(logits)
    for layer, i in ((0, 0), (1, 2), (n_layers - 1, 3)):
        rows = [b for b in range(3) if rep.length[b] > i]
        deltas = []
        for b in rows:
            dest, src = int(rep.start[b] + rep.length[b] + i), int(rep.start[b] + i)

            def patch(act, hook, b=b, dest=dest, src=src, name=names[layer]):
                act[b, dest] = clean[name][b, src]
                return act

            with torch.inference_mode():
                patched = model.run_with_hooks(rep.tokens, fwd_hooks=[(names[layer], patch)])
            deltas.append((second_copy_loss(patched) - base)[b].item())
        assert abs(np.mean(deltas)) > 1e-4
        assert grid[layer, i] == pytest.approx(np.mean(deltas), abs=1e-4)
    # models whose blocks cannot run on a residual stream alone take full patched passes
    assert repeated.can_resume(model)
    monkeypatch.setattr(repeated, "can_resume", lambda model: False)
    np.testing.assert_allclose(repeated.mlp_patching_grid(model, rep, max_rows=5), grid,
                               atol=1e-4)


def test_top1_accuracy_in_blocks_matches_dense():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 37, generator=gen), torch.eye(37)
    a[:20, :20] += 20 * torch.eye(20)          # rows 0..19 prefer their own column
    matrix = FactoredMatrix(a, b)
    dense = (matrix.AB.argmax(-1) == torch.arange(37)).float().mean().item()
    assert dense >= 20 / 37
    for block in (1, 7, 64):
        assert circuits.top1_accuracy(matrix, block=block) == pytest.approx(dense)
    # a sample of rows: rows 0..19 all hit; the sample of a vocabulary too large is seeded
    assert circuits.top1_accuracy(matrix, block=3, rows=np.arange(0, 20, 2)) == 1.0
    rows = circuits.circuit_rows(37, 10, seed=1)
    assert len(set(rows)) == 10 and np.array_equal(rows, circuits.circuit_rows(37, 10, seed=1))
    assert circuits.circuit_rows(37, 37, seed=1) is None
    assert circuits.circuit_rows(37, 0, seed=1) is None


def frobenius_score(left: torch.Tensor, right: torch.Tensor) -> float:
    return (left @ right).norm().item() / (left.norm().item() * right.norm().item())


def test_composition_scores_follow_the_definition(study_model):
    model = study_model
    scores = circuits.composition_scores(model)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    assert scores["K"].shape == (n_layers, n_heads, n_layers, n_heads)
    assert np.isnan(scores["K"][2, 0, 2, 1]) and np.isnan(scores["Q"][3, 0, 1, 0])
    for (lw, hw), (lr, hr) in (((0, 3), (1, 5)), ((2, 11), (6, 0))):
        ov = model.W_V[lw, hw] @ model.W_O[lw, hw]                      # [d_model, d_model]
        qk = model.W_Q[lr, hr] @ model.W_K[lr, hr].T
        ov_r = model.W_V[lr, hr] @ model.W_O[lr, hr]
        with torch.no_grad():
            expected = {"Q": frobenius_score(ov, qk), "K": frobenius_score(ov, qk.T),
                        "V": frobenius_score(ov, ov_r)}
        for mode, value in expected.items():
            assert scores[mode][lw, hw, lr, hr] == pytest.approx(value, rel=1e-4), mode
    baseline = circuits.random_composition_baseline(model.cfg.d_model, model.cfg.d_head, 300)
    # rotation-invariant random factors: E||AB||^2 = ||A||^2 ||B||^2 / d_model
    expect = 1 / np.sqrt(model.cfg.d_model)
    for mode in circuits.MODES:
        mean, sd = baseline[mode]
        assert 0.9 * expect < mean < 1.1 * expect and 0 < sd < 0.2 * mean
    assert baseline == circuits.random_composition_baseline(model.cfg.d_model,
                                                            model.cfg.d_head, 300)


def test_key_path_patching_changes_only_the_readers_keys(study_model):
    model = study_model
    rep = repeated.repeat_batch(model.cfg.d_vocab, 8, 4, seed=0, min_len=5, max_prefix=2)
    cache = circuits.clean_cache(model, rep.tokens)
    means = circuits.mean_z(cache, model.cfg.n_layers)
    writer, reader = (1, 4), (3, 2)
    clean_keys = cache[hook_name("k", 3)][:, :, 2]
    np.testing.assert_allclose(circuits.head_keys(model, cache[hook_name("resid_pre", 3)],
                                                  reader), clean_keys, atol=1e-4)
    seen = {}

    def metric(logits):
        seen["logits"] = logits
        return repeated.second_half_accuracy(logits, rep)

    drop, note = circuits.key_path_drop(model, rep.tokens, metric, cache, means, writer, reader)
    assert drop is not None and "hook_k" in note
    # rerun the patch and look inside: only head 2 of layer 3 got other keys
    names = [hook_name(p, 3) for p in ("q", "k", "v")]
    z = cache[hook_name("z", 1)][:, :, 4]
    resid = cache[hook_name("resid_pre", 3)] + (means[1, 4] - z) @ model.W_O[1, 4]
    patched = circuits.head_keys(model, resid, reader)

    def patch(k, hook):
        k[:, :, 2] = patched
        return k

    _, acts = capture(model, rep.tokens, names, extra_hooks=[(names[1], patch)])
    clean = cache[hook_name("k", 3)]
    assert (acts[names[1]][:, :, 2] - clean[:, :, 2]).abs().max() > 1e-3
    torch.testing.assert_close(acts[names[1]][:, :, [0, 1, 3]], clean[:, :, [0, 1, 3]])
    _, q_clean = capture(model, rep.tokens, names[:1])
    torch.testing.assert_close(acts[names[0]], q_clean[names[0]])


def test_induction_organism_has_the_canonical_circuit(induction_model):
    """The organism of ``python -m extract train --recipe induction``, on held-out repeats of
    random lengths at random offsets (the study's defaults)."""
    arrays, meta, report = repeated.repeated_study(induction_model, seed=11)
    c = meta["circuit"]
    assert meta["accuracy_second"] >= 0.9 and meta["accuracy_first"] <= 0.2
    # the recipe's induction score is 0.86-0.87 (docs/case-studies.md), short of 0.9
    assert arrays["induction_score"][1].max() >= 0.85
    assert arrays["prev_token_score"][0].max() >= 0.9
    assert c["found"] and c["prev_token_head"][0] == 0 and c["induction_head"][0] == 1
    assert c["ablation_drop"] >= 0.5 and c["random_drop"] <= 0.1
    assert c["key_path_drop"] >= 0.5
    k = c["k_composition"]
    assert k["agrees"] and k["strongest_score"] > k["baseline"] + 5 * k["baseline_sd"]
    assert c["k_circuit_top1"] > 10 * c["chance"]
    assert len(set(arrays["repeat_length"].tolist())) > 5
    pattern = arrays["example_pattern"]
    start, length = int(arrays["repeat_start"][0]), int(arrays["repeat_length"][0])
    stripe = [pattern[p, p - length + 1] for p in range(start + length, start + 2 * length)]
    assert np.mean(stripe) > 0.8
    prev = arrays["example_prev_pattern"]
    assert np.mean(np.diagonal(prev, offset=-1)) > 0.8
    # attention-only: the MLP outputs are zero, so patching them changes nothing
    np.testing.assert_allclose(np.nan_to_num(arrays["mlp_patch_delta"]), 0.0, atol=1e-6)
    assert report.startswith("circuit: previous-token L0H")


def test_rotary_induction_organism_learns_its_previous_token_head(rotary_induction_model_dir,
                                                                 tmp_path, capsys):
    """``--recipe induction`` (Llama, every layer free to attend anywhere), seed 0, through
    the command line the docs quote."""
    config = json.loads((rotary_induction_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "sliding_window" not in config
    out = tmp_path / "rep"
    argv = ["repeated", "--model", str(rotary_induction_model_dir), "--out", str(out)]
    assert run_main(main, argv) == 0
    assert capsys.readouterr().out.startswith("circuit: previous-token L0H")
    res = read_study(out)
    c, arrays = res.meta["circuit"], res.arrays
    assert res.meta["accuracy_first"] <= 0.2
    assert c["found"] and c["prev_token_head"][0] == 0 and c["induction_head"][0] == 1
    # the sharp circuit's thresholds, each met by the previous-token head it names
    assert CIRCUIT_PREV_TOKEN.holds(arrays["prev_token_score"][0].max())
    assert CIRCUIT_INDUCTION.holds(arrays["induction_score"][1].max())
    assert CIRCUIT_ACCURACY.holds(res.meta["accuracy_second"])
    assert CIRCUIT_ABLATION.holds(c["ablation_drop"])
    assert CIRCUIT_RANDOM_DROP.holds(c["random_drop"])
    # several layer-1 heads are induction heads, so the strongest K-composition pair may
    # name another of them; the named induction head's keys are written most by the
    # previous-token head
    assert c["k_composition"]["best_writer_into_induction_keys"] == c["prev_token_head"]


def test_fixed_offset_model_predicts_the_repeat_without_the_circuit(fixed_offset_model_dir):
    from extract.models import load_model

    model = load_model(str(fixed_offset_model_dir))
    _, fixed, _ = repeated.repeated_study(model, seq_len=20, min_len=None, max_prefix=0,
                                          batch=20, seed=5)
    assert fixed["accuracy_second"] >= 0.9              # the offset it was trained on
    _, varied, report = repeated.repeated_study(model, seq_len=12, min_len=4, max_prefix=16,
                                                batch=20, seed=5)
    assert varied["accuracy_second"] <= 0.3             # repeats at their own boundaries
    assert not fixed["circuit"]["found"] and fixed["circuit"]["prev_token_score"] < 0.5
    assert report.startswith("circuit: none")


def test_repeated_cli_prints_the_circuit_line(induction_model_dir, tmp_path, capsys):
    out = tmp_path / "rep"
    argv = ["repeated", "--model", str(induction_model_dir), "--out", str(out)]
    assert run_main(main, argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    res = read_study(out)
    c = res.meta["circuit"]
    prev, ind = (f"L{c[k][0]}H{c[k][1]}" for k in ("prev_token_head", "induction_head"))
    assert first == (
        f"circuit: previous-token {prev} ({c['prev_token_score']:.2f}) -> induction {ind} "
        f"({c['induction_score']:.2f}); second-half accuracy {res.meta['accuracy_second']:.2f};"
        f" ablation drop {c['ablation_drop']:.2f} (random head L0H{c['random_head'][1]} "
        f"{c['random_drop']:.2f})")
    assert res.axes["k_composition"] == repeated.K_COMPOSITION.dims
    assert res.arrays["tokens"].shape == (30, 1 + 10 + 2 * 25)
    assert run_main(main, argv) == 2                       # exists, no --overwrite
    assert run_main(main, ["repeated", "--model", str(induction_model_dir), "--seq-len",
                           "200", "--out", str(tmp_path / "long")]) == 2


def test_shared_model_says_it_has_no_circuit(shared_model, tmp_path, capsys):
    argv = ["repeated", "--model", str(shared_model), "--batch", "4", "--seq-len", "12",
            "--min-len", "6", "--max-prefix", "4", "--no-mlp-grid", "--out", str(tmp_path / "r")]
    assert run_main(main, argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("circuit: none: no induction head")
    res = read_study(tmp_path / "r")
    assert res.arrays["induction_score"].max() < 0.5
    assert res.arrays["ablation_drop"].shape == (8, 16)


def checkpoint_heads(model_dir, n_heads):
    """Per layer (W_Q, W_K, W_V [H, d_model, d_head], W_O [H, d_head, d_model], ln_1 gain
    [d_model]) read straight from a GPT-Neo checkpoint's safetensors file."""
    from safetensors.numpy import load_file

    weights = load_file(str(model_dir / "model.safetensors"))
    n_layers = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("transformer.h."))
    out = []
    for layer in range(n_layers):
        w = {k.rsplit(".", 2)[-2]: v.astype(np.float64) for k, v in weights.items()
             if k.startswith(f"transformer.h.{layer}.") and k.endswith("weight")}
        d_model = w["q_proj"].shape[1]
        split = [w[p].T.reshape(d_model, n_heads, -1).transpose(1, 0, 2)
                 for p in ("q_proj", "k_proj", "v_proj")]
        w_o = w["out_proj"].T.reshape(n_heads, -1, d_model)
        out.append((*split, w_o, w["ln_1"]))
    return out


def processed(layer_weights):
    """TransformerLens' processing, written out: the gain folded into W_Q, W_K, W_V, those
    centred over d_model, W_O centred over its output."""
    *reads, w_o, gain = layer_weights
    reads = [gain[None, :, None] * w for w in reads]
    reads = [w - w.mean(axis=1, keepdims=True) for w in reads]
    return (*reads, w_o - w_o.mean(axis=2, keepdims=True), gain)


def expected_composition(heads, writer, reader):
    (lw, hw), (lr, hr) = writer, reader
    w_q, w_k, w_v, w_o, _ = heads[lr]
    ov_a = heads[lw][2][hw] @ heads[lw][3][hw]
    qk = w_q[hr] @ w_k[hr].T
    return {"Q": frobenius_score_np(ov_a, qk), "K": frobenius_score_np(ov_a, qk.T),
            "V": frobenius_score_np(ov_a, w_v[hr] @ w_o[hr])}


def frobenius_score_np(left, right):
    return np.linalg.norm(left @ right) / (np.linalg.norm(left) * np.linalg.norm(right))


def test_composition_is_stored_on_raw_and_processed_weights(shared_model, tmp_path, capsys):
    """Both kinds of composition are stored, differ where the layer-norm gain is folded in,
    and each equals the score computed from the checkpoint file itself."""
    argv = ["repeated", "--model", str(shared_model), "--batch", "2", "--seq-len", "6",
            "--min-len", "6", "--max-prefix", "0", "--no-mlp-grid", "--out", str(tmp_path / "r")]
    assert run_main(main, argv) == 0
    report = capsys.readouterr().out
    res = read_study(tmp_path / "r")
    raw = checkpoint_heads(shared_model, res.meta["n_heads"])
    kinds = {"": [processed(w) for w in raw], "_raw": raw}
    rng = np.random.default_rng(0)
    for _ in range(12):
        lw, lr = sorted(rng.choice(len(raw), 2, replace=False))
        writer, reader = (int(lw), int(rng.integers(16))), (int(lr), int(rng.integers(16)))
        for suffix, heads in kinds.items():
            for mode, value in expected_composition(heads, writer, reader).items():
                stored = res.arrays[f"{mode.lower()}_composition{suffix}"]
                assert stored[(*writer, *reader)] == pytest.approx(value, rel=1e-4), mode
    for mode in circuits.MODES:
        ours, theirs = (res.arrays[f"{mode.lower()}_composition{s}"] for s in kinds)
        assert np.array_equal(np.isnan(ours), np.isnan(theirs))
        assert np.nanmax(np.abs(ours - theirs)) > 1e-3
    assert res.axes["k_composition_raw"] == repeated.K_COMPOSITION_RAW.axes
    c = res.meta["circuit"]
    assert [c["k_composition" + s]["weights"] for s in kinds] == ["processed", "raw"]
    for weights in circuits.WEIGHTS:
        assert f"K-composition from {circuits.WEIGHT_WORDS[weights]}: strongest pair" in report
