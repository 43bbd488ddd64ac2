"""Activation patching: which activations carry the difference between a clean and a corrupted
prompt?

The clean and corrupted prompts have the same number of tokens. Each cell of the grid
copies one clean activation into the corrupted run and records the logit difference
``logit[target] - logit[foil]`` at the last position:

* ``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out``: one cell per (layer, position);
* ``head``: one cell per (layer, head), the head's output ``hook_z`` at every position.

Optionally the grid is normalised to [0, 1] between the corrupted (0) and clean (1)
baselines. The grid is computed in batches: every cell is one row of a batch of copies of
the corrupted prompt, with a hook at every layer patching only the rows of that layer, so
the whole grid takes a handful of forward passes.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from headprobe.errors import UsageError, opt
from headprobe.heads import layer_label
from headprobe.hooks import hook_pattern, layer_hooks
from headprobe.rundir import model_of_store
from headprobe.tokens import show_tokens, token_strings
from probing.studies.common import (
    add_model_arguments,
    add_output_arguments,
    capture,
    finish_study,
    format_table,
    load_study_model,
    output_dir,
    run_hooked,
)
from probing.study_io import Array, Layout

HELP = "activation patching grid of a clean/corrupted prompt pair"
STUDY = "patch"
# patching site -> hook point (headprobe.hooks)
SITES = {"resid_pre": "resid_pre", "resid_post": "resid_post", "attn_out": "attn_out",
         "mlp_out": "mlp_out", "head": "z"}
DEFAULT_CLEAN = "Tom had a red ball. Tom gave the ball to"
DEFAULT_CORRUPT = "Sue had a red ball. Sue gave the ball to"
TOP_K = 20
FOR_HEADS = "for the head site"


def top_table(prompt: str) -> dict[str, Array]:
    """The entries of the top-k next-token table of the ``prompt`` prompt ('clean' or
    'corrupt'), by field: rank, id, token, prob."""
    what = f"of the {prompt} prompt's top {TOP_K} next tokens"
    return {"rank": Array(f"{prompt}_top_rank", ("rank",), "int", f"rank (1 = likeliest) {what}"),
            "id": Array(f"{prompt}_top_id", ("rank",), "int", f"token id {what}"),
            "token": Array(f"{prompt}_top_token", ("rank",), "str", f"text {what}"),
            "prob": Array(f"{prompt}_top_prob", ("rank",), "float", f"probability {what}")}


GRID = Array("grid", ("layer", "position or head"), "float",
             "the metric after patching each cell: logit[target] - logit[foil] at the last "
             "position (normalised 0 = corrupted .. 1 = clean if asked); columns are positions, "
             "or heads for the head site")
GRID_RAW = Array("grid_raw", ("layer", "position or head"), "float",
                 "the same grid as logit differences, never normalised")
CLEAN_TOKENS = Array("clean_tokens", ("position",), "str", "text of each clean prompt token")
CORRUPT_TOKENS = Array("corrupt_tokens", ("position",), "str",
                       "text of each corrupted prompt token")
CLEAN_IDS = Array("clean_ids", ("position",), "int", "token ids of the clean prompt")
CORRUPT_IDS = Array("corrupt_ids", ("position",), "int", "token ids of the corrupted prompt")
LAYER_LABELS = Array("layer_labels", ("layer",), "str", "name of each layer (L0, L1, ...)")
HEAD_LABELS = Array("head_labels", ("head",), "str", "name of each head (H0, H1, ...)",
                    FOR_HEADS)
TOP = {prompt: top_table(prompt) for prompt in ("clean", "corrupt")}
LAYOUT = Layout(STUDY, (GRID, GRID_RAW, CLEAN_TOKENS, CORRUPT_TOKENS, CLEAN_IDS, CORRUPT_IDS,
                        LAYER_LABELS, HEAD_LABELS, *TOP["clean"].values(),
                        *TOP["corrupt"].values()))


def check_lengths(tokenizer: Any, clean: list[int], corrupt: list[int]) -> None:
    """UsageError showing both tokenisations when the prompts differ in length."""
    if len(clean) != len(corrupt):
        raise UsageError(
            f"clean and corrupted prompts must have the same number of tokens: clean has "
            f"{len(clean)} {show_tokens(token_strings(tokenizer, clean))}, corrupted has "
            f"{len(corrupt)} {show_tokens(token_strings(tokenizer, corrupt))}")


def check_prompts(clean: str, corrupt: str) -> None:
    """Refuse an empty (or blank) prompt: patching needs a position to patch and to read."""
    for param, text in (("clean", clean), ("corrupt", corrupt)):
        if not text.strip():
            raise UsageError(f"the {opt(param)} prompt is empty; give a prompt with text")


def tokenize_pair(model: Any, clean: str, corrupt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [1, n] of both prompts (with BOS); refused when empty or of unequal length."""
    check_prompts(clean, corrupt)
    a, b = model.to_tokens(clean), model.to_tokens(corrupt)
    check_lengths(model.tokenizer, a[0].tolist(), b[0].tolist())
    return a, b


def precheck_lengths(name: str, clean: str, corrupt: str) -> None:
    """Refuse empty prompts, and prompts of unequal length from the tokenizer alone, before
    booting the model."""
    from headprobe.tokenization import load_tokenizer

    check_prompts(clean, corrupt)
    try:
        tok = load_tokenizer(name)
    except UsageError:
        return  # the model load reports it
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    check_lengths(tok, bos + tok.encode(clean, add_special_tokens=False),
                  bos + tok.encode(corrupt, add_special_tokens=False))


def single_token(model: Any, text: str, param: str) -> int:
    """The id of ``text`` (given as ``param``) if it is exactly one token; UsageError showing
    the tokenisation otherwise."""
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise UsageError(f"{opt(param)} {text!r} must be a single token but is {len(ids)}: "
                         f"{show_tokens(token_strings(model.tokenizer, ids))}")
    return int(ids[0])


def top_k_table(model: Any, logits: torch.Tensor, k: int = TOP_K) -> dict[str, np.ndarray]:
    """Top-k next tokens from last-position logits [d_vocab]: rank, id, token, probability."""
    probs = torch.softmax(logits.float(), dim=-1)
    p, ids = probs.topk(min(k, probs.shape[-1]))
    p, ids = p.cpu(), ids.cpu()
    return {"rank": np.arange(1, len(ids) + 1), "id": ids.numpy(),
            "token": np.array(token_strings(model.tokenizer, ids.tolist())), "prob": p.numpy()}


def logit_diff_metric(target: int, foil: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits [batch, pos, d_vocab] -> last-position ``target - foil`` logit [batch]."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, target] - logits[:, -1, foil]
    return metric


def patch_cells(model: Any, site: str, n_pos: int) -> list[tuple[int, int]]:
    """(layer, position) cells, or (layer, head) for the ``head`` site, in grid order."""
    width = model.cfg.n_heads if site == "head" else n_pos
    return [(layer, j) for layer in range(model.cfg.n_layers) for j in range(width)]


def patch_grid(model: Any, clean: torch.Tensor, corrupt: torch.Tensor, site: str,
               metric: Callable[[torch.Tensor], torch.Tensor], max_rows: int = 128
               ) -> np.ndarray:
    """Metric after patching each clean activation into the corrupted run, batched.

    clean, corrupt: token ids [1, n_pos]. Returns [n_layers, n_pos] ([n_layers, n_heads]
    for ``site == "head"``).
    """
    if site not in SITES:
        raise UsageError(f"unknown {opt('site')} {site!r}; choose from {', '.join(SITES)}")
    n_layers, n_pos = model.cfg.n_layers, clean.shape[-1]
    names = layer_hooks(SITES[site], n_layers)
    _, cache = capture(model, clean, names)
    cells = patch_cells(model, site, n_pos)
    values = torch.zeros(len(cells))
    for start in range(0, len(cells), max_rows):
        chunk = torch.tensor(cells[start:start + max_rows])            # [rows, 2]

        def patch(act: torch.Tensor, hook: Any, name: str, chunk=chunk) -> torch.Tensor:
            rows = torch.nonzero(chunk[:, 0] == hook.layer()).flatten()
            if len(rows):
                index = chunk[rows, 1]
                source = cache[name][0]
                if site == "head":                                     # act [b, pos, head, d]
                    act[rows, :, index] = source[:, index].transpose(0, 1).to(act.dtype)
                else:                                                  # act [b, pos, d_model]
                    act[rows, index] = source[index].to(act.dtype)
            return act

        hooks = [(n, functools.partial(patch, name=n)) for n in names]
        logits = run_hooked(model, corrupt.repeat(len(chunk), 1), hooks)
        values[start:start + len(chunk)] = metric(logits).float()
    width = model.cfg.n_heads if site == "head" else n_pos
    return values.reshape(n_layers, width).numpy()


def reference_grid(model: Any, clean: torch.Tensor, corrupt: torch.Tensor, site: str,
                   metric: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """The same grid from ``transformer_lens.patching`` (one forward pass per cell)."""
    from transformer_lens import patching

    functions = {
        "resid_pre": patching.get_act_patch_resid_pre,
        "resid_post": None,
        "attn_out": patching.get_act_patch_attn_out,
        "mlp_out": patching.get_act_patch_mlp_out,
        "head": patching.get_act_patch_attn_head_out_all_pos,
    }
    if functions.get(site) is None:
        raise UsageError(f"transformer_lens.patching has no layer x position sweep for {site}")
    _, cache = model.run_with_cache(clean)
    with torch.inference_mode():
        grid = functions[site](model, corrupt, cache, lambda lg: metric(lg)[0])
    return grid.float().cpu().numpy()


def normalise(grid: np.ndarray, corrupted: float, clean: float) -> np.ndarray:
    """Map the corrupted baseline to 0 and the clean baseline to 1."""
    if abs(clean - corrupted) < 1e-9:
        raise UsageError("clean and corrupted logit differences are equal; cannot "
                         f"{opt('normalize', True)}")
    return (grid - corrupted) / (clean - corrupted)


def default_answers(clean_logits: torch.Tensor, corrupt_logits: torch.Tensor,
                    k: int = TOP_K) -> tuple[int, int]:
    """(target, foil) when none are given: among the clean prompt's top-k tokens the one whose
    probability the corruption lowers most, and among the corrupted prompt's top-k the one
    whose probability it raises most (logits [d_vocab] each). Probabilities, not their
    logarithms: a likely token that loses much beats an unlikely one that loses a large
    factor of very little."""
    clean_p = torch.softmax(clean_logits.float(), -1)
    corrupt_p = torch.softmax(corrupt_logits.float(), -1)
    top = clean_logits.topk(k).indices
    target = int(top[(clean_p - corrupt_p)[top].argmax()])
    top = corrupt_logits.topk(k + 1).indices
    top = top[top != target][:k]
    foil = int(top[(corrupt_p - clean_p)[top].argmax()])
    return target, foil


def patch_study(model: Any, clean_text: str, corrupt_text: str, target: str | None = None,
                foil: str | None = None, site: str = "resid_pre", normalize: bool = False
                ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run the study; returns (arrays, meta, report).

    arrays are named and shaped as declared in LAYOUT: the grid [n_layers, n_pos] ([n_layers,
    n_heads] for the head site), both prompts [n_pos] and their top-k tables [k].
    """
    if site not in SITES:
        raise UsageError(f"unknown {opt('site')} {site!r}; choose from {', '.join(SITES)}")
    clean, corrupt = tokenize_pair(model, clean_text, corrupt_text)
    if clean.shape[-1] > model.cfg.n_ctx:
        raise UsageError(f"the prompts are longer than the model's context ({model.cfg.n_ctx})")
    with torch.inference_mode():
        clean_logits = model(clean)[0, -1].float()
        corrupt_logits = model(corrupt)[0, -1].float()
    if (target is None) != (foil is None):
        raise UsageError(f"give both {opt('target')} and {opt('foil')}, or neither")
    if target is None:
        target_id, foil_id = default_answers(clean_logits, corrupt_logits)
    else:
        target_id, foil_id = single_token(model, target, "target"), single_token(
            model, foil, "foil")
    metric = logit_diff_metric(target_id, foil_id)
    clean_diff = float(clean_logits[target_id] - clean_logits[foil_id])
    corrupt_diff = float(corrupt_logits[target_id] - corrupt_logits[foil_id])
    grid = patch_grid(model, clean, corrupt, site, metric)
    raw = grid
    if normalize:
        grid = normalise(grid, corrupt_diff, clean_diff)
    tok = model.tokenizer
    clean_table = top_k_table(model, clean_logits)
    corrupt_table = top_k_table(model, corrupt_logits)
    arrays = {
        "grid": grid, "grid_raw": raw,
        "clean_tokens": np.array(token_strings(tok, clean[0].tolist())),
        "corrupt_tokens": np.array(token_strings(tok, corrupt[0].tolist())),
        "clean_ids": clean[0].cpu().numpy(), "corrupt_ids": corrupt[0].cpu().numpy(),
        "layer_labels": np.array([layer_label(layer) for layer in range(model.cfg.n_layers)]),
        **{TOP["clean"][k].name: v for k, v in clean_table.items()},
        **{TOP["corrupt"][k].name: v for k, v in corrupt_table.items()},
    }
    if site == "head":
        arrays["head_labels"] = np.array([f"H{h}" for h in range(model.cfg.n_heads)])
    names = token_strings(tok, [target_id, foil_id])
    meta = {
        "study": STUDY, "clean": clean_text, "corrupt": corrupt_text, "site": site,
        "hook": hook_pattern(SITES[site]), "target": names[0], "target_id": target_id,
        "foil": names[1], "foil_id": foil_id, "answers_given": target is not None,
        "normalized": normalize, "clean_logit_diff": clean_diff,
        "corrupt_logit_diff": corrupt_diff, "n_layers": int(model.cfg.n_layers),
        "value": ("normalised logit difference (0 = corrupted, 1 = clean)" if normalize
                  else f"logit[{names[0]!r}] - logit[{names[1]!r}] at the last position"),
    }
    return arrays, meta, report(meta, arrays)


def chosen_how(meta: dict[str, Any], arrays: dict[str, Any]) -> str:
    """How the default target and foil were chosen, with their ranks in the top-k tables."""

    def rank(which: str, token_id: int) -> str:
        ids = list(np.asarray(arrays[TOP[which]["id"].name]))
        return f"rank {ids.index(token_id) + 1}" if token_id in ids else "not in the table"

    return (f"chosen: the target is the clean prompt's top-{TOP_K} token whose probability "
            f"the corruption lowers most ({rank('clean', meta['target_id'])} of the clean "
            f"prompt), the foil the corrupted prompt's top-{TOP_K} token it raises most "
            f"({rank('corrupt', meta['foil_id'])} of the corrupted prompt)")


def report(meta: dict[str, Any], arrays: dict[str, Any]) -> str:
    lines = [f"Activation patching of {meta['site']} ({meta['hook']})",
             f"clean:     {meta['clean']!r}", f"corrupted: {meta['corrupt']!r}",
             f"target {meta['target']!r} (id {meta['target_id']}), foil {meta['foil']!r} "
             f"(id {meta['foil_id']})" + ("" if meta["answers_given"] else
                                          f" ({chosen_how(meta, arrays)})"),
             f"logit difference: clean {meta['clean_logit_diff']:.3f}, corrupted "
             f"{meta['corrupt_logit_diff']:.3f}", ""]
    for which in ("clean", "corrupt"):
        table = TOP[which]
        lines.append(f"Top {len(arrays[table['rank'].name])} next tokens, {which} prompt:")
        columns = [arrays[table[k].name] for k in ("rank", "id", "token", "prob")]
        rows = zip(*columns, strict=True)
        lines.append(format_table(["rank", "id", "token", "probability"],
                                  [(r, i, repr(str(t)), p) for r, i, t, p in rows]))
        lines.append("")
    grid = arrays["grid"]
    flat = np.argsort(-np.abs(grid - (0 if meta["normalized"] else meta["corrupt_logit_diff"])),
                      axis=None)[:5]
    column = "head" if meta["site"] == "head" else "position"
    cells = []
    for i in flat:
        layer, j = np.unravel_index(i, grid.shape)
        label = f"H{j}" if column == "head" else f"{j} {str(arrays['corrupt_tokens'][j])!r}"
        cells.append((layer_label(layer), label, grid[layer, j]))
    lines.append(f"Cells that move the result most ({meta['value']}):")
    lines.append(format_table(["layer", column, "value"], cells))
    return "\n".join(lines)


def bench(model: Any, clean_text: str, corrupt_text: str, site: str = "resid_pre",
          repeats: int = 1) -> dict[str, float]:
    """Time the batched grid against ``transformer_lens.patching`` on the same prompts.

    Returns seconds of each, their ratio and the largest difference between the grids.
    """
    clean, corrupt = tokenize_pair(model, clean_text, corrupt_text)
    with torch.inference_mode():
        target, foil = default_answers(model(clean)[0, -1], model(corrupt)[0, -1])
    metric = logit_diff_metric(target, foil)
    times = {}
    grids = {}
    for name, fn in (("transformer_lens", reference_grid), ("batched", patch_grid)):
        start = time.perf_counter()
        for _ in range(repeats):
            grids[name] = fn(model, clean, corrupt, site, metric)
        times[name] = (time.perf_counter() - start) / repeats
    return {"reference_s": times["transformer_lens"], "batched_s": times["batched"],
            "speedup": times["transformer_lens"] / times["batched"],
            "max_abs_diff": float(np.abs(grids["transformer_lens"] - grids["batched"]).max()),
            "cells": float(grids["batched"].size)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--clean", default=DEFAULT_CLEAN, help="clean prompt")
    parser.add_argument("--corrupt", default=DEFAULT_CORRUPT,
                        help="corrupted prompt (same number of tokens)")
    parser.add_argument("--target", help="answer token favoured by the clean prompt (default: "
                                         "of the clean prompt's top 20, the one the corruption "
                                         "lowers most)")
    parser.add_argument("--foil", help="answer token favoured by the corrupted prompt (default: "
                                       "of the corrupted prompt's top 20, the one it raises "
                                       "most)")
    parser.add_argument("--site", default="resid_pre", choices=list(SITES),
                        help="activation to patch (default resid_pre)")
    parser.add_argument("--normalize", action="store_true",
                        help="scale the grid to 0 (corrupted) .. 1 (clean)")
    parser.add_argument("--bench", action="store_true",
                        help="time the batched grid against transformer_lens.patching and "
                             "print the speed ratio (writes results only with --out/--run)")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    writing = not args.bench or args.out or args.run
    out = output_dir(args, STUDY) if writing else None
    args.model = args.model or model_of_store({}, args.run)
    if not args.model:
        raise UsageError("give --model M")
    precheck_lengths(args.model, args.clean, args.corrupt)
    model = load_study_model(args.model, args.device, args.model_dtype)
    if args.bench:
        site = args.site if args.site != "resid_post" else "resid_pre"
        result = bench(model, args.clean, args.corrupt, site)
        print(f"patching bench ({site}, {int(result['cells'])} cells, {args.model}): "
              f"transformer_lens.patching {result['reference_s']:.2f} s, batched "
              f"{result['batched_s']:.2f} s, speed-up {result['speedup']:.1f}x, "
              f"max |difference| {result['max_abs_diff']:.2e}")
        sys.stdout.flush()
        if out is None:
            return 0
    arrays, meta, text = patch_study(model, args.clean, args.corrupt, args.target, args.foil,
                                     args.site, args.normalize)
    meta["model"] = args.model
    return finish_study(out, LAYOUT, arrays, meta, text, args.overwrite)
