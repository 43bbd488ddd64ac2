"""Figures of the ``tag-induction`` study: part-of-speech induction heads, and the best one on
the example story."""

from __future__ import annotations

from figures.heads import draw_head_grids
from figures.registry import Planned, register
from figures.sources import best_head
from figures.traces import draw_activity_trace, draw_attention_pattern
from probing.studies import tag_induction as study
from probing.study_io import StudyResults


def tag_name(st: StudyResults) -> str:
    """The studied tag(s) as one label: ``VBD`` or ``NN/NNS``."""
    before = st.meta.get("before", "tag")
    return "/".join(before) if isinstance(before, list) else str(before)


@register("tag_induction_heads", study.STUDY,
          "per head: attention to earlier tag tokens just before a tag token, its baseline "
          "and their difference (layer x head)",
          needs=(study.SCORE_BEFORE, study.SCORE_RANDOM, study.SCORE_DIFF))
def plan_tag_heads(st: StudyResults) -> list[Planned]:
    tag = tag_name(st)
    names = [f"attention to earlier {tag} (before {tag})", "the same at other positions",
             "difference"]
    grids = [st[study.SCORE_BEFORE], st[study.SCORE_RANDOM], st[study.SCORE_DIFF]]
    uniform = st.meta.get("uniform_score")
    title = (f"{tag} induction heads ({st.meta.get('n_before', '?')} positions before {tag}"
             + (f"; uniform attention would give {uniform:.3f})" if uniform is not None
                else ")"))
    return [Planned("tag_induction_heads", lambda: draw_head_grids(
        grids, names, title, ["unit", "unit", "diverging"]), [st.file])]


@register("tag_induction_activity", study.STUDY,
          "activity of the best tag-induction head along the example story, tag tokens shaded",
          needs=(study.EXAMPLE_TOKENS, study.EXAMPLE_ACTIVITY, study.EXAMPLE_IS_TAG))
def plan_tag_activity(st: StudyResults) -> list[Planned]:
    tokens, head, tag = list(st[study.EXAMPLE_TOKENS]), best_head(st), tag_name(st)
    activity, is_tag = st[study.EXAMPLE_ACTIVITY], st[study.EXAMPLE_IS_TAG]
    title = f"Activity of {head} before {tag} tokens (story {st.meta.get('example_story_id')})"
    return [Planned("tag_induction_activity", lambda: draw_activity_trace(
        tokens, activity, head, shaded=is_tag, shaded_label=f"{tag} token", title=title),
        [st.file])]


@register("tag_induction_attention", study.STUDY,
          "attention pattern of the best tag-induction head on the example story",
          needs=(study.EXAMPLE_TOKENS, study.EXAMPLE_PATTERN))
def plan_tag_attention(st: StudyResults) -> list[Planned]:
    tokens, head, tag = list(st[study.EXAMPLE_TOKENS]), best_head(st), tag_name(st)
    pattern, is_tag = st[study.EXAMPLE_PATTERN], st.get(study.EXAMPLE_IS_TAG)
    title = (f"Attention pattern of {head} on story {st.meta.get('example_story_id', '?')} "
             f"(predicting {tag}; {tag} tokens in red)")
    return [Planned("tag_induction_attention",
                    lambda: draw_attention_pattern(pattern, tokens, head, title, marks=is_tag,
                                                   marks_label=f"{tag} token"), [st.file])]
