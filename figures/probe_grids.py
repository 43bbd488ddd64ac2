"""Probe F1 grids: one layer x head heatmap per tag, drawn as small multiples; and the
per-probe grids of selectivity and MDL compression.

Selectivity is the probe's F1 (or accuracy) minus that of a control (the same probe on
the control task, on shuffled labels, or on the vectors of a randomly initialised
model): how much of the score the trained model's activations themselves earn. The
selectivity grids take the strongest control fitted per cell that the results hold
(random weights, else the control task, else shuffled labels;
probing.controls.STRONGEST_FIRST).
Compression is the MDL measure: the uniform code length of the train tags over their
online code length with the probe (1 = the vectors do not help to send the tags).
The lexical baseline (word identity: each token gets the most frequent training tag of its
token id) is one number per tag, the same in every cell: the F1 figures show it beside the
probe, in panel titles, as a line on the F1 colour bar and as a dot on every cell whose
F1 exceeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from figures.plotting import (
    DIVERGING,
    SEQUENTIAL,
    diverging_norm,
    grid_shape,
    heatmap,
    hide_unused,
    integer_ticks,
    mark_cell,
    new_figure,
)
from figures.registry import NotPlanned, Planned, register
from figures.sources import PROBES
from headprobe.errors import UsageError
from headprobe.heads import head_label, kv_head_label
from probing.controls import array_suffix, strongest_control
from probing.results import ProbeResults

PANEL_INCH = 0.16  # inches per grid cell in small multiples
SITE_NAMES = {"key": "keys", "query": "queries", "value": "values",
              "key_rot": "keys_rot", "query_rot": "queries_rot"}
HEAD_AXIS_NAMES = {"head": "head", "kv_head": "key/value head"}
# Per-tag F1 controls drawn as grids: array -> (figure suffix, label). The majority-class
# baseline is left out: it is the same number in every cell.
PROBE_CONTROLS = {"f1_control_task": ("control_task", "control task"),
                  "f1_shuffled": ("shuffled", "shuffled labels"),
                  "f1_random": ("random", "randomly initialised model")}
# Per-probe accuracy of each control, for selectivity as Hewitt & Liang define it.
ACCURACY_CONTROLS = {"accuracy_control_task": "control task",
                     "accuracy_shuffled": "shuffled labels",
                     "accuracy_random": "randomly initialised model",
                     "accuracy_majority": "majority tag"}
# MDL compression of the probe and of its controls: array -> what was coded.
COMPRESSIONS = {"compression": "tags, trained model",
                "compression_random": "tags, randomly initialised model",
                "compression_control_task": "control task, trained model"}


def selectivity(f1: np.ndarray, f1_control: np.ndarray) -> np.ndarray:
    """F1 minus a control's F1, same shape as the inputs."""
    return np.asarray(f1, dtype=float) - np.asarray(f1_control, dtype=float)


def best_head(grid: np.ndarray) -> tuple[int, int]:
    """(layer index, head) of the largest finite value of ``grid`` [layer, head]."""
    filled = np.where(np.isfinite(grid), grid, -np.inf)
    layer, head = np.unravel_index(int(np.argmax(filled)), filled.shape)
    return int(layer), int(head)


def _layer_ticks(ax, layers: Sequence[int] | None, n_layers: int, n_heads: int,
                 max_ticks: int) -> None:
    integer_ticks(ax, n_layers, n_heads, max_ticks=max_ticks)
    if layers is not None:
        ax.set_yticklabels([str(layers[int(i)]) for i in ax.get_yticks()])


def _dot_above(ax, grid: np.ndarray, baseline: float) -> None:
    """A small dot on every cell of ``grid`` [layer, head] whose value exceeds ``baseline``."""
    rows, cols = np.nonzero(np.nan_to_num(grid, nan=-np.inf) > baseline)
    if len(rows):
        ax.scatter(cols, rows, s=4, c="white", edgecolors="black", linewidths=0.4)


def draw_tag_grids(values: np.ndarray, tags: Sequence[str], title: str, value_label: str,
                   diverging: bool = False, support: np.ndarray | None = None,
                   layers: Sequence[int] | None = None, head_axis: str = "head",
                   baseline: np.ndarray | None = None) -> Figure:
    """Small multiples of layer x head heatmaps, one panel per tag, one shared colour bar.

    values: [n_layers, n_heads, n_tags]; support: [n_tags] test tokens per tag (shown in
    panel titles); layers: [n_layers] model layer of each row (default 0..n_layers-1);
    head_axis: 'head' or 'kv_head' (key/value heads of a grouped-query model); baseline:
    [n_tags] the lexical baseline's F1, named in each title, a dot on every cell above it.
    Diverging scales are centred on zero; others run from 0 to 1.
    """
    values = np.asarray(values, dtype=float)
    n_layers, n_heads, n_tags = values.shape
    if len(tags) != n_tags:
        raise ValueError(f"{len(tags)} tag names for {n_tags} tag columns")
    panel_w, panel_h = PANEL_INCH * n_heads + 0.45, PANEL_INCH * n_layers + 0.55
    rows, cols = grid_shape(n_tags, panel_aspect=panel_h / panel_w)
    fig = new_figure(cols * panel_w + 1.2, rows * panel_h + 0.7)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False))
    norm = diverging_norm(values) if diverging else Normalize(0.0, 1.0)
    cmap = DIVERGING if diverging else SEQUENTIAL
    image = None
    for k, tag in enumerate(tags):
        ax = axes.ravel()[k]
        row, col = divmod(k, cols)
        label = tag if support is None else f"{tag} (n={int(support[k])})"
        if baseline is not None:
            label += f"\nlex {baseline[k]:.2f}"
            _dot_above(ax, values[:, :, k], baseline[k])
        bottom = row == rows - 1 or k + cols >= n_tags
        image = heatmap(ax, values[:, :, k], norm, cmap,
                        xlabel=HEAD_AXIS_NAMES[head_axis] if bottom else "",
                        ylabel="layer" if col == 0 else "")
        ax.set_title(label, fontsize=7, pad=2)
        _layer_ticks(ax, layers, n_layers, n_heads, max_ticks=4)
        ax.tick_params(labelsize=6, length=2, pad=1)
        ax.xaxis.label.set_fontsize(7)
        ax.yaxis.label.set_fontsize(7)
        if not bottom:
            ax.set_xticklabels([])
        if col != 0:
            ax.set_yticklabels([])
    hide_unused(axes, n_tags)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.5, aspect=30, label=value_label)
    fig.suptitle(title)
    return fig


Panel = tuple[np.ndarray, Normalize, str, str, str]   # grid, norm, cmap, bar label, title


def _row_panels(site: str, name: str, cell: tuple[int, int], f1: np.ndarray,
                controls: Mapping[str, np.ndarray], sel: np.ndarray | None,
                sel_control: str | None, centred: Normalize | None, ci: str,
                lexical: float | None = None) -> list[Panel]:
    """The panels of one site's row: its F1 grid, each control's F1, selectivity."""
    unit = Normalize(0.0, 1.0)
    lex = "" if lexical is None else f"\nlexical baseline {lexical:.2f} (dots: above it)"
    panels = [(f1, unit, SEQUENTIAL, "F1",
               f"{site}: F1, best {name} = {f1[cell]:.2f}{ci}{lex}")]
    panels += [(grid, unit, SEQUENTIAL, "F1", f"{site}: control, {what}\n"
                f"({name} = {grid[cell]:.2f})") for what, grid in controls.items()]
    if sel is not None:
        panels.append((sel, centred, DIVERGING, "F1 minus control F1",
                       f"{site}: selectivity vs {sel_control}\n({name} = {sel[cell]:+.2f})"))
    return panels


def _draw_row(axes: np.ndarray, panels: list[Panel], cell: tuple[int, int], width: int,
              head_axis: str, layers: Sequence[int] | None) -> list:
    """Draw one site's panels, cut at its ``width`` heads, the best cell boxed; the images."""
    images = []
    for ax, (grid, norm, cmap, _, title) in zip(axes, panels, strict=False):
        images.append(heatmap(ax, grid[:, :width], norm, cmap, xlabel=HEAD_AXIS_NAMES[head_axis],
                              ylabel="layer", title=title))
        ax.title.set_fontsize(8)
        _layer_ticks(ax, layers, grid.shape[0], width, max_ticks=16)
        mark_cell(ax, *cell)
    return images


def draw_tag_detail(f1: np.ndarray, controls: Mapping[str, np.ndarray], sites: Sequence[str],
                    tag: str, support: int | None = None, sel: np.ndarray | None = None,
                    sel_control: str | None = None, layers: Sequence[int] | None = None,
                    interval: tuple[np.ndarray, np.ndarray] | None = None,
                    site_heads: Sequence[int] | None = None,
                    head_axes: Sequence[str] | None = None,
                    lexical: float | None = None) -> Figure:
    """One tag in full: per site (row), its F1 grid, each control's F1 grid and selectivity.

    f1: [n_sites, n_layers, n_heads]; controls: name -> F1 of that control, same shape
    (e.g. {"shuffled labels": ..., "random model": ...}); sel: selectivity, same shape
    (default: f1 minus the first control), sel_control names its control; interval:
    (low, high) bootstrap bounds of f1, shown for the best head; site_heads: [n_sites]
    heads of each site (its row is cut there; default all); head_axes: [n_sites] 'head'
    or 'kv_head'; lexical: the lexical baseline's F1 for the tag (a line on the F1
    colour bar, a dot on every F1 cell above it). The best head of each site's F1 grid is
    boxed on every panel of its row.
    """
    f1 = np.asarray(f1, dtype=float)
    n_sites, n_layers, n_heads = f1.shape
    controls = {k: np.asarray(v, dtype=float) for k, v in controls.items()}
    if sel is None and controls:
        sel_control = sel_control or next(iter(controls))
        sel = selectivity(f1, next(iter(controls.values())))
    n_panels = 1 + len(controls) + (sel is not None)
    # one row per site; a single site with four panels is drawn 2 x 2 (less wide)
    rows, cols = (2, 2) if n_sites == 1 and n_panels == 4 else (n_sites, n_panels)
    # wide enough for the two-line panel titles however few heads there are
    panel_width = max(0.24 * n_heads + 1.5, 3.0)
    fig = new_figure(cols * panel_width + 0.3, rows * (0.24 * n_layers + 1.1) + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).reshape(n_sites, n_panels)
    centred = diverging_norm(sel) if sel is not None else None
    site_heads = list(site_heads or [n_heads] * n_sites)
    head_axes = list(head_axes or ["head"] * n_sites)
    for s, site in enumerate(sites):
        cell = best_head(f1[s, :, :site_heads[s]])
        label = kv_head_label if head_axes[s] == "kv_head" else head_label
        name = label(layers[cell[0]] if layers is not None else cell[0], cell[1])
        ci = ("" if interval is None else
              f" [{interval[0][s][cell]:.2f}, {interval[1][s][cell]:.2f}]")
        panels = _row_panels(site, name, cell, f1[s], {k: v[s] for k, v in controls.items()},
                             None if sel is None else sel[s], sel_control, centred, ci,
                             lexical)
        images = _draw_row(axes[s], panels, cell, site_heads[s], head_axes[s], layers)
        n_f1 = 1 + len(controls)  # F1 and controls share one 0..1 scale and colour bar
        f1_axes = axes[s, :n_f1] if rows == n_sites else axes[s, :cols]  # 2 x 2: top row
        bar = fig.colorbar(images[0], ax=f1_axes.tolist(), shrink=0.9,
                           label="F1" if lexical is None else "F1 (line: lexical baseline)")
        if lexical is not None:
            bar.ax.axhline(lexical, color="black", linewidth=1.5)
            _dot_above(axes.ravel()[s * n_panels] if rows == n_sites else axes[0, 0],
                       f1[s, :, :site_heads[s]], lexical)
        if sel is not None:
            fig.colorbar(images[-1], ax=axes[s, -1], shrink=0.9, label=panels[-1][3])
    suffix = "" if support is None else f" (n={int(support)} test tokens)"
    fig.suptitle(f"Probes for tag {tag}{suffix}; box: best head by F1")
    return fig


def draw_cell_grids(panels: Mapping[str, np.ndarray], sites: Sequence[str], title: str,
                    value_label: str, diverging: bool = False,
                    layers: Sequence[int] | None = None,
                    head_axes: Sequence[str] | None = None) -> Figure:
    """Per-probe values side by side: a row per site, a layer x head panel per entry of
    ``panels`` (name -> [n_sites, n_layers, n_heads]; padding cells NaN), one colour scale
    for all (centred on zero when ``diverging``, else from the smallest to the largest
    value); each panel's best head is boxed and named in its title. head_axes: [n_sites]
    'head' or 'kv_head' (key/value heads of a grouped-query model)."""
    grids = {name: np.asarray(v, dtype=float) for name, v in panels.items()}
    n_sites, n_layers, n_heads = next(iter(grids.values())).shape
    every = np.stack(list(grids.values()))
    if diverging:
        norm, cmap = diverging_norm(every), DIVERGING
    else:
        norm, cmap = Normalize(float(np.nanmin(every)), float(np.nanmax(every))), SEQUENTIAL
    fig = new_figure(len(grids) * (0.24 * n_heads + 1.5) + 0.8,
                     n_sites * (0.24 * n_layers + 1.1) + 0.6)
    axes = fig.subplots(n_sites, len(grids), squeeze=False)
    image = None
    head_axes = list(head_axes or ["head"] * n_sites)
    for s, site in enumerate(sites):
        name_of = kv_head_label if head_axes[s] == "kv_head" else head_label
        for c, (name, grid) in enumerate(grids.items()):
            layer, head = best_head(grid[s])
            label = name_of(layers[layer] if layers is not None else layer, head)
            image = heatmap(axes[s, c], grid[s], norm, cmap, xlabel="head", ylabel="layer",
                            title=f"{site}: {name}\n(best {label} = {grid[s, layer, head]:.2f})")
            axes[s, c].title.set_fontsize(8)
            _layer_ticks(axes[s, c], layers, n_layers, n_heads, max_ticks=16)
            mark_cell(axes[s, c], layer, head)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=value_label)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- planning


def f1_of(res: ProbeResults) -> np.ndarray:
    """The F1 grid [S, L, H, K]; a UsageError naming the directory when it is absent."""
    if "f1" not in res.arrays:
        raise UsageError(f"{res.path} lacks array 'f1' (probe results)")
    return res.arrays["f1"].astype(float)


def lexical_of(res: ProbeResults) -> np.ndarray | None:
    """The lexical baseline's F1 per tag [K] (the same in every cell), or None."""
    lexical = res.arrays.get("f1_lexical")
    return None if lexical is None else lexical.reshape(-1, lexical.shape[-1])[0]


def support_of(res: ProbeResults) -> np.ndarray | None:
    """Test tokens per tag [K] (the same in every cell), or None."""
    support = res.arrays.get("support")
    return None if support is None else support.reshape(-1, support.shape[-1])[0]


def controls_of(res: ProbeResults) -> dict[str, np.ndarray]:
    """Control array name -> its F1 [S, L, H, K], for the controls that were run."""
    return {name: res.arrays[name].astype(float) for name in PROBE_CONTROLS
            if name in res.arrays}


def selectivity_of(res: ProbeResults) -> tuple[np.ndarray | None, str]:
    """Selectivity [S, L, H, K] against the strongest control fitted per cell the results
    hold (random weights, else the control task, else shuffled labels) and its name."""
    control = strongest_control(res.controls)
    if control is None:
        return None, ""
    return res.selectivity(control).astype(float), PROBE_CONTROLS.get(
        f"f1_{array_suffix(control)}", (control, control))[1]


def probe_inputs(res: ProbeResults) -> list[Path]:
    return sorted(p for p in Path(res.path).rglob("*") if p.is_file()
                  and p.name != "manifest.json")


@register("probes_<site>", PROBES,
          "F1 per tag, layer x head small multiples, one figure per site (probes_keys, "
          "probes_queries), with _shuffled and _random (control probes) and _selectivity "
          "companions when the controls were run")
def plan_probe_grids(res: ProbeResults) -> list[Planned]:
    f1, support = f1_of(res), support_of(res)
    tags, layers = list(res.tags), list(res.layers)
    sel, sel_control = selectivity_of(res)
    inputs = probe_inputs(res)
    # Tags without test tokens have no score; they are left out and named in the title.
    shown = np.arange(len(tags)) if support is None else np.flatnonzero(support > 0)
    shown_tags = [tags[k] for k in shown]
    missing = sorted(set(tags) - set(shown_tags), key=tags.index)
    dropped = f"\n(no test tokens, not shown: {' '.join(missing)})" if missing else ""

    lexical = lexical_of(res)

    def grid(values: np.ndarray, title: str, label: str, diverging: bool = False,
             baseline: bool = False) -> Callable[[], Figure]:
        # one site's [L, H, K]: cut at the site's heads (keys of grouped-query models)
        cut = values[:, :res.site_heads[s], shown]
        lex = None if lexical is None or not baseline else lexical[shown]
        return lambda axis=res.head_axes[s]: draw_tag_grids(
            cut, shown_tags, title + dropped, label, diverging=diverging, layers=layers,
            support=None if support is None else support[shown], head_axis=axis,
            baseline=lex)

    planned = []
    for s, site in enumerate(res.sites):
        name, what = "probes_" + SITE_NAMES.get(site, site), SITE_NAMES.get(site, site)
        lex = "" if lexical is None else "; lex: lexical baseline, dots: cells above it"
        planned.append(Planned(name, grid(f1[s], f"F1 of probes on {what} (test split{lex})",
                                          "F1", baseline=True), inputs))
        for array, control in controls_of(res).items():
            suffix, label = PROBE_CONTROLS[array]
            planned.append(Planned(f"{name}_{suffix}", grid(
                control[s], f"F1 of control probes on {what}: {label}", f"F1, {label}"),
                inputs))
        if sel is not None:
            planned.append(Planned(f"{name}_selectivity", grid(
                sel[s], f"Selectivity of probes on {what}: F1 minus F1 with {sel_control}",
                "selectivity", diverging=True), inputs))
    return planned


@register("f1:<TAG>", PROBES,
          "one tag in full: per site its F1 grid, control grids and selectivity, best head "
          "boxed (e.g. --only f1:VBD; 'f1' selects every tag)")
def plan_probe_tags(res: ProbeResults) -> list[Planned]:
    f1, support = f1_of(res), support_of(res)
    sites = [SITE_NAMES.get(s, s) for s in res.sites]
    controls = controls_of(res)
    sel, sel_control = selectivity_of(res)
    lexical = lexical_of(res)
    bounds = ((res.arrays["f1_lo"], res.arrays["f1_hi"])
              if "f1_lo" in res.arrays and "f1_hi" in res.arrays else None)
    inputs = probe_inputs(res)
    planned = []
    for k, tag in enumerate(res.tags):
        if support is not None and support[k] <= 0:
            continue

        def draw(k: int = k, tag: str = tag) -> Figure:
            return draw_tag_detail(
                f1[..., k], {PROBE_CONTROLS[a][1]: c[..., k] for a, c in controls.items()},
                sites, tag, None if support is None else int(support[k]),
                sel=None if sel is None else sel[..., k], sel_control=sel_control,
                layers=list(res.layers),
                interval=None if bounds is None else (bounds[0][..., k], bounds[1][..., k]),
                site_heads=res.site_heads, head_axes=res.head_axes,
                lexical=None if lexical is None else float(lexical[k]))

        planned.append(Planned(f"f1:{tag}", draw, inputs))
    return planned


@register("probes_selectivity", PROBES,
          "selectivity of each probe as Hewitt & Liang define it: accuracy minus the "
          "accuracy of each control that was run (control task, shuffled labels, random "
          "model, majority tag), layer x head per site, best head boxed")
def plan_cell_selectivity(res: ProbeResults) -> list[Planned]:
    accuracy = res.arrays.get("accuracy")
    controls = {label: res.arrays[name] for name, label in ACCURACY_CONTROLS.items()
                if name in res.arrays}
    if accuracy is None or not controls:
        raise NotPlanned(f"{res.path} holds no control accuracy (fitted without controls)")
    panels = {f"minus {label}": accuracy - control for label, control in controls.items()}
    sites = [SITE_NAMES.get(s, s) for s in res.sites]
    return [Planned("probes_selectivity", lambda: draw_cell_grids(
        panels, sites, "Selectivity of each probe: test accuracy minus the control's",
        "accuracy minus control accuracy", diverging=True, layers=list(res.layers),
        head_axes=res.head_axes),
        probe_inputs(res))]


@register("probes_compression", PROBES,
          "MDL compression of each probe (uniform / online code length of the train tags), "
          "beside the randomly initialised model's and the control task's (fit --mdl)")
def plan_compression(res: ProbeResults) -> list[Planned]:
    panels = {label: res.arrays[name] for name, label in COMPRESSIONS.items()
              if name in res.arrays}
    if not panels:
        raise NotPlanned(f"{res.path} holds no MDL results (fitted without MDL)")
    sites = [SITE_NAMES.get(s, s) for s in res.sites]
    return [Planned("probes_compression", lambda: draw_cell_grids(
        panels, sites, "MDL compression of each probe: uniform / online code length "
        f"({float(res.arrays['uniform_codelength']):.0f} bits uniform)",
        "compression", layers=list(res.layers), head_axes=res.head_axes), probe_inputs(res))]
