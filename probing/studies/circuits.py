"""The induction circuit of a model, from its weights and by intervention.

Helpers of the ``repeated`` study (not a study of their own):

* composition scores (Elhage et al. 2021, "A Mathematical Framework for Transformer
  Circuits") of every pair of heads in different layers, from the weights as
  ``FactoredMatrix`` products (``TransformerBridge.all_composition_scores``), and the same
  score for random Gaussian matrices of the same shapes as a baseline. The scores depend on
  which weights they are computed on (``WEIGHTS``): *processed*, the weights the study's
  model computes with (TransformerLens' compatibility mode: each block's layer-norm gain
  folded into W_Q, W_K and W_V, those centred over d_model, W_O centred over its output),
  or *raw*, the checkpoint's own weights (:func:`raw_weights_model`);
* the K-composition circuit of one pair as a [d_vocab, d_vocab] ``FactoredMatrix`` and its
  top-1 accuracy;
* mean ablation of each head's output (``hook_z``);
* path patching of one head's output into another head's keys only.

Composition scores follow TransformerLens' row-vector convention: W_OV = W_V W_O and
W_QK = W_Q W_K^T of a head, both [d_model, d_model]; for a writer head A in an earlier
layer and a reader head B, Q-composition is ||W_OV^A W_QK^B||_F / (||W_OV^A||_F
||W_QK^B||_F), K-composition uses W_QK^B transposed and V-composition W_OV^B.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from headprobe.heads import kv_heads
from headprobe.hooks import hook_name, layer_hooks
from probing.studies.ablation import ablation_hooks
from probing.studies.common import capture, run_hooked

MODES = ("Q", "K", "V")
# Which weights composition is computed on, and the suffix of their arrays and meta keys
WEIGHTS = {"processed": "", "raw": "_raw"}
WEIGHT_WORDS = {
    "processed": "processed weights (layer-norm gain folded into W_Q, W_K, W_V; read and "
                 "write weights centred)",
    "raw": "the checkpoint's own weights (no folding or centring)"}
Head = tuple[int, int]


def raw_weights_model(model: Any) -> Any:
    """The checkpoint ``model`` was booted from (``model.cfg.model_name``), booted again
    without weight processing, on the same device and dtype: its ``W_Q``, ``W_K``, ``W_V``
    and ``W_O`` are the checkpoint's own."""
    from extract.models import load_model

    param = next(model.parameters())
    return load_model(str(model.cfg.model_name), device=str(param.device), dtype=param.dtype,
                      compat=False)


def composition_scores(model: Any) -> dict[str, np.ndarray]:
    """Q-, K- and V-composition of every (writer, reader) pair of heads.

    Returns {mode: [n_layers, n_heads, n_layers, n_heads]} indexed (writer layer, writer
    head, reader layer, reader head); NaN unless the writer's layer is below the reader's.
    """
    n_layers = model.cfg.n_layers
    later = np.arange(n_layers)[:, None, None, None] < np.arange(n_layers)[None, None, :, None]
    out = {}
    with torch.no_grad():
        for mode in MODES:
            result = model.all_composition_scores(mode)
            scores = getattr(result, "scores", result).detach().float().cpu().numpy()
            out[mode] = np.where(later, scores, np.nan)
    return out


def random_composition_baseline(d_model: int, d_head: int, draws: int = 200,
                                seed: int = 0) -> dict[str, tuple[float, float]]:
    """Mean and sd of each composition score for random Gaussian weights of the given shapes.

    W_Q, W_K, W_V: [d_model, d_head]; W_O: [d_head, d_model]; writer and reader drawn
    independently, ``draws`` pairs. Returns {mode: (mean, sd)}.
    """
    from transformer_lens import FactoredMatrix
    from transformer_lens.utilities import composition_scores as tl_composition_scores

    gen = torch.Generator().manual_seed(seed)

    def weights(*shape: int) -> torch.Tensor:
        return torch.randn(draws, *shape, generator=gen)

    writer_ov = FactoredMatrix(weights(d_model, d_head), weights(d_head, d_model))
    reader_qk = FactoredMatrix(weights(d_model, d_head), weights(d_head, d_model))
    reader_ov = FactoredMatrix(weights(d_model, d_head), weights(d_head, d_model))
    readers = {"Q": reader_qk, "K": reader_qk.T, "V": reader_ov}
    out = {}
    for mode, right in readers.items():
        scores = tl_composition_scores(writer_ov, right, broadcast_dims=False)     # [draws]
        out[mode] = (float(scores.mean()), float(scores.std()))
    return out


def strongest_pair(scores: np.ndarray) -> tuple[Head, Head]:
    """(writer, reader) of the largest finite entry of a [L, H, L, H] composition array."""
    flat = np.where(np.isfinite(scores), scores, -np.inf)
    idx = np.unravel_index(int(np.argmax(flat)), scores.shape)
    return (int(idx[0]), int(idx[1])), (int(idx[2]), int(idx[3]))


def kv_index(model: Any) -> np.ndarray:
    """The key/value head each query head reads (:func:`headprobe.heads.kv_heads`): [n_heads]."""
    cfg = model.cfg
    return kv_heads(int(cfg.n_heads), int(getattr(cfg, "n_key_value_heads", None)
                                          or cfg.n_heads))


def k_composition_circuit(model: Any, prev_head: Head, ind_head: Head) -> Any:
    """``W_E W_Q (W_E W_V W_O W_K)^T`` as a FactoredMatrix [d_vocab, d_vocab].

    Rows are query tokens (the induction head's query side), columns key tokens seen
    through the previous-token head's output (positional embeddings, and the rotary
    embedding of rotary models, left out). Under grouped-query attention W_K and W_V are
    those of the key/value head each query head reads.
    """
    from transformer_lens import FactoredMatrix

    (lp, hp), (li, hi) = prev_head, ind_head
    kv = kv_index(model)
    with torch.no_grad():
        w_e = model.W_E.detach().float()
        query = w_e @ model.W_Q[li, hi].detach().float()                  # [d_vocab, d_head]
        key = (w_e @ model.W_V[lp, kv[hp]].detach().float()
               @ model.W_O[lp, hp].detach().float()
               @ model.W_K[li, kv[hi]].detach().float())                   # [d_vocab, d_head]
    return FactoredMatrix(query.cpu(), key.T.cpu())


def top1_accuracy(matrix: Any, block: int = 512, rows: np.ndarray | None = None) -> float:
    """Fraction of rows of a square FactoredMatrix whose largest entry is on the diagonal.

    rows: the row indices to score (default all). Computed ``block`` rows at a time so the
    full [n, n] product is never formed.
    """
    n = matrix.shape[-2]
    rows = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    hits = 0
    for start in range(0, len(rows), block):
        chosen = rows[start:start + block]
        product = matrix.A[chosen] @ matrix.B                                # [block, n]
        hits += int((product.argmax(-1) == chosen).sum())
    return hits / max(len(rows), 1)


def circuit_rows(d_vocab: int, max_tokens: int, seed: int) -> np.ndarray | None:
    """Query tokens the circuit accuracy is measured on: all (None) up to ``max_tokens``,
    else a seeded sample of that many (a large vocabulary makes every row too slow)."""
    if max_tokens <= 0 or d_vocab <= max_tokens:
        return None
    return np.sort(np.random.default_rng(seed).choice(d_vocab, max_tokens, replace=False))


def clean_cache(model: Any, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """``hook_z``, ``hook_resid_pre`` and ``hook_k`` of every layer on ``tokens`` [batch, pos]."""
    n = model.cfg.n_layers
    names = layer_hooks("z", n) + layer_hooks("resid_pre", n) + layer_hooks("k", n)
    return capture(model, tokens, names)[1]


def mean_z(cache: dict[str, torch.Tensor], n_layers: int) -> torch.Tensor:
    """Each head's mean ``hook_z`` over sequences and positions (BOS left out):
    [n_layers, n_heads, d_head]."""
    return torch.stack([cache[hook_name("z", layer)][:, 1:].mean(dim=(0, 1))
                        for layer in range(n_layers)])


Metric = Callable[[torch.Tensor], float]


def ablation_drops(model: Any, tokens: torch.Tensor, metric: Metric,
                   means: torch.Tensor) -> np.ndarray:
    """Drop of ``metric(logits)`` when each head alone is mean-ablated: [n_layers, n_heads].

    The head's ``hook_z`` is replaced at every position by its mean (``means``
    [n_layers, n_heads, d_head]); drop = clean metric - ablated metric.
    """
    cfg = model.cfg
    base = metric(run_hooked(model, tokens))
    drops = np.zeros((cfg.n_layers, cfg.n_heads))
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            hooks = ablation_hooks([(layer, head)], "mean", means)
            drops[layer, head] = base - metric(run_hooked(model, tokens, hooks))
    return drops


def normalized(model: Any, resid: torch.Tensor) -> torch.Tensor:
    """The residual stream [batch, pos, d_model] as a block's first norm hands it to the
    attention weights, with the norm's weights folded into them (compatibility mode)."""
    kind = str(getattr(model.cfg, "normalization_type", "LN") or "")
    eps = float(getattr(model.cfg, "eps", 1e-5))
    if kind.startswith("LN"):
        resid = resid - resid.mean(-1, keepdim=True)
    if kind.startswith(("LN", "RMS")):
        resid = resid / (resid.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return resid


def head_keys(model: Any, resid: torch.Tensor, head: Head) -> torch.Tensor:
    """Keys [batch, pos, d_head] of query head ``head`` (those of the key/value head it
    reads) computed from the residual stream entering its block, resid [batch, pos, d_model]."""
    layer, kv = head[0], int(kv_index(model)[head[1]])
    keys = normalized(model, resid) @ model.W_K[layer, kv].detach()
    try:
        bias = model.b_K
    except AttributeError:          # bias-free projections (Llama)
        return keys
    return keys if bias is None else keys + bias[layer, kv].detach()


def key_path_drop(model: Any, tokens: torch.Tensor, metric: Metric, cache: dict[str, Any],
                  means: torch.Tensor, writer: Head, reader: Head
                  ) -> tuple[float | None, str]:
    """Drop of ``metric`` when only ``reader``'s keys see ``writer`` mean-ablated.

    The writer's output z W_O is replaced by its mean output in the residual stream that
    the reader's keys are computed from, and nowhere else (the direct path writer ->
    reader keys); the keys are recomputed from that stream and patched on ``hook_k``.
    Under grouped-query attention the keys are those of the reader's key/value head, so
    the query heads sharing it see the patched keys too. Returns (drop, note); drop is None
    when the model's keys cannot be recomputed from its residual stream (checked on the
    clean run), and the note says why.
    """
    (lw, hw), (lr, hr) = writer, reader
    kv = int(kv_index(model)[hr])
    resid = cache[hook_name("resid_pre", lr)]
    clean_keys = cache[hook_name("k", lr)][:, :, kv]
    error = float((head_keys(model, resid, reader) - clean_keys).abs().max())
    scale = float(clean_keys.abs().max()) or 1.0
    if error > 1e-4 * scale:
        return None, (f"keys of {reader} could not be recomputed from the residual stream "
                      f"(max difference {error:.2g})")
    w_o = model.W_O[lw, hw].detach()
    z = cache[hook_name("z", lw)][:, :, hw]                                # [batch, pos, d_head]
    patched = head_keys(model, resid + (means[lw, hw] - z) @ w_o, reader)

    def patch(k: torch.Tensor, hook: Any) -> torch.Tensor:
        k[:, :, kv] = patched.to(k.dtype)
        return k

    base = metric(run_hooked(model, tokens))
    return base - metric(run_hooked(model, tokens, [(hook_name("k", lr), patch)])), \
        "keys recomputed from the patched residual stream and set on hook_k"
