"""Repeated random tokens: induction heads, previous-token heads, MLP patching, K-composition.

The input is BOS + ``seq_len`` random tokens + the same tokens again. A model with an
induction circuit predicts the second half well although the first half is unpredictable.

* per-half mean log-probability and top-1 accuracy, per-position loss of both halves;
* induction score per head: mean attention from each second-half token to the token just
  after its first occurrence (the ``1 - seq_len`` diagonal of the pattern);
* previous-token score per head: mean attention on the ``-1`` diagonal;
* MLP patching grid [layer, position]: the second-half loss change when one second-half
  MLP output is replaced by the first half's at the same token;
* the K-composition circuit of the best previous-token -> induction head pair,
  ``W_E W_Q (W_E W_V W_O W_K)^T`` as a ``FactoredMatrix`` [d_vocab, d_vocab], with its top-1
  accuracy (fraction of query tokens whose best key token is themselves; on a seeded
  sample of ``--circuit-tokens`` query tokens when the vocabulary is larger).

The random halves are drawn without repetition (and without the BOS token), so every
second-half token has exactly one earlier occurrence.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import numpy as np
import torch

from headprobe.errors import UsageError, opt
from headprobe.heads import head_label, kv_heads
from headprobe.hooks import hook_name, layer_hooks
from headprobe.tokens import token_strings
from probing.studies.common import (
    add_model_arguments,
    add_output_arguments,
    capture,
    finish_study,
    format_table,
    output_dir,
    required_model,
    run_hooked,
    top_heads,
)
from probing.study_io import LAYER_HEAD, PATTERN, Array, Layout

HELP = "induction and previous-token heads on repeated random tokens"
STUDY = "repeated"
CIRCUIT_TOKENS = 8192   # query tokens scored for the K-composition circuit (vocab 4096: all)

TOKENS = Array("tokens", ("sequence", "position"), "int",
               "the input: BOS + seq_len distinct random tokens + the same tokens again")
INDUCTION_SCORE = Array("induction_score", LAYER_HEAD, "float",
                        "mean attention from second-half position p to p - seq_len + 1")
PREV_TOKEN_SCORE = Array("prev_token_score", LAYER_HEAD, "float",
                         "mean attention from position p >= 1 to p - 1")
LOGPROB = Array("logprob", ("half",), "float",
                "mean log-probability of the tokens of the first and the second half")
ACCURACY = Array("accuracy", ("half",), "float",
                 "top-1 accuracy on the tokens of the first and the second half")
POSITION_LOSS = Array("position_loss", ("half", "position within the half"), "float",
                      "mean loss (nats) predicting the half's i-th token")
EXAMPLE_TOKENS = Array("example_tokens", ("position",), "str", "text of each token of sequence 0")
EXAMPLE_PATTERN = Array("example_pattern", PATTERN, "float",
                        "attention pattern of the best induction head on sequence 0")
MLP_PATCH_DELTA = Array("mlp_patch_delta", ("layer", "position within the second half"),
                        "float", "second-half loss change (nats) after replacing the MLP output "
                        "at the second copy of token i by the first copy's",
                        "when the model has MLPs and the MLP grid is computed")
LAYOUT = Layout(STUDY, (TOKENS, INDUCTION_SCORE, PREV_TOKEN_SCORE, LOGPROB, ACCURACY,
                        POSITION_LOSS, EXAMPLE_TOKENS, EXAMPLE_PATTERN, MLP_PATCH_DELTA))


def repeated_tokens(d_vocab: int, seq_len: int, batch: int, seed: int = 0,
                    bos: int = 0) -> torch.Tensor:
    """BOS + ``seq_len`` distinct random tokens + the same again: [batch, 1 + 2 * seq_len]."""
    pool = torch.tensor([t for t in range(d_vocab) if t != bos])
    if seq_len > len(pool):
        raise UsageError(f"{opt('seq_len', seq_len)} exceeds the {len(pool)} usable vocabulary "
                         "tokens")
    gen = torch.Generator().manual_seed(seed)
    half = torch.stack([pool[torch.randperm(len(pool), generator=gen)[:seq_len]]
                        for _ in range(batch)])
    first = torch.full((batch, 1), bos, dtype=torch.long)
    return torch.cat([first, half, half], dim=1)


def diagonal_score(pattern: torch.Tensor, offset: int, first_dest: int) -> torch.Tensor:
    """Mean attention on one diagonal of the pattern, over destinations >= ``first_dest``.

    pattern: [batch, n_heads, pos, pos] (destination, source); offset: source - destination
    (``-1``: previous token). Returns [n_heads].
    """
    n = pattern.shape[-1]
    dest = torch.arange(max(first_dest, -offset), n)
    return pattern[:, :, dest, dest + offset].mean(dim=(0, 2))


def head_scores(model: Any, tokens: torch.Tensor, seq_len: int
                ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Logits and the per-head scores of the repeated-token batch.

    Returns (logits [batch, pos, d_vocab], {"induction_score": [n_layers, n_heads],
    "prev_token_score": [n_layers, n_heads]}).
    """
    n_layers = model.cfg.n_layers
    names = [hook_name("pattern", layer) for layer in range(n_layers)]
    logits, acts = capture(model, tokens, names)
    induction = torch.stack([diagonal_score(acts[n], 1 - seq_len, seq_len + 1) for n in names])
    prev = torch.stack([diagonal_score(acts[n], -1, 1) for n in names])
    return logits, {"induction_score": induction.float().numpy(),
                    "prev_token_score": prev.float().numpy()}


def half_metrics(logits: torch.Tensor, tokens: torch.Tensor, seq_len: int) -> dict[str, Any]:
    """Per-half log-probability, accuracy and per-position loss.

    Position i of a half is the prediction of that half's i-th token: the first half's
    from positions 0..seq_len-1, the second half's from positions seq_len..2*seq_len-1.
    """
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = tokens[:, 1:]
    lp = logprobs.gather(-1, target[..., None])[..., 0]          # [batch, 2 * seq_len]
    hit = (logprobs.argmax(-1) == target).float()
    halves = (slice(0, seq_len), slice(seq_len, 2 * seq_len))
    return {
        "logprob": np.array([lp[:, h].mean().item() for h in halves]),
        "accuracy": np.array([hit[:, h].mean().item() for h in halves]),
        "position_loss": np.stack([(-lp[:, h]).mean(0).numpy() for h in halves]),
    }


def second_half_loss(logits: torch.Tensor, tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Mean second-half loss of each sequence: [batch]."""
    return target_loss(logits[:, seq_len:-1], tokens[:, seq_len + 1:])


def target_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss of predicting ``targets`` [batch, pos] from ``logits`` [batch, pos, d_vocab]:
    [batch]."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return -logprobs.gather(-1, targets[..., None])[..., 0].mean(-1)


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


def mlp_patching_grid(model: Any, tokens: torch.Tensor, seq_len: int,
                      max_rows: int = 256) -> np.ndarray:
    """Second-half loss change when patching one MLP output from the first half.

    Cell (layer, i): at position ``seq_len + 1 + i`` (the second copy of token i) the output
    of MLP ``layer`` is replaced by its output at position ``1 + i`` (the first copy); the
    value is the mean second-half loss minus the unpatched loss. All positions of one layer
    run batched (rows = positions x sequences, at most ``max_rows`` per forward pass), each
    starting from the clean residual stream after block ``layer`` with the MLP output
    swapped, so only the blocks above it run. Returns [n_layers, seq_len].
    """
    n_layers, batch = model.cfg.n_layers, tokens.shape[0]
    mlp = layer_hooks("mlp_out", n_layers)
    post = layer_hooks("resid_post", n_layers)
    resume = can_resume(model)
    clean: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook: Any, name: str) -> None:
        clean[name] = act.detach().clone()

    names = mlp + post if resume else mlp
    logits = run_hooked(model, tokens, [(n, partial(keep, name=n)) for n in names])
    base = second_half_loss(logits, tokens, seq_len).mean().item()
    scored = slice(seq_len, 2 * seq_len)
    per_chunk = max(1, max_rows // batch)
    grid = np.zeros((n_layers, seq_len))
    for layer in range(n_layers):
        for start in range(0, seq_len, per_chunk):
            cells = torch.arange(start, min(seq_len, start + per_chunk))
            dest = (seq_len + 1 + cells).repeat_interleave(batch)     # [rows]
            seq = torch.arange(batch).repeat(len(cells))               # [rows]
            rows = torch.arange(len(seq))
            swap = clean[mlp[layer]][seq, dest - seq_len]              # [rows, d_model]
            if resume:
                resid = clean[post[layer]][seq]                        # [rows, pos, d_model]
                resid[rows, dest] += swap - clean[mlp[layer]][seq, dest]
                patched = run_from(model, resid, layer + 1, scored)
            else:
                def patch(act: torch.Tensor, hook: Any, rows=rows, dest=dest,
                          swap=swap) -> torch.Tensor:
                    act[rows, dest] = swap.to(act.dtype)
                    return act

                patched = run_hooked(model, tokens[seq], [(mlp[layer], patch)])[:, scored]
            loss = target_loss(patched, tokens[seq, seq_len + 1:])
            grid[layer, cells.numpy()] = loss.view(len(cells), batch).mean(1).numpy() - base
    return grid


def best_pair(induction: np.ndarray, prev: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """(previous-token head, induction head): the best induction head above layer 0 and the
    best previous-token head in an earlier layer."""
    masked = induction.copy()
    masked[0] = -np.inf
    ind = top_heads(masked, 1)[0]
    prev_head = top_heads(prev[:ind[0]], 1)[0]
    return prev_head, ind


def k_composition_circuit(model: Any, prev_head: tuple[int, int],
                          ind_head: tuple[int, int]) -> Any:
    """``W_E W_Q (W_E W_V W_O W_K)^T`` as a FactoredMatrix [d_vocab, d_vocab].

    Rows are query tokens (the induction head's query side), columns key tokens seen
    through the previous-token head's output (positional embeddings, and the rotary
    embedding of rotary models, left out). Under grouped-query attention W_K and W_V are
    those of the key/value head each query head reads.
    """
    from transformer_lens import FactoredMatrix

    (lp, hp), (li, hi) = prev_head, ind_head
    kv = kv_heads(int(model.cfg.n_heads), int(getattr(model.cfg, "n_key_value_heads", None)
                                              or model.cfg.n_heads))   # W_K, W_V per kv head
    with torch.no_grad():
        w_e = model.W_E.detach().float()
        query = w_e @ model.W_Q[li, hi].detach().float()                  # [d_vocab, d_head]
        key = (w_e @ model.W_V[lp, kv[hp]].detach().float()
               @ model.W_O[lp, hp].detach().float()
               @ model.W_K[li, kv[hi]].detach().float())                   # [d_vocab, d_head]
    return FactoredMatrix(query, key.T)


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


def repeated_study(model: Any, seq_len: int = 50, batch: int = 30, seed: int = 0,
                   mlp_grid: bool = True, circuit_tokens: int = CIRCUIT_TOKENS
                   ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run the whole study; returns (arrays, meta, report).

    arrays are named and shaped as declared in LAYOUT: the input [batch, 1 + 2 * seq_len],
    per-head scores [n_layers, n_heads], per-half metrics [2] and [2, seq_len], and with
    MLPs (and ``mlp_grid``) the patching grid [n_layers, seq_len]. The circuit's top-1
    accuracy is measured on at most ``circuit_tokens`` query tokens (0: all).
    """
    cfg = model.cfg
    if seq_len < 2 or batch < 1:
        raise UsageError(f"{opt('seq_len')} must be >= 2 and {opt('batch')} >= 1")
    if 1 + 2 * seq_len > cfg.n_ctx:
        raise UsageError(f"1 + 2 x {opt('seq_len')} = {1 + 2 * seq_len} exceeds the model's "
                         f"context of {cfg.n_ctx} tokens")
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    tokens = repeated_tokens(cfg.d_vocab, seq_len, batch, seed, 0 if bos is None else int(bos))
    logits, scores = head_scores(model, tokens, seq_len)
    halves = half_metrics(logits, tokens, seq_len)
    induction, prev = scores["induction_score"], scores["prev_token_score"]
    arrays: dict[str, Any] = {
        "tokens": tokens.numpy(), **scores, **halves,
        "example_tokens": np.array(token_strings(model.tokenizer, tokens[0].tolist())),
    }
    ind = top_heads(induction, 1)[0]
    _, acts = capture(model, tokens[:1], [hook_name("pattern", ind[0])])
    arrays["example_pattern"] = acts[hook_name("pattern", ind[0])][0, ind[1]].float().numpy()
    grid_note = "model has no MLPs"
    if mlp_grid and has_mlps(model):
        arrays["mlp_patch_delta"] = mlp_patching_grid(model, tokens, seq_len)
        grid_note = "computed"
    elif not mlp_grid:
        grid_note = "skipped (--no-mlp-grid)"
    circuit: dict[str, Any] = {}
    if cfg.n_layers >= 2:
        prev_head, ind_head = best_pair(induction, prev)
        rows = circuit_rows(int(cfg.d_vocab), circuit_tokens, seed)
        accuracy = top1_accuracy(k_composition_circuit(model, prev_head, ind_head), rows=rows)
        circuit = {"prev_token_head": list(prev_head), "induction_head": list(ind_head),
                   "top1_accuracy": accuracy, "chance": 1.0 / cfg.d_vocab,
                   "query_tokens": int(cfg.d_vocab) if rows is None else len(rows)}
    meta = {
        "study": STUDY, "seq_len": seq_len, "batch": batch, "seed": seed,
        "d_vocab": int(cfg.d_vocab), "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads),
        "logprob_first": float(halves["logprob"][0]), "logprob_second": float(halves["logprob"][1]),
        "accuracy_first": float(halves["accuracy"][0]),
        "accuracy_second": float(halves["accuracy"][1]),
        "best_induction_head": list(ind), "best_prev_token_head": list(top_heads(prev, 1)[0]),
        "k_composition": circuit, "mlp_patch_grid": grid_note,
    }
    return arrays, meta, report(meta, induction, prev)


def report(meta: dict[str, Any], induction: np.ndarray, prev: np.ndarray) -> str:
    lines = [
        f"Repeated random tokens: BOS + {meta['seq_len']} random tokens, repeated; "
        f"{meta['batch']} sequences (seed {meta['seed']}).",
        f"mean log-prob  first half {meta['logprob_first']:.3f}   "
        f"second half {meta['logprob_second']:.3f}",
        f"top-1 accuracy first half {meta['accuracy_first']:.3f}   "
        f"second half {meta['accuracy_second']:.3f}", "",
        "Top induction heads (mean attention on the seq_len - 1 offset diagonal):",
        format_table(["head", "induction", "prev-token"],
                     [(head_label(*h), induction[h], prev[h]) for h in top_heads(induction, 5)]),
        "", "Top previous-token heads:",
        format_table(["head", "prev-token", "induction"],
                     [(head_label(*h), prev[h], induction[h]) for h in top_heads(prev, 5)]),
    ]
    k = meta["k_composition"]
    if k:
        lines += ["", f"K-composition circuit {head_label(*k['prev_token_head'])} -> "
                      f"{head_label(*k['induction_head'])}: top-1 accuracy over the vocabulary "
                      f"{k['top1_accuracy']:.4f} (chance {k['chance']:.2g}; "
                      f"{k.get('query_tokens', '?')} query tokens)"]
    lines += [f"MLP patching grid: {meta['mlp_patch_grid']}"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--seq-len", type=int, default=50, help="random tokens per half")
    parser.add_argument("--batch", type=int, default=30, help="number of sequences")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    parser.add_argument("--no-mlp-grid", action="store_true",
                        help="skip the MLP patching grid (the slowest part)")
    parser.add_argument("--circuit-tokens", type=int, default=CIRCUIT_TOKENS,
                        help="query tokens (a seeded sample) on which the K-composition "
                             f"circuit's accuracy is measured; 0 = the whole vocabulary "
                             f"(default {CIRCUIT_TOKENS})")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    out = output_dir(args, STUDY)
    name, model = required_model(args)
    arrays, meta, text = repeated_study(model, args.seq_len, args.batch, args.seed,
                                        mlp_grid=not args.no_mlp_grid,
                                        circuit_tokens=args.circuit_tokens)
    meta["model"] = name
    return finish_study(out, LAYOUT, arrays, meta, text, args.overwrite)
