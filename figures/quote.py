"""Figures of the ``quote`` study: quotation heads, the best one on the example story, and
where attention goes around the closing mark."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from figures.heads import draw_head_grids
from figures.plotting import new_figure
from figures.registry import Planned, register
from figures.sources import best_head, meta_entry
from figures.traces import draw_activity_trace, draw_attention_pattern
from headprobe.heads import head_label
from probing.studies import quote as study
from probing.studies.common import is_quote_mark
from probing.study_io import StudyResults


def example_tokens(st: StudyResults) -> list[str]:
    """Token texts of the example story, or its token ids where no text was stored."""
    tokens = st.get(study.EXAMPLE_TOKENS)
    return [str(t) for t in (st[study.EXAMPLE_IDS] if tokens is None else tokens)]


@register("quote_heads", study.STUDY,
          "per head: activity ratio inside/outside quotations, paired t and attention to the "
          "opening quotation mark (layer x head)", needs=(study.RATIO, study.T_STAT))
def plan_quote_heads(st: StudyResults) -> list[Planned]:
    grids = [st[study.RATIO], st[study.T_STAT]]
    names = ["activity ratio inside / outside quotes", "paired t (inside - outside)"]
    scales = ["auto", "diverging"]
    for array, name in ((study.ATTN_TO_OPEN, "attention to the opening quote"),
                        (study.ATTN_TO_CLOSE, "attention to the closing quote\nonce it appears")):
        if array in st:
            grids.append(st[array])
            names.append(name)
            scales.append("unit")
    title = f"Quotation heads ({study.with_quotations(st.meta)})"
    return [Planned("quote_heads", lambda: draw_head_grids(grids, names, title, scales),
                    [st.file])]


@register("quote_activity", study.STUDY,
          "activity of the best quotation head along the example story, quoted spans shaded",
          needs=(study.EXAMPLE_ACTIVITY, study.EXAMPLE_QUOTED))
def plan_quote_activity(st: StudyResults) -> list[Planned]:
    tokens, head = example_tokens(st), best_head(st)
    activity, quoted = st[study.EXAMPLE_ACTIVITY], st[study.EXAMPLE_QUOTED]
    closing = st.get(study.EXAMPLE_CLOSING)
    title = f"Activity of {head} on story {st.meta.get('example_story_id', '?')}"
    return [Planned("quote_activity", lambda: draw_activity_trace(
        tokens, activity, head, shaded=quoted, shaded_label="inside a quotation", title=title,
        marks=closing, marks_label="closing quotation mark"), [st.file])]


@register("quote_attention", study.STUDY,
          "attention pattern (destination x source) of the best quotation head, example story",
          needs=(study.EXAMPLE_PATTERN,))
def plan_quote_attention(st: StudyResults) -> list[Planned]:
    tokens, head = example_tokens(st), best_head(st)
    pattern = st[study.EXAMPLE_PATTERN]
    marks = quote_marks(st)
    focus = int(np.argmax(marks)) if marks.any() else 0
    title = (f"Attention pattern of {head} on story {st.meta.get('example_story_id', '?')}"
             " (quotation marks in red)")
    return [Planned("quote_attention", lambda: draw_attention_pattern(
        pattern, tokens, head, title, marks=marks, marks_label="quotation mark", focus=focus),
        [st.file])]


def quote_marks(st: StudyResults) -> np.ndarray:
    """[n_tok] bool: the example story's tokens holding a quotation mark (from the stored
    token texts; the closing marks alone where no text was stored)."""
    tokens = st.get(study.EXAMPLE_TOKENS)
    if tokens is not None:
        return np.array([is_quote_mark(str(t)) for t in tokens], dtype=bool)
    closing = st.get(study.EXAMPLE_CLOSING)
    n = len(st[study.EXAMPLE_IDS])
    return np.zeros(n, dtype=bool) if closing is None else np.asarray(closing, dtype=bool)


@register("quote_shift", study.STUDY,
          "attention to the opening and to the closing quotation mark along the tokens around "
          "the closing mark: the best quotation head and the head attending most to the "
          "closing mark", needs=(study.SHIFT_OFFSET, study.SHIFT_TO_OPEN, study.SHIFT_TO_CLOSE))
def plan_quote_shift(st: StudyResults) -> list[Planned]:
    heads = list(dict.fromkeys(tuple(meta_entry(st, key)) for key in ("best_head",
                                                                      "close_head")))
    offsets, to_open, to_close = (st[study.SHIFT_OFFSET], st[study.SHIFT_TO_OPEN],
                                  st[study.SHIFT_TO_CLOSE])
    title = (f"Attention around the closing quotation mark "
             f"({st.meta.get('n_closing', '?')} quotations)")
    return [Planned("quote_shift", lambda: draw_mark_shift(offsets, to_open, to_close, heads,
                                                           title), [st.file])]


def draw_mark_shift(offsets: np.ndarray, to_open: np.ndarray, to_close: np.ndarray,
                    heads: Sequence[tuple[int, int]], title: str = "") -> Figure:
    """Per head, its mean attention to the opening and to the closing mark of quotations
    from the tokens around the closing mark.

    offsets: [O] positions relative to the closing mark (0: the token holding it);
    to_open, to_close: [O, n_layers, n_heads] (NaN where undefined); heads: (layer, head)
    of each panel.
    """
    offsets = np.asarray(offsets)
    fig = new_figure(3.2 * len(heads) + 0.6, 3.0)
    axes = fig.subplots(1, len(heads), squeeze=False, sharey=True)[0]
    for ax, (layer, head) in zip(axes, heads, strict=True):
        ax.plot(offsets, to_open[:, layer, head], "o-", color="tab:blue",
                label="to the opening mark")
        ax.plot(offsets, to_close[:, layer, head], "s-", color="tab:red",
                label="to the closing mark")
        ax.axvline(0, color="0.6", lw=0.8, ls="--")
        ax.set_xticks(offsets)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("token position relative to the closing mark")
        ax.set_title(head_label(layer, head))
    axes[0].set_ylabel("mean attention")
    axes[-1].legend(loc="upper left", fontsize=8)
    fig.suptitle(title or "Attention around the closing quotation mark")
    return fig
