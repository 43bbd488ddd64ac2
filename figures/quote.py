"""Figures of the ``quote`` study: quotation heads, and the best one on the example story."""

from __future__ import annotations

from figures.heads import draw_head_grids
from figures.registry import Planned, register
from figures.sources import best_head
from figures.traces import draw_activity_trace, draw_attention_pattern
from probing.studies import quote as study
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
    if study.ATTN_TO_OPEN in st:
        grids.append(st[study.ATTN_TO_OPEN])
        names.append("attention to the opening quote")
        scales.append("unit")
    title = f"Quotation heads ({st.meta.get('n_stories', '?')} stories with quotations)"
    return [Planned("quote_heads", lambda: draw_head_grids(grids, names, title, scales),
                    [st.file])]


@register("quote_activity", study.STUDY,
          "activity of the best quotation head along the example story, quoted spans shaded",
          needs=(study.EXAMPLE_ACTIVITY, study.EXAMPLE_QUOTED))
def plan_quote_activity(st: StudyResults) -> list[Planned]:
    tokens, head = example_tokens(st), best_head(st)
    activity, quoted = st[study.EXAMPLE_ACTIVITY], st[study.EXAMPLE_QUOTED]
    title = f"Activity of {head} on story {st.meta.get('example_story_id', '?')}"
    return [Planned("quote_activity", lambda: draw_activity_trace(
        tokens, activity, head, shaded=quoted, shaded_label="inside a quotation", title=title),
        [st.file])]


@register("quote_attention", study.STUDY,
          "attention pattern (destination x source) of the best quotation head, example story",
          needs=(study.EXAMPLE_PATTERN,))
def plan_quote_attention(st: StudyResults) -> list[Planned]:
    tokens, head = example_tokens(st), best_head(st)
    pattern = st[study.EXAMPLE_PATTERN]
    return [Planned("quote_attention", lambda: draw_attention_pattern(pattern, tokens, head),
                    [st.file])]
