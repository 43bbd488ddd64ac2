"""Repeated random tokens: induction heads, previous-token heads and the circuit they form.

Each input sequence is BOS, a prefix of ``0..max_prefix`` random tokens, a segment of
``min_len..seq_len`` random tokens, the same segment again, and random tokens up to the
common width ``1 + max_prefix + 2 * seq_len``. Lengths and offsets are drawn per sequence,
so every score is taken at the sequence's own repeat boundary; ``min_len = seq_len`` and
``max_prefix = 0`` give the classic BOS + A + A. No token but the repeated ones occurs
twice in a sequence and none is BOS or another special token, so each token of the second
copy has exactly one earlier occurrence.

* per copy (first, second): mean log-probability and top-1 accuracy of its tokens after
  the first one (the second copy's first token follows a token seen once: nothing can
  predict it), and the loss at each index of the copy;
* induction score per head: mean attention from each second-copy position p to
  ``p - length + 1``, the token after the earlier occurrence of the token at p;
  previous-token score: mean attention from p >= 1 to p - 1;
* the circuit: the best induction head above layer 0 and the best previous-token head
  below it, each head's mean-ablation drop of second-half accuracy, path patching of the
  previous-token head into the induction head's keys only, Q/K/V-composition scores of
  all pairs of heads with a random-weights baseline, and the K-composition circuit's
  top-1 accuracy (on a seeded sample of ``--circuit-tokens`` query tokens when the
  vocabulary is larger; :mod:`probing.studies.circuits`);
* MLP patching grid [layer, i]: the second-half loss change when the MLP output at the
  second copy of token i is replaced by its output at the first copy.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from headprobe.errors import UsageError, opt
from headprobe.heads import head_label
from headprobe.hooks import hook_name, layer_hooks
from headprobe.tokens import token_strings
from probing.studies import circuits
from probing.studies.common import (
    add_model_arguments,
    add_output_arguments,
    capture,
    finish_study,
    format_table,
    logit_rows,
    next_token_loss,
    output_dir,
    required_model,
    run_hooked,
    top_heads,
)
from probing.study_io import LAYER_HEAD, PATTERN, Array, Layout
from probing.thresholds import CIRCUIT_MIN_SCORE

HELP = "induction and previous-token heads on repeated random tokens, and their circuit"
STUDY = "repeated"
MIN_LEN = 8            # shortest repeated segment of the command line by default
MIN_SCORE = CIRCUIT_MIN_SCORE   # both heads' scores for the study to name a circuit
COMPOSITION = ("writer layer", "writer head", "reader layer", "reader head")
CIRCUIT_TOKENS = 8192   # query tokens scored for the K-composition circuit (vocab 4096: all)

TOKENS = Array("tokens", ("sequence", "position"), "int",
               "the input: BOS, random prefix, a random segment, the segment again, random "
               "tokens to the common width")
REPEAT_START = Array("repeat_start", ("sequence",), "int",
                     "position of the first token of the segment's first copy")
REPEAT_LENGTH = Array("repeat_length", ("sequence",), "int", "tokens in the repeated segment")
INDUCTION_SCORE = Array("induction_score", LAYER_HEAD, "float",
                        "mean attention from each second-copy position p to p - length + 1")
PREV_TOKEN_SCORE = Array("prev_token_score", LAYER_HEAD, "float",
                         "mean attention from position p >= 1 to p - 1")
LOGPROB = Array("logprob", ("half",), "float",
                "mean log-probability of the tokens of the first and the second copy after "
                "their first token")
ACCURACY = Array("accuracy", ("half",), "float",
                 "top-1 accuracy on the tokens of the first and the second copy after their "
                 "first token")
POSITION_LOSS = Array("position_loss", ("half", "position within the half"), "float",
                      "mean loss (nats) predicting each copy's i-th token, over the sequences "
                      "whose segment is longer than i")
ABLATION_DROP = Array("ablation_drop", LAYER_HEAD, "float",
                      "second-copy accuracy minus the same with the head's hook_z replaced by "
                      "its mean over the batch (BOS left out)")
PROCESSED, RAW = (f"; on {circuits.WEIGHT_WORDS[w]}" for w in circuits.WEIGHTS)
Q_DEFINITION = ("Frobenius norm of W_OV W_QK over the product of their norms, for the writer's "
                "W_OV = W_V W_O and the reader's W_QK = W_Q W_K^T; NaN unless the writer's "
                "layer is below the reader's")
K_DEFINITION = ("the same as q_composition with the reader's W_QK transposed: its keys read "
                "the writer")
V_DEFINITION = "the same as q_composition with the reader's W_OV: its values read the writer"
Q_COMPOSITION = Array("q_composition", COMPOSITION, "float", Q_DEFINITION + PROCESSED)
K_COMPOSITION = Array("k_composition", COMPOSITION, "float", K_DEFINITION + PROCESSED)
V_COMPOSITION = Array("v_composition", COMPOSITION, "float", V_DEFINITION + PROCESSED)
Q_COMPOSITION_RAW = Array("q_composition_raw", COMPOSITION, "float", Q_DEFINITION + RAW)
K_COMPOSITION_RAW = Array("k_composition_raw", COMPOSITION, "float", K_DEFINITION + RAW)
V_COMPOSITION_RAW = Array("v_composition_raw", COMPOSITION, "float", V_DEFINITION + RAW)
COMPOSITION_BASELINE = Array("composition_baseline", ("mode (Q, K, V)",), "float",
                             "mean composition score of random Gaussian weights of the same "
                             "shapes")
COMPOSITION_BASELINE_SD = Array("composition_baseline_sd", ("mode (Q, K, V)",), "float",
                                "standard deviation of that score over the random draws")
EXAMPLE_TOKENS = Array("example_tokens", ("position",), "str", "text of each token of sequence 0")
EXAMPLE_PATTERN = Array("example_pattern", PATTERN, "float",
                        "attention pattern of the circuit's induction head (the best one above "
                        "layer 0; of one layer, the best one) on sequence 0")
EXAMPLE_PREV_PATTERN = Array("example_prev_pattern", PATTERN, "float",
                             "attention pattern of the circuit's previous-token head (the best "
                             "one below the induction head) on sequence 0")
MLP_PATCH_DELTA = Array("mlp_patch_delta", ("layer", "position within the second half"),
                        "float", "second-copy loss change (nats) after replacing the MLP output "
                        "at the second copy of token i by the first copy's",
                        "when the model has MLPs and the MLP grid is computed")
LAYOUT = Layout(STUDY, (TOKENS, REPEAT_START, REPEAT_LENGTH, INDUCTION_SCORE, PREV_TOKEN_SCORE,
                        LOGPROB, ACCURACY, POSITION_LOSS, ABLATION_DROP, Q_COMPOSITION,
                        K_COMPOSITION, V_COMPOSITION, Q_COMPOSITION_RAW, K_COMPOSITION_RAW,
                        V_COMPOSITION_RAW, COMPOSITION_BASELINE,
                        COMPOSITION_BASELINE_SD, EXAMPLE_TOKENS, EXAMPLE_PATTERN,
                        EXAMPLE_PREV_PATTERN, MLP_PATCH_DELTA))


@dataclass
class Repeats:
    """A batch of repeated random tokens.

    tokens: [batch, width]; start: [batch] position of the first copy's first token;
    length: [batch] tokens in the segment (the second copy starts at start + length).
    """

    tokens: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor

    def copy_positions(self, copy: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions [batch, longest], valid [batch, longest]) of copy 0 or 1, by index."""
        index = torch.arange(int(self.length.max()))[None, :]
        first = (self.start + copy * self.length)[:, None]
        return first + index, index < self.length[:, None]

    def targets(self, copy: int) -> torch.Tensor:
        """[batch, width] bool: the tokens of copy 0 or 1 after its first token."""
        pos = torch.arange(self.tokens.shape[1])[None, :]
        first = (self.start + copy * self.length)[:, None]
        return (pos > first) & (pos < first + self.length[:, None])

    def induction_index(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sequence, destination, source) [n] of every second-copy position and the token
        after the earlier occurrence of its token."""
        pos, valid = self.copy_positions(1)
        rows = torch.arange(len(pos))[:, None].expand_as(pos)[valid]
        dest = pos[valid]
        return rows, dest, dest - self.length[rows] + 1


def repeat_batch(d_vocab: int, seq_len: int, batch: int, seed: int = 0, bos: int = 0,
                 min_len: int | None = None, max_prefix: int = 0,
                 avoid: Sequence[int] = ()) -> Repeats:
    """``batch`` sequences of width ``1 + max_prefix + 2 * seq_len`` (see the module doc).

    Segment lengths are uniform in ``min_len..seq_len`` (default: always ``seq_len``),
    prefixes in ``0..max_prefix``; tokens are drawn from ``0..d_vocab - 1`` without BOS
    and the ids in ``avoid`` (special tokens).
    """
    min_len = seq_len if min_len is None else min_len
    if not 2 <= min_len <= seq_len or max_prefix < 0 or batch < 1:
        raise UsageError(f"need 2 <= {opt('min_len')} <= {opt('seq_len')}, "
                         f"{opt('max_prefix')} >= 0 and {opt('batch')} >= 1")
    skip = {bos, *avoid}
    pool = torch.tensor([t for t in range(d_vocab) if t not in skip])
    width = 1 + max_prefix + 2 * seq_len
    if width - 1 - min_len > len(pool):
        raise UsageError(f"{opt('seq_len', seq_len)} and {opt('max_prefix', max_prefix)} need "
                         f"{width - 1 - min_len} distinct tokens; the vocabulary has "
                         f"{len(pool)}")
    gen = torch.Generator().manual_seed(seed)
    rows, starts, lengths = [], [], []
    for _ in range(batch):
        length = int(torch.randint(min_len, seq_len + 1, (1,), generator=gen))
        prefix = int(torch.randint(0, max_prefix + 1, (1,), generator=gen))
        fresh = pool[torch.randperm(len(pool), generator=gen)[:width - 1 - length]]
        segment = fresh[prefix:prefix + length]
        rows.append(torch.cat([torch.tensor([bos]), fresh[:prefix + length], segment,
                               fresh[prefix + length:]]))
        starts.append(1 + prefix)
        lengths.append(length)
    return Repeats(torch.stack(rows), torch.tensor(starts), torch.tensor(lengths))


def diagonal_score(pattern: torch.Tensor, offset: int, first_dest: int) -> torch.Tensor:
    """Mean attention on one diagonal of the pattern, over destinations >= ``first_dest``.

    pattern: [batch, n_heads, pos, pos] (destination, source); offset: source - destination
    (``-1``: previous token). Returns [n_heads].
    """
    n = pattern.shape[-1]
    dest = torch.arange(max(first_dest, -offset), n)
    return pattern[:, :, dest, dest + offset].mean(dim=(0, 2))


def head_scores(model: Any, rep: Repeats) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Logits and the per-head scores of the batch, reduced inside the pattern hooks.

    Returns (logits [batch, width, d_vocab], {"induction_score": [n_layers, n_heads],
    "prev_token_score": [n_layers, n_heads]}).
    """
    cfg = model.cfg
    rows, dest, src = rep.induction_index()
    induction = torch.zeros(cfg.n_layers, cfg.n_heads)
    prev = torch.zeros(cfg.n_layers, cfg.n_heads)

    def score(pattern: torch.Tensor, hook: Any, layer: int) -> None:
        induction[layer] = pattern[rows, :, dest, src].float().mean(0).cpu()   # [n_heads]
        prev[layer] = diagonal_score(pattern, -1, 1).float().cpu()

    hooks = [(name, partial(score, layer=layer))
             for layer, name in enumerate(layer_hooks("pattern", cfg.n_layers))]
    logits = run_hooked(model, rep.tokens, hooks).cpu()
    return logits, {"induction_score": induction.numpy(), "prev_token_score": prev.numpy()}


def half_metrics(logits: torch.Tensor, rep: Repeats, seq_len: int) -> dict[str, np.ndarray]:
    """Per-copy log-probability and accuracy, and the loss at each index of each copy.

    Returns {"logprob": [2], "accuracy": [2], "position_loss": [2, seq_len]}; index i of
    ``position_loss`` is averaged over the sequences whose segment is longer than i.
    """
    loss = next_token_loss(logits, rep.tokens)                 # [batch, width - 1]
    hit = (logits[:, :-1].argmax(-1) == rep.tokens[:, 1:]).float()
    out: dict[str, list[Any]] = {"logprob": [], "accuracy": [], "position_loss": []}
    for copy in (0, 1):
        mask = rep.targets(copy)[:, 1:]
        out["logprob"].append(-loss[mask].mean().item())
        out["accuracy"].append(hit[mask].mean().item())
        pos, valid = rep.copy_positions(copy)
        at = loss.gather(1, (pos - 1).clamp(max=loss.shape[1] - 1))   # [batch, longest]
        per_index = np.full(seq_len, np.nan)
        sums, counts = (at * valid).sum(0), valid.sum(0)
        per_index[:len(sums)] = np.where(counts > 0, sums / counts.clamp(min=1), np.nan)
        out["position_loss"].append(per_index)
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def second_half_accuracy(logits: torch.Tensor, rep: Repeats) -> float:
    """Top-1 accuracy on the second copy's tokens after its first."""
    hit = logits[:, :-1].argmax(-1).cpu() == rep.tokens[:, 1:]
    return hit[rep.targets(1)[:, 1:]].float().mean().item()


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean loss of each row over ``mask``: logits [rows, pos, d_vocab] predict targets
    [rows, pos]; mask [rows, pos] bool. Returns [rows]."""
    logprobs = torch.log_softmax(logits.float().cpu(), dim=-1)
    loss = -logprobs.gather(-1, targets[..., None])[..., 0]
    return (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def has_mlps(model: Any) -> bool:
    return not bool(getattr(model.cfg, "attn_only", False))


def can_resume(model: Any) -> bool:
    """Whether a block runs on a residual stream alone (positions live in the stream)."""
    return getattr(model.cfg, "positional_embedding_type", None) == "standard"


def run_from(model: Any, resid: torch.Tensor, start: int, positions: slice) -> torch.Tensor:
    """Logits [rows, len(positions), d_vocab] of blocks ``start..`` run on the residual
    stream entering block ``start``, resid [rows, pos, d_model]."""
    with torch.inference_mode():
        for block in model.blocks[start:]:
            resid = block(resid)
            if isinstance(resid, tuple):
                resid = resid[0]
        return model.unembed(model.ln_final(resid[:, positions]))


@dataclass
class MlpCells:
    """One pass of the MLP grid: cells ``index`` [rows] of sequences ``seq`` [rows], the
    second-copy position ``dest`` [rows] patched with the first copy's ``src`` [rows]."""

    index: torch.Tensor
    seq: torch.Tensor
    dest: torch.Tensor
    src: torch.Tensor


def mlp_cells(rep: Repeats, per_pass: int) -> list[MlpCells]:
    """Every (index i, sequence) pair with a second-copy token i, ``per_pass`` at a time."""
    first, valid = rep.copy_positions(0)                     # [batch, longest]
    seq, index = valid.nonzero(as_tuple=True)
    order = torch.argsort(index * len(first) + seq)          # by index, then sequence
    seq, index = seq[order], index[order]
    src = first[seq, index]
    dest = src + rep.length[seq]
    return [MlpCells(index[i:i + per_pass], seq[i:i + per_pass], dest[i:i + per_pass],
                     src[i:i + per_pass]) for i in range(0, len(seq), per_pass)]


def mlp_patching_grid(model: Any, rep: Repeats, max_rows: int = 256) -> np.ndarray:
    """Second-copy loss change when patching one MLP output from the first copy.

    Cell (layer, i): at the second copy of token i the output of MLP ``layer`` is replaced
    by its output at the first copy; the value is the mean over sequences with a token i
    of (patched - clean) mean second-copy loss. Up to ``max_rows`` patched sequences run
    per pass (fewer when their logits would outgrow ``FORWARD_BYTES``), each from the clean
    residual stream after block ``layer`` with the MLP output swapped, so only the blocks
    above it run. Returns [n_layers, longest segment].
    """
    n_layers, tokens = model.cfg.n_layers, rep.tokens
    max_rows = min(max_rows, logit_rows(model, tokens.shape[1]))
    mlp, post = layer_hooks("mlp_out", n_layers), layer_hooks("resid_post", n_layers)
    resume = can_resume(model)
    logits, clean = capture(model, tokens, mlp + post if resume else mlp)
    lo = int((rep.start + rep.length).min())    # predictions from here on may be scored
    scored, mask, targets = slice(lo, -1), rep.targets(1)[:, lo + 1:], tokens[:, lo + 1:]
    base = masked_loss(logits[:, scored], targets, mask)
    total = np.zeros((n_layers, int(rep.length.max())))
    count = np.zeros_like(total)
    for layer in range(n_layers):
        for cells in mlp_cells(rep, max_rows):
            rows = torch.arange(len(cells.seq))
            swap = clean[mlp[layer]][cells.seq, cells.src]             # [rows, d_model]
            if resume:
                resid = clean[post[layer]][cells.seq]                  # [rows, pos, d_model]
                resid[rows, cells.dest] += swap - clean[mlp[layer]][cells.seq, cells.dest]
                patched = run_from(model, resid, layer + 1, scored)
            else:
                def patch(act: torch.Tensor, hook: Any, dest=cells.dest,
                          swap=swap) -> torch.Tensor:
                    act[torch.arange(len(dest)), dest] = swap.to(act.dtype)
                    return act

                patched = run_hooked(model, tokens[cells.seq], [(mlp[layer], patch)])[:, scored]
            delta = masked_loss(patched, targets[cells.seq], mask[cells.seq]) - base[cells.seq]
            np.add.at(total[layer], cells.index.numpy(), delta.numpy())
            np.add.at(count[layer], cells.index.numpy(), 1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def best_pair(induction: np.ndarray, prev: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """(previous-token head, induction head): the best induction head above layer 0 and the
    best previous-token head in an earlier layer."""
    masked = induction.copy()
    masked[0] = -np.inf
    ind = top_heads(masked, 1)[0]
    prev_head = top_heads(prev[:ind[0]], 1)[0]
    return prev_head, ind


def random_other_head(head: tuple[int, int], n_heads: int, seed: int) -> tuple[int, int] | None:
    """A head of ``head``'s layer other than it, drawn with ``seed`` (None if there is none)."""
    others = [h for h in range(n_heads) if h != head[1]]
    if not others:
        return None
    return head[0], int(np.random.default_rng(seed).choice(others))


def composition_arrays(model: Any, raw_model: Any, seed: int) -> dict[str, np.ndarray]:
    """Q/K/V-composition arrays [L, H, L, H] on the processed weights of ``model`` and on the
    raw weights of ``raw_model`` (suffix ``_raw``), and the random-weights baseline [3]."""
    models = {"processed": model, "raw": raw_model}
    arrays = {}
    for weights, suffix in circuits.WEIGHTS.items():
        scores = circuits.composition_scores(models[weights])
        arrays.update({f"{m.lower()}_composition{suffix}": scores[m] for m in circuits.MODES})
    cfg = model.cfg
    baseline = circuits.random_composition_baseline(int(cfg.d_model), int(cfg.d_head),
                                                    seed=seed)
    return {**arrays,
            "composition_baseline": np.array([baseline[m][0] for m in circuits.MODES]),
            "composition_baseline_sd": np.array([baseline[m][1] for m in circuits.MODES])}


def composition_check(arrays: dict[str, np.ndarray], prev_head: tuple[int, int],
                      ind_head: tuple[int, int], weights: str = "processed") -> dict[str, Any]:
    """The strongest K-composition pair on ``weights`` (a key of circuits.WEIGHTS) against
    the pair found by attention scores."""
    k = arrays["k_composition" + circuits.WEIGHTS[weights]]
    writer, reader = circuits.strongest_pair(k)
    into = k[:ind_head[0], :, ind_head[0], ind_head[1]]              # writers into the keys
    best_writer = top_heads(into, 1)[0]
    return {"weights": weights,
            "strongest_pair": [list(writer), list(reader)],
            "strongest_score": float(k[(*writer, *reader)]),
            "pair_score": float(k[(*prev_head, *ind_head)]),
            "baseline": float(arrays["composition_baseline"][1]),
            "baseline_sd": float(arrays["composition_baseline_sd"][1]),
            "best_writer_into_induction_keys": list(best_writer),
            "agrees": (writer, reader) == (prev_head, ind_head)}


def circuit_checks(model: Any, rep: Repeats, prev_head: tuple[int, int],
                   ind_head: tuple[int, int], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Mean ablation of every head and path patching into the induction head's keys.

    Returns (ablation drops [n_layers, n_heads], the causal numbers of the pair).
    """
    metric = partial(second_half_accuracy, rep=rep)
    cache = circuits.clean_cache(model, rep.tokens)
    means = circuits.mean_z(cache, model.cfg.n_layers)
    drops = circuits.ablation_drops(model, rep.tokens, metric, means)
    other = random_other_head(prev_head, model.cfg.n_heads, seed)
    key_drop, note = circuits.key_path_drop(model, rep.tokens, metric, cache, means,
                                            prev_head, ind_head)
    return drops, {
        "ablation_drop": float(drops[prev_head]),
        "random_head": None if other is None else list(other),
        "random_drop": None if other is None else float(drops[other]),
        "key_path_drop": key_drop, "key_path_note": note}


def circuit_study(model: Any, rep: Repeats, scores: dict[str, np.ndarray], seed: int,
                  min_score: float, circuit_tokens: int = CIRCUIT_TOKENS,
                  raw_model: Any | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays (ablation drops, composition) and meta["circuit"] of the induction pair; the
    K-composition circuit's accuracy on at most ``circuit_tokens`` query tokens (0: all).
    raw_model: the checkpoint without weight processing (default: booted again,
    :func:`circuits.raw_weights_model`)."""
    induction, prev = scores["induction_score"], scores["prev_token_score"]
    raw_model = circuits.raw_weights_model(model) if raw_model is None else raw_model
    arrays = composition_arrays(model, raw_model, seed)
    if model.cfg.n_layers < 2:
        arrays["ablation_drop"] = np.full(induction.shape, np.nan)
        return arrays, {"found": False, "reason": "the model has one layer"}
    prev_head, ind_head = best_pair(induction, prev)
    drops, causal = circuit_checks(model, rep, prev_head, ind_head, seed)
    arrays["ablation_drop"] = drops
    d_vocab = int(model.cfg.d_vocab)
    rows = circuits.circuit_rows(d_vocab, circuit_tokens, seed)
    top1 = circuits.top1_accuracy(circuits.k_composition_circuit(model, prev_head, ind_head),
                                  rows=rows)
    return arrays, {
        "found": bool(prev[prev_head] >= min_score and induction[ind_head] >= min_score),
        "min_score": min_score, "prev_token_head": list(prev_head),
        "induction_head": list(ind_head), "prev_token_score": float(prev[prev_head]),
        "induction_score": float(induction[ind_head]), **causal,
        **{"k_composition" + suffix: composition_check(arrays, prev_head, ind_head, weights)
           for weights, suffix in circuits.WEIGHTS.items()},
        "k_circuit_top1": top1, "chance": 1.0 / d_vocab,
        "query_tokens": d_vocab if rows is None else len(rows)}


def check_sizes(model: Any, seq_len: int, batch: int, min_len: int | None,
                max_prefix: int) -> None:
    """UsageError for impossible sizes or inputs longer than the model's context."""
    if seq_len < 2 or batch < 1:
        raise UsageError(f"{opt('seq_len')} must be >= 2 and {opt('batch')} >= 1")
    if min_len is not None and min_len > seq_len:
        raise UsageError(f"{opt('min_len')} {min_len} is more than {opt('seq_len')} {seq_len}, "
                         "the longest segment")
    width = 1 + max_prefix + 2 * seq_len
    if width > model.cfg.n_ctx:
        raise UsageError(f"1 + {opt('max_prefix')} + 2 x {opt('seq_len')} = {width} exceeds the "
                         f"model's context of {model.cfg.n_ctx} tokens")


def example_arrays(model: Any, rep: Repeats, heads: dict[str, tuple[int, int]]
                   ) -> dict[str, np.ndarray]:
    """Tokens of sequence 0 and the patterns of ``heads`` (array name -> head) on it."""
    names = sorted({hook_name("pattern", layer) for layer, _ in heads.values()})
    _, acts = capture(model, rep.tokens[:1], names)
    out = {"example_tokens": np.array(token_strings(model.tokenizer, rep.tokens[0].tolist()))}
    for array, (layer, head) in heads.items():
        out[array] = acts[hook_name("pattern", layer)][0, head].float().cpu().numpy()
    return out


def repeated_study(model: Any, seq_len: int = 25, batch: int = 30, seed: int = 0,
                   mlp_grid: bool = True, min_len: int | None = 8, max_prefix: int = 10,
                   min_score: float = MIN_SCORE, circuit_tokens: int = CIRCUIT_TOKENS,
                   raw_model: Any | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run the whole study; returns (arrays, meta, report).

    Segments of ``min_len..seq_len`` tokens (None: always ``seq_len``) after ``0..max_prefix``
    random tokens; the defaults are the command line's. The K-composition circuit's
    accuracy is measured on at most ``circuit_tokens`` query tokens (0: all). Composition
    is computed on ``model``'s processed weights and on ``raw_model``'s (the same checkpoint
    booted without weight processing; default: :func:`circuits.raw_weights_model`).

    arrays are named and shaped as declared in LAYOUT; meta["circuit"] holds the
    induction circuit (heads, scores, ablation and path-patching drops, composition).
    """
    cfg = model.cfg
    check_sizes(model, seq_len, batch, min_len, max_prefix)
    if not 0 <= min_score <= 1 or circuit_tokens < 0:
        raise UsageError(f"{opt('min_score')} must be in [0, 1] (scores are attention "
                         f"weights) and {opt('circuit_tokens')} at least 0")
    tok = model.tokenizer
    bos = tok.bos_token_id if tok is not None else None
    size = int(cfg.d_vocab) if tok is None else min(int(cfg.d_vocab), len(tok))
    rep = repeat_batch(size, seq_len, batch, seed, 0 if bos is None else int(bos), min_len,
                       max_prefix, avoid=getattr(tok, "all_special_ids", None) or ())
    logits, scores = head_scores(model, rep)
    halves = half_metrics(logits, rep, seq_len)
    more, circuit = circuit_study(model, rep, scores, seed, min_score, circuit_tokens,
                                  raw_model)
    induction, prev = scores["induction_score"], scores["prev_token_score"]
    examples = {"example_pattern": circuit.get("induction_head", top_heads(induction, 1)[0]),
                "example_prev_pattern": circuit.get("prev_token_head", top_heads(prev, 1)[0])}
    arrays: dict[str, Any] = {
        "tokens": rep.tokens.numpy(), "repeat_start": rep.start.numpy(),
        "repeat_length": rep.length.numpy(), **scores, **halves, **more,
        **example_arrays(model, rep, {k: tuple(v) for k, v in examples.items()})}
    grid_note = "model has no MLPs"
    if mlp_grid and has_mlps(model):
        arrays["mlp_patch_delta"] = mlp_patching_grid(model, rep)
        grid_note = "computed"
    elif not mlp_grid:
        grid_note = "skipped (--no-mlp-grid)"
    meta = {
        "study": STUDY, "seq_len": seq_len, "min_len": seq_len if min_len is None else min_len,
        "max_prefix": max_prefix, "batch": batch, "seed": seed, "d_vocab": int(cfg.d_vocab),
        "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads),
        "logprob_first": float(halves["logprob"][0]), "logprob_second": float(halves["logprob"][1]),
        "accuracy_first": float(halves["accuracy"][0]),
        "accuracy_second": float(halves["accuracy"][1]),
        "best_induction_head": list(top_heads(induction, 1)[0]),
        "best_prev_token_head": list(top_heads(prev, 1)[0]),
        "example_heads": {k: list(v) for k, v in examples.items()}, "circuit": circuit,
        "ablation": "mean", "mlp_patch_grid": grid_note,
    }
    return arrays, meta, report(meta, induction, prev)


def circuit_line(meta: dict[str, Any]) -> str:
    """The one-line verdict: ``circuit: previous-token L0H1 (0.97) -> induction L1H3 ...``."""
    c, acc = meta["circuit"], meta["accuracy_second"]
    if "prev_token_head" not in c:
        return f"circuit: none ({c['reason']}); second-half accuracy {acc:.2f}"
    prev, ind = head_label(*c["prev_token_head"]), head_label(*c["induction_head"])
    if c["random_head"] is None:
        random = "no other head in its layer"
    else:
        random = f"random head {head_label(*c['random_head'])} {c['random_drop']:.2f}"
    causal = f"ablation drop {c['ablation_drop']:.2f} ({random})"
    if c["found"]:
        return (f"circuit: previous-token {prev} ({c['prev_token_score']:.2f}) -> induction "
                f"{ind} ({c['induction_score']:.2f}); second-half accuracy {acc:.2f}; {causal}")
    parts = []
    for role, head, score in (("induction head above layer 0", ind, c["induction_score"]),
                              ("previous-token head before it", prev, c["prev_token_score"])):
        parts.append(f"no {role} reaches {c['min_score']:.2f} (best {head} {score:.2f})"
                     if score < c["min_score"] else f"{role} {head} ({score:.2f})")
    return (f"circuit: none: {' and '.join(parts)}; second-half accuracy {acc:.2f}; "
            f"{prev} {causal}")


def composition_line(k: dict[str, Any], pair: str, induction_head: list[int]) -> str:
    """One report line on the strongest K-composition pair of one kind of weights."""
    strongest = " -> ".join(head_label(*h) for h in k["strongest_pair"])
    verdict = ("the pair found by attention scores" if k["agrees"] else
               f"not the pair found by attention scores ({pair}: {k['pair_score']:.3f})")
    return (f"K-composition from {circuits.WEIGHT_WORDS[k.get('weights', 'processed')]}: "
            f"strongest pair "
            f"{strongest} ({k['strongest_score']:.3f}; random weights {k['baseline']:.3f} +- "
            f"{k['baseline_sd']:.3f}): {verdict}; strongest writer into "
            f"{head_label(*induction_head)}'s keys: "
            f"{head_label(*k['best_writer_into_induction_keys'])}")


def circuit_details(meta: dict[str, Any]) -> list[str]:
    """Report lines on K-composition and path patching of the circuit's pair."""
    c = meta["circuit"]
    if "prev_token_head" not in c:
        return []
    pair = f"{head_label(*c['prev_token_head'])} -> {head_label(*c['induction_head'])}"
    path = (f"accuracy drop {c['key_path_drop']:.2f} (whole head {c['ablation_drop']:.2f})"
            if c["key_path_drop"] is not None else f"not run: {c['key_path_note']}")
    checks = [c["k_composition" + suffix] for suffix in circuits.WEIGHTS.values()
              if "k_composition" + suffix in c]
    return [
        *(composition_line(k, pair, c["induction_head"]) for k in checks),
        f"Path patching {pair}, keys only (mean of the writer's output): {path}",
        f"K-composition circuit {pair}: top-1 accuracy over the vocabulary "
        f"{c['k_circuit_top1']:.4f} (chance {c['chance']:.2g}; {c['query_tokens']} query "
        f"tokens)"]


def report(meta: dict[str, Any], induction: np.ndarray, prev: np.ndarray) -> str:
    lens = (f"{meta['min_len']}-{meta['seq_len']}" if meta["min_len"] < meta["seq_len"]
            else str(meta["seq_len"]))
    lines = [
        circuit_line(meta),
        f"Repeated random tokens: BOS + 0-{meta['max_prefix']} random tokens + a segment of "
        f"{lens} random tokens, repeated; {meta['batch']} sequences (seed {meta['seed']}).",
        f"mean log-prob  first copy {meta['logprob_first']:.3f}   "
        f"second copy {meta['logprob_second']:.3f}",
        f"top-1 accuracy first copy {meta['accuracy_first']:.3f}   "
        f"second copy {meta['accuracy_second']:.3f}", "",
        "Top induction heads (attention to the token after the earlier occurrence):",
        format_table(["head", "induction", "prev-token"],
                     [(head_label(*h), induction[h], prev[h]) for h in top_heads(induction, 5)]),
        "", "Top previous-token heads:",
        format_table(["head", "prev-token", "induction"],
                     [(head_label(*h), prev[h], induction[h]) for h in top_heads(prev, 5)]),
        "", *circuit_details(meta), f"MLP patching grid: {meta['mlp_patch_grid']}"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, several=True)
    parser.add_argument("--seq-len", type=int, default=25,
                        help="longest repeated segment (default 25)")
    parser.add_argument("--min-len", type=int, default=None,
                        help=f"shortest repeated segment (default {MIN_LEN}, or --seq-len when "
                             "that is shorter; --seq-len: fixed length)")
    parser.add_argument("--max-prefix", type=int, default=10,
                        help="most random tokens before the segment (default 10)")
    parser.add_argument("--batch", type=int, default=30, help="number of sequences")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    parser.add_argument("--min-score", type=float, default=MIN_SCORE,
                        help="score both heads need for a circuit to be named "
                             f"(default {MIN_SCORE})")
    parser.add_argument("--no-mlp-grid", action="store_true",
                        help="skip the MLP patching grid (the slowest part)")
    parser.add_argument("--circuit-tokens", type=int, default=CIRCUIT_TOKENS,
                        help="query tokens (a seeded sample) on which the K-composition "
                             f"circuit's accuracy is measured; 0 = the whole vocabulary "
                             f"(default {CIRCUIT_TOKENS})")
    add_output_arguments(parser)


def study_of(args: argparse.Namespace, name: str, model: Any
             ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(arrays, meta, report) of the study of the command line ``args`` on ``model``."""
    arrays, meta, text = repeated_study(model, args.seq_len, args.batch, args.seed,
                                        mlp_grid=not args.no_mlp_grid,
                                        min_len=(min(MIN_LEN, args.seq_len)
                                                 if args.min_len is None else args.min_len),
                                        max_prefix=args.max_prefix, min_score=args.min_score,
                                        circuit_tokens=args.circuit_tokens)
    meta["model"] = name
    return arrays, meta, text


def run(args: argparse.Namespace) -> int:
    models = args.model or []
    if len(models) > 1:
        from probing.studies.repeated_kofn import run_models

        return run_models(args, models)
    args.model = models[0] if models else None
    out = output_dir(args, STUDY)
    name, model = required_model(args)
    arrays, meta, text = study_of(args, name, model)
    return finish_study(out, LAYOUT, arrays, meta, text, args.overwrite)
