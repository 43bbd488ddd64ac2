"""Figures of the ``ablate`` study: per-tag loss change for the chosen heads against random
heads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from figures.plotting import new_figure
from figures.registry import Planned, register
from headprobe.heads import head_label
from probing.studies import ablation as study
from probing.study_io import StudyResults


def draw_ablation(tags: Sequence[str], ablated: np.ndarray, random: np.ndarray,
                  heads_label: str, title: str = "", counts: np.ndarray | None = None
                  ) -> Figure:
    """Per-tag loss change when ``heads_label`` are ablated, beside a random-head baseline.

    ablated: [n_tags] loss change (nats) on tokens of each tag; random: [n_draws, n_tags]
    loss change for random head sets of the same size (mean bar, 5-95 % whiskers), or
    [n_tags] when only the mean is known; counts: [n_tags] predicted tokens of each tag
    (shown in the tick labels). Tags are sorted by the excess over the baseline.
    """
    ablated = np.asarray(ablated, dtype=float)
    random = np.asarray(random, dtype=float)
    draws = random if random.ndim == 2 else random[None, :]
    mean = np.nanmean(draws, axis=0)
    order = np.argsort(-(ablated - mean), kind="stable")
    x = np.arange(len(tags))
    fig = new_figure(float(np.clip(0.35 * len(tags) + 2.5, 5.0, 20.0)), 4.0)
    ax = fig.subplots()
    ax.bar(x - 0.2, ablated[order], width=0.4, color="tab:red", label=f"ablated {heads_label}")
    yerr = None
    if draws.shape[0] > 1:
        lo, hi = np.nanpercentile(draws, [5, 95], axis=0)
        yerr = np.vstack([mean - lo, hi - mean])[:, order]
    label = (f"random heads (mean of {draws.shape[0]}, 5-95 %)" if draws.shape[0] > 1
             else "random heads")
    ax.bar(x + 0.2, mean[order], width=0.4, color="0.6", yerr=yerr, capsize=2, label=label)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(x)
    names = [str(t) if counts is None else f"{t} ({int(counts[i])})" for i, t in enumerate(tags)]
    ax.set_xticklabels([names[i] for i in order], rotation=90, fontsize=8)
    ax.set_xlabel("tag of the predicted token" + ("" if counts is None else " (tokens)"))
    ax.set_ylabel("loss change (nats)")
    ax.legend(fontsize=8)
    ax.set_title(title or f"Ablating {heads_label}")
    return fig


@register("ablation", study.STUDY,
          "per-tag loss change when the chosen heads are ablated, against random heads",
          needs=(study.TAGS, study.COUNT, study.ABLATED_DELTA, study.RANDOM_DELTA, study.HEADS))
def plan_ablation(st: StudyResults) -> list[Planned]:
    tags = [str(t) for t in st[study.TAGS]]
    heads = ", ".join(head_label(*h) for h in st[study.HEADS])
    mode = str(st.meta.get("mode", "zero"))
    title = (f"{mode.capitalize()}-ablation of {heads}: loss change on predicted tokens "
             f"by tag\n({st.meta.get('n_stories', '?')} {st.meta.get('split', '')} stories; "
             f"overall {st.meta.get('ablated_delta_all', float('nan')):+.3f} nats)")
    ablated, random, counts = st[study.ABLATED_DELTA], st[study.RANDOM_DELTA], st[study.COUNT]
    return [Planned("ablation", lambda: draw_ablation(tags, ablated, random, heads, title,
                                                      counts=counts), [st.file])]
