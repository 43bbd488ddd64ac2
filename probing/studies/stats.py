"""Activation statistics of one prompt, layer by layer.

* the attention output (``blocks.L.hook_attn_out``) and the residual stream after the
  attention block and the second LayerNorm (``blocks.L.ln2.hook_out``): mean, std, min,
  max and quartiles, plus histograms on a shared grid of bins and the raw values;
* MLP neurons (``blocks.L.mlp.hook_post``, after the activation function): the fraction of
  values near zero (``|x| < threshold``) and below the threshold, and the most active
  neurons of every token.

With TransformerLens' compatibility mode the LayerNorm weights are folded into the next
weights, so ``ln2.hook_out`` is the normalised residual without its scale and shift.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from headprobe.errors import UsageError
from headprobe.hooks import hook_name, hook_pattern, layer_hooks
from headprobe.tokens import token_strings
from probing.studies.common import (
    add_model_arguments,
    add_output_arguments,
    capture,
    finish_study,
    format_table,
    load_study_model,
    output_dir,
)

HELP = "per-layer statistics of attention outputs, normalised residuals and MLP neurons"
STUDY = "stats"
DEFAULT_PROMPT = ('One day, Lucy asks Tom: "I am looking for a banana but I can\'t find it". '
                  'Tom says: "Don\'t')
SUMMARY = ("mean", "std", "min", "q25", "median", "q75", "max")
SITES = ("attn_out", "ln2_out")   # hook points (headprobe.hooks), one summary each


def summary(values: np.ndarray) -> np.ndarray:
    """[mean, std, min, q25, median, q75, max] of all entries of ``values``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return np.array([v.mean(), v.std(), v.min(), q25, med, q75, v.max()])


def histograms(values: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer counts on shared edges: values [L, ...] -> (counts [L, bins], edges [bins+1])."""
    lo, hi = float(values.min()), float(values.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    counts = np.stack([np.histogram(v.ravel(), edges)[0] for v in values])
    return counts, edges


def stats_study(model: Any, prompt: str = DEFAULT_PROMPT, threshold: float = 0.01,
                top_k: int = 5, bins: int = 60) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run the study; returns (arrays, meta, report)."""
    if threshold < 0:
        raise UsageError("--threshold must be >= 0")
    tokens = model.to_tokens(prompt)
    if tokens.shape[-1] > model.cfg.n_ctx:
        raise UsageError(f"the prompt has {tokens.shape[-1]} tokens, more than the model's "
                         f"context of {model.cfg.n_ctx}")
    n_layers = model.cfg.n_layers
    names = [hook_name(s, layer) for s in SITES for layer in range(n_layers)]
    mlp = layer_hooks("mlp_post", n_layers)
    has_mlp = not bool(getattr(model.cfg, "attn_only", False))
    _, acts = capture(model, tokens, names + (mlp if has_mlp else []))
    arrays: dict[str, Any] = {"tokens": np.array(token_strings(model.tokenizer,
                                                               tokens[0].tolist())),
                              "summary_names": np.array(SUMMARY)}
    for site in SITES:
        values = np.stack([acts[hook_name(site, layer)][0].float().numpy()
                           for layer in range(n_layers)])                # [L, pos, d_model]
        arrays[site] = values
        arrays[f"{site}_summary"] = np.stack([summary(v) for v in values])
        arrays[f"{site}_hist"], arrays[f"{site}_hist_edges"] = histograms(values, bins)
        arrays[f"{site}_all_summary"] = summary(values)
    if has_mlp:
        post = np.stack([acts[hook_name("mlp_post", layer)][0].float().numpy()
                         for layer in range(n_layers)])                   # [L, pos, d_mlp]
        arrays["mlp_near_zero"] = (np.abs(post) < threshold).mean(axis=(1, 2))
        arrays["mlp_below"] = (post < threshold).mean(axis=(1, 2))
        arrays["mlp_token_near_zero"] = (np.abs(post) < threshold).mean(axis=2)
        k = min(top_k, post.shape[-1])
        top = np.argsort(-post, axis=-1, kind="stable")[..., :k]           # [L, pos, k]
        arrays["mlp_top_neurons"] = top
        arrays["mlp_top_values"] = np.take_along_axis(post, top, axis=-1)
        arrays["mlp_summary"] = np.stack([summary(v) for v in post])
    meta = {
        "study": STUDY, "prompt": prompt, "threshold": threshold, "top_k": top_k,
        "n_layers": n_layers, "n_tokens": int(tokens.shape[-1]), "has_mlp": has_mlp,
        "hooks": {s: hook_pattern(s) for s in (*SITES, "mlp_post")},
        "axes": {"tokens": ["position"], "summary_names": ["statistic"],
                 **{s: ["layer", "position", "d_model"] for s in SITES},
                 **{f"{s}_summary": ["layer", "statistic"] for s in SITES},
                 **{f"{s}_hist": ["layer", "bin"] for s in SITES},
                 **{f"{s}_hist_edges": ["bin edge"] for s in SITES},
                 **{f"{s}_all_summary": ["statistic"] for s in SITES},
                 "mlp_near_zero": ["layer"], "mlp_below": ["layer"],
                 "mlp_token_near_zero": ["layer", "position"],
                 "mlp_top_neurons": ["layer", "position", "rank"],
                 "mlp_top_values": ["layer", "position", "rank"],
                 "mlp_summary": ["layer", "statistic"]},
        "definitions": {
            "mlp_near_zero": "fraction of MLP post-activation values with |x| < threshold",
            "mlp_below": "fraction of MLP post-activation values below the threshold",
            "ln2_out": "residual after attention, normalised by LayerNorm (folded weights)",
        },
    }
    return arrays, meta, report(meta, arrays)


def report(meta: dict[str, Any], arrays: dict[str, Any]) -> str:
    lines = [f"Activation statistics for {meta['prompt']!r} ({meta['n_tokens']} tokens)", ""]
    for site, title in (("attn_out", "Attention output (hook_attn_out)"),
                        ("ln2_out", "Residual after attention + LayerNorm (ln2 output)")):
        rows = [(f"L{layer}", *arrays[f"{site}_summary"][layer]) for layer in
                range(meta["n_layers"])]
        rows.append(("all", *arrays[f"{site}_all_summary"]))
        lines += [title + ":", format_table(["layer", *SUMMARY], rows), ""]
    if meta["has_mlp"]:
        lines.append(f"MLP neurons (post-activation), threshold {meta['threshold']}:")
        rows = []
        for layer in range(meta["n_layers"]):
            counts = np.bincount(arrays["mlp_top_neurons"][layer, :, 0])
            common = np.argsort(-counts, kind="stable")[:3]
            rows.append((f"L{layer}", arrays["mlp_near_zero"][layer], arrays["mlp_below"][layer],
                         arrays["mlp_summary"][layer][6],
                         ", ".join(f"n{n} ({counts[n]})" for n in common if counts[n])))
        lines.append(format_table(["layer", "|x|<thr", "x<thr", "max", "most often top neuron "
                                   "(tokens)"], rows))
    else:
        lines.append("The model has no MLPs.")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="text to run")
    parser.add_argument("--threshold", type=float, default=0.01,
                        help="MLP activations with |x| below this count as near zero")
    parser.add_argument("--top-k", type=int, default=5, help="most active neurons per token")
    parser.add_argument("--bins", type=int, default=60, help="histogram bins")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    out = output_dir(args, STUDY)
    if not args.model:
        raise UsageError("give --model M")
    if args.top_k < 1 or args.bins < 1 or args.threshold < 0:
        raise UsageError("--top-k and --bins must be positive, --threshold >= 0")
    model = load_study_model(args.model, args.device)
    arrays, meta, text = stats_study(model, args.prompt, args.threshold, args.top_k, args.bins)
    meta["model"] = args.model
    return finish_study(out, STUDY, arrays, meta, text, args.overwrite)
