"""Figures of the ``stats`` study: one distribution per layer, side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures.plotting import new_figure
from figures.registry import Planned, register
from headprobe.errors import UsageError
from headprobe.heads import layer_label
from probing.studies import stats as study
from probing.study_io import StudyResults

QUANTILE_KEYS = ("whislo", "q1", "med", "q3", "whishi")
BOX_STATS = ("min", "q25", "median", "q75", "max")
PANEL_TITLES = {"attn_out": "attention output (hook_attn_out)",
                "ln2_out": "residual after attention + LayerNorm (ln2.hook_out)",
                "mlp": "MLP neurons after the activation (mlp.hook_post)"}


def _boxes(ax: Axes, quantiles: np.ndarray, layer_labels: Sequence[str],
           means: np.ndarray | None) -> None:
    stats = []
    for i, label in enumerate(layer_labels):
        entry = dict(zip(QUANTILE_KEYS, np.asarray(quantiles[i], dtype=float).tolist(),
                         strict=True))
        entry.update(label=str(label), fliers=[])
        if means is not None:
            entry["mean"] = float(means[i])
        stats.append(entry)
    ax.bxp(stats, showmeans=means is not None, showfliers=False)
    ax.set_xlabel("layer")
    ax.tick_params(axis="x", labelsize=8)


def draw_layer_boxes(quantiles: np.ndarray, layer_labels: Sequence[str], value_label: str,
                     means: np.ndarray | None = None, whisker_label: str = "min-max",
                     title: str = "") -> Figure:
    """Per-layer box plots drawn from precomputed statistics.

    quantiles: [n_layers, 5] = (whisker low, 25 %, median, 75 %, whisker high);
    means: [n_layers] drawn as dots when given.
    """
    fig = new_figure(0.6 * len(layer_labels) + 2.5, 4.0)
    ax = fig.subplots()
    _boxes(ax, quantiles, layer_labels, means)
    ax.set_ylabel(value_label)
    ax.set_title(title or f"Distribution per layer (box: 25-75 %, whiskers: {whisker_label})")
    return fig


def draw_site_boxes(panels: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
                    layer_labels: Sequence[str], title: str,
                    whisker_label: str = "min-max") -> Figure:
    """Per-layer box plots of several activations, one panel each (own y scale).

    panels: panel title -> (quantiles [n_layers, 5] as in :func:`draw_layer_boxes`,
    means [n_layers] or None).
    """
    fig = new_figure(len(panels) * (0.45 * len(layer_labels) + 1.6), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (quantiles, means)) in zip(axes, panels.items(), strict=True):
        _boxes(ax, quantiles, layer_labels, means)
        ax.set_ylabel("value")
        ax.set_title(name, fontsize=9)
        ax.axhline(0.0, color="0.7", lw=0.6, zorder=0)
    fig.suptitle(f"{title}\nbox: 25-75 %, line: median, triangle: mean, whiskers: "
                 f"{whisker_label}", fontsize=10)
    return fig


def _ridges(ax: Axes, counts: np.ndarray, edges: np.ndarray, layer_labels: Sequence[str],
            log: bool) -> None:
    n_layers = counts.shape[0]
    for i in range(n_layers):
        e = edges if edges.ndim == 1 else edges[i]
        c = np.log1p(counts[i]) if log else counts[i]
        peak = c.max() if c.max() > 0 else 1.0
        y = c / peak * 0.9
        ax.stairs(i + y, e, baseline=i, fill=True, alpha=0.6)
        ax.stairs(i + y, e, baseline=None, color="black", lw=0.6)
    ax.set_yticks(np.arange(n_layers))
    ax.set_yticklabels(list(layer_labels), fontsize=8)
    ax.set_ylim(-0.1, n_layers)
    ax.set_ylabel("layer")


def draw_layer_histograms(counts: np.ndarray, edges: np.ndarray, layer_labels: Sequence[str],
                          value_label: str, title: str = "", log: bool = False) -> Figure:
    """Per-layer histograms stacked as ridgelines, each scaled to its own peak.

    counts: [n_layers, n_bins]; edges: [n_bins + 1] shared by every layer, or
    [n_layers, n_bins + 1]; log: heights are log(1 + count), so tails show.
    """
    counts = np.asarray(counts, dtype=float)
    edges = np.asarray(edges, dtype=float)
    fig = new_figure(6.5, 0.45 * counts.shape[0] + 1.5)
    ax = fig.subplots()
    _ridges(ax, counts, edges, layer_labels, log)
    ax.set_xlabel(value_label)
    ax.set_title(title or "Distribution per layer")
    return fig


def draw_site_histograms(panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
                         layer_labels: Sequence[str], title: str, log: bool = True) -> Figure:
    """Ridgeline histograms of several activations side by side.

    panels: panel title -> (counts [n_layers, n_bins], edges [n_bins + 1]).
    """
    fig = new_figure(4.2 * len(panels) + 0.5, 0.45 * len(layer_labels) + 1.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (counts, edges)) in zip(axes, panels.items(), strict=True):
        _ridges(ax, np.asarray(counts, dtype=float), np.asarray(edges, dtype=float),
                layer_labels, log)
        ax.set_xlabel("value")
        ax.set_title(name, fontsize=9)
    scale = "log(1 + count)" if log else "count"
    fig.suptitle(f"{title}\neach layer scaled to its own peak of {scale}", fontsize=10)
    return fig


def draw_layer_fractions(fractions: Mapping[str, np.ndarray], layer_labels: Sequence[str],
                         ylabel: str, title: str) -> Figure:
    """Grouped bars: one bar per named fraction [n_layers] in every layer."""
    fig = new_figure(0.5 * len(layer_labels) * max(len(fractions), 1) + 2.5, 3.6)
    ax = fig.subplots()
    x = np.arange(len(layer_labels))
    width = 0.8 / max(len(fractions), 1)
    for k, (name, values) in enumerate(fractions.items()):
        ax.bar(x + (k - (len(fractions) - 1) / 2) * width, values, width=width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(list(layer_labels), fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def prompt_title(st: StudyResults, what: str) -> str:
    """``what on 'PROMPT'``, the prompt shortened to one line of at most 70 characters."""
    prompt = str(st.meta.get("prompt", ""))
    short = prompt if len(prompt) <= 70 else prompt[:67] + "..."
    short = short.replace("\n", "\\n")
    return f"{what} on \u2018{short}\u2019" if prompt else what


def layer_labels(n_layers: int) -> list[str]:
    return [layer_label(layer) for layer in range(n_layers)]


def box_panels(st: StudyResults) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Panel title -> (quantiles [n_layers, 5], means [n_layers]) of every summary stored."""
    names = [str(n) for n in st[study.SUMMARY_NAMES]]
    missing = [n for n in (*BOX_STATS, "mean") if n not in names]
    if missing:
        raise UsageError(f"{st.path}: {study.SUMMARY_NAMES.name} lacks {', '.join(missing)}")
    tables = {site: st[study.SITE_SUMMARY[site]] for site in study.SITES}
    if study.MLP_SUMMARY in st:
        tables["mlp"] = st[study.MLP_SUMMARY]
    return {PANEL_TITLES[site]: (table[:, [names.index(n) for n in BOX_STATS]],
                                 table[:, names.index("mean")])
            for site, table in tables.items()}


@register("activation_stats", study.STUDY,
          "per-layer box plots (min, quartiles, max, mean) of the attention output, the "
          "normalised residual and the MLP neurons",
          needs=(study.SUMMARY_NAMES, *study.SITE_SUMMARY.values()))
def plan_boxes(st: StudyResults) -> list[Planned]:
    panels = box_panels(st)
    n_layers = next(iter(panels.values()))[0].shape[0]
    title = prompt_title(st, "Activations per layer")
    return [Planned("activation_stats", lambda: draw_site_boxes(
        panels, layer_labels(n_layers), title), [st.file])]


@register("activation_hist", study.STUDY,
          "per-layer histograms (ridgelines) of the attention output and the normalised "
          "residual", needs=(*study.HIST.values(), *study.HIST_EDGES.values()))
def plan_histograms(st: StudyResults) -> list[Planned]:
    panels = {PANEL_TITLES[site]: (st[study.HIST[site]], st[study.HIST_EDGES[site]])
              for site in study.SITES}
    n_layers = st[study.HIST[study.SITES[0]]].shape[0]
    title = prompt_title(st, "Histograms per layer")
    return [Planned("activation_hist", lambda: draw_site_histograms(
        panels, layer_labels(n_layers), title), [st.file])]


@register("mlp_sparsity", study.STUDY, "fraction of MLP neuron values near zero, per layer",
          needs=(study.MLP_NEAR_ZERO, study.MLP_BELOW))
def plan_mlp_sparsity(st: StudyResults) -> list[Planned]:
    thr = st.meta.get("threshold", "threshold")
    fractions = {f"|x| < {thr}": st[study.MLP_NEAR_ZERO], f"x < {thr}": st[study.MLP_BELOW]}
    layers = layer_labels(len(st[study.MLP_NEAR_ZERO]))
    title = prompt_title(st, "MLP neurons (post-activation)")
    return [Planned("mlp_sparsity", lambda: draw_layer_fractions(
        fractions, layers, "fraction of neuron values", title), [st.file])]
