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

from headprobe.errors import UsageError, opt
from headprobe.heads import layer_label
from headprobe.hooks import hook_name, hook_pattern, layer_hooks
from headprobe.tokens import token_strings
from probing.studies.common import (
    add_model_arguments,
    add_output_arguments,
    capture,
    finish_study,
    format_table,
    output_dir,
    required_model,
)
from probing.study_io import Array, Layout

HELP = "per-layer statistics of attention outputs, normalised residuals and MLP neurons"
STUDY = "stats"
DEFAULT_PROMPT = ('One day, Lucy asks Tom: "I am looking for a banana but I can\'t find it". '
                  'Tom says: "Don\'t')
SUMMARY = ("mean", "std", "min", "q25", "median", "q75", "max")
SITES = ("attn_out", "ln2_out")   # hook points (headprobe.hooks), one summary each
SITE_NAMES = {"attn_out": "attention output (hook_attn_out)",
              "ln2_out": "normalised residual after attention (ln2.hook_out, LayerNorm "
                         "weights folded)"}
WITH_MLPS = "when the model has MLPs"

TOKENS = Array("tokens", ("position",), "str", "text of each token of the prompt")
SUMMARY_NAMES = Array("summary_names", ("statistic",), "str",
                      "names of the summary statistics: " + ", ".join(SUMMARY))
VALUES = {s: Array(s, ("layer", "position", "d_model"), "float",
                   f"the {what} of each token in each layer")
          for s, what in SITE_NAMES.items()}
SITE_SUMMARY = {s: Array(f"{s}_summary", ("layer", "statistic"), "float",
                         f"summary statistics of the {what} in each layer")
                for s, what in SITE_NAMES.items()}
HIST = {s: Array(f"{s}_hist", ("layer", "bin"), "int",
                 f"histogram counts of the {what} in each layer, on shared bins")
        for s, what in SITE_NAMES.items()}
HIST_EDGES = {s: Array(f"{s}_hist_edges", ("bin edge",), "float",
                       f"edges of the histogram bins of the {what}")
              for s, what in SITE_NAMES.items()}
ALL_SUMMARY = {s: Array(f"{s}_all_summary", ("statistic",), "float",
                        f"summary statistics of the {what} over all layers")
               for s, what in SITE_NAMES.items()}
MLP_NEAR_ZERO = Array("mlp_near_zero", ("layer",), "float",
                      "fraction of MLP post-activation values with abs(x) < threshold", WITH_MLPS)
MLP_BELOW = Array("mlp_below", ("layer",), "float",
                  "fraction of MLP post-activation values below the threshold", WITH_MLPS)
MLP_TOKEN_NEAR_ZERO = Array("mlp_token_near_zero", ("layer", "position"), "float",
                            "fraction of each token's MLP post-activation values with "
                            "abs(x) < threshold", WITH_MLPS)
MLP_TOP_NEURONS = Array("mlp_top_neurons", ("layer", "position", "rank"), "int",
                        "the most active MLP neurons of each token, most active first",
                        WITH_MLPS)
MLP_TOP_VALUES = Array("mlp_top_values", ("layer", "position", "rank"), "float",
                       "post-activation values of those neurons", WITH_MLPS)
MLP_SUMMARY = Array("mlp_summary", ("layer", "statistic"), "float",
                    "summary statistics of the MLP post-activation values in each layer",
                    WITH_MLPS)
LAYOUT = Layout(STUDY, (
    TOKENS, SUMMARY_NAMES,
    *(table[s] for s in SITES for table in (VALUES, SITE_SUMMARY, HIST, HIST_EDGES,
                                            ALL_SUMMARY)),
    MLP_NEAR_ZERO, MLP_BELOW, MLP_TOKEN_NEAR_ZERO, MLP_TOP_NEURONS, MLP_TOP_VALUES,
    MLP_SUMMARY))


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


def site_arrays(acts: dict[str, Any], site: str, n_layers: int, bins: int
                ) -> dict[str, np.ndarray]:
    """The values of hook point ``site`` [n_layers, pos, d_model] with their summaries and
    histograms (see LAYOUT)."""
    values = np.stack([acts[hook_name(site, layer)][0].float().cpu().numpy()
                       for layer in range(n_layers)])
    counts, edges = histograms(values, bins)
    return {VALUES[site].name: values,
            SITE_SUMMARY[site].name: np.stack([summary(v) for v in values]),
            HIST[site].name: counts, HIST_EDGES[site].name: edges,
            ALL_SUMMARY[site].name: summary(values)}


def mlp_arrays(post: np.ndarray, threshold: float, top_k: int) -> dict[str, np.ndarray]:
    """Sparsity and most active neurons of MLP post-activations post [n_layers, pos, d_mlp]."""
    k = min(top_k, post.shape[-1])
    top = np.argsort(-post, axis=-1, kind="stable")[..., :k]              # [L, pos, k]
    return {"mlp_near_zero": (np.abs(post) < threshold).mean(axis=(1, 2)),
            "mlp_below": (post < threshold).mean(axis=(1, 2)),
            "mlp_token_near_zero": (np.abs(post) < threshold).mean(axis=2),
            "mlp_top_neurons": top,
            "mlp_top_values": np.take_along_axis(post, top, axis=-1),
            "mlp_summary": np.stack([summary(v) for v in post])}


def stats_study(model: Any, prompt: str = DEFAULT_PROMPT, threshold: float = 0.01,
                top_k: int = 5, bins: int = 60) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run the study; returns (arrays, meta, report).

    arrays are named and shaped as declared in LAYOUT: per site the values [n_layers, pos,
    d_model], summaries [n_layers, 7] and histograms [n_layers, bins]; with MLPs their
    sparsity [n_layers] and most active neurons [n_layers, pos, top_k].
    """
    if threshold < 0:
        raise UsageError(f"{opt('threshold')} must be >= 0")
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
        arrays.update(site_arrays(acts, site, n_layers, bins))
    if has_mlp:
        post = np.stack([acts[name][0].float().cpu().numpy() for name in mlp])   # [L, pos, d_mlp]
        arrays.update(mlp_arrays(post, threshold, top_k))
    meta = {
        "study": STUDY, "prompt": prompt, "threshold": threshold, "top_k": top_k,
        "n_layers": n_layers, "n_tokens": int(tokens.shape[-1]), "has_mlp": has_mlp,
        "hooks": {s: hook_pattern(s) for s in (*SITES, "mlp_post")},
    }
    return arrays, meta, report(meta, arrays)


def report(meta: dict[str, Any], arrays: dict[str, Any]) -> str:
    lines = [f"Activation statistics for {meta['prompt']!r} ({meta['n_tokens']} tokens)", ""]
    for site, title in (("attn_out", "Attention output (hook_attn_out)"),
                        ("ln2_out", "Residual after attention + LayerNorm (ln2 output)")):
        rows = [(layer_label(layer), *arrays[SITE_SUMMARY[site].name][layer]) for layer in
                range(meta["n_layers"])]
        rows.append(("all", *arrays[ALL_SUMMARY[site].name]))
        lines += [title + ":", format_table(["layer", *SUMMARY], rows), ""]
    if meta["has_mlp"]:
        lines.append(f"MLP neurons (post-activation), threshold {meta['threshold']}:")
        rows = []
        for layer in range(meta["n_layers"]):
            counts = np.bincount(arrays["mlp_top_neurons"][layer, :, 0])
            common = np.argsort(-counts, kind="stable")[:3]
            rows.append((layer_label(layer), arrays["mlp_near_zero"][layer],
                         arrays["mlp_below"][layer], arrays["mlp_summary"][layer][6],
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
    if args.top_k < 1 or args.bins < 1 or args.threshold < 0:
        raise UsageError("--top-k and --bins must be positive, --threshold >= 0")
    name, model = required_model(args)
    arrays, meta, text = stats_study(model, args.prompt, args.threshold, args.top_k, args.bins)
    meta["model"] = name
    return finish_study(out, LAYOUT, arrays, meta, text, args.overwrite)
