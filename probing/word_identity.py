"""Whether a probe's score for a tag goes beyond word identity, said in words.

Word identity is the lexical baseline (probing.controls, ``lexical``): each test token
gets the most frequent training tag of its token id. On the ambiguous test tokens (their
token id carries two or more tags in training) word identity cannot decide, so there a
probe that beats the baseline reads more than the token id. A cell is "beyond word
identity" only when the lower end of the bootstrap 95% interval of its F1 minus the
baseline's F1 on those tokens (``lexical_gain_lo``) is above :data:`MIN_GAIN_LOW`.
"""

from __future__ import annotations

import math

MIN_GAIN_LOW = 0.0   # the interval's lower end must exceed this


def beyond_word_identity(row: dict) -> bool:
    """Whether the cell ``row`` (a row of probing.top.top_cells) beats the lexical
    baseline on the ambiguous tokens with an interval that excludes 0."""
    low = row.get("lexical_gain_lo", math.nan)
    return row.get("support_ambiguous", 0) > 0 and low > MIN_GAIN_LOW


def _comparison(row: dict) -> str:
    """'on N ambiguous test tokens F1 a vs lexical baseline b (+d, 95% interval l..h)'."""
    text = (f"on {row['support_ambiguous']} ambiguous test tokens probe F1 "
            f"{row['f1_ambiguous']:.2f} vs lexical baseline {row['f1_lexical_ambiguous']:.2f}"
            f" ({row['lexical_gain']:+.2f}")
    if "lexical_gain_lo" in row:
        text += f", 95% interval {row['lexical_gain_lo']:+.2f}..{row['lexical_gain_hi']:+.2f}"
    return text + ")"


def verdict(row: dict) -> str:
    """The cell's verdict in words: "beyond word identity: ..." only when
    :func:`beyond_word_identity` holds, else what the comparison does show."""
    if "lexical_gain" not in row:
        return "word identity not measured (no lexical baseline; fit with the defaults)"
    if row.get("support_ambiguous", 0) <= 0:
        return ("not beyond word identity: no ambiguous test token of this tag (its token "
                f"ids carry one tag in training); probe F1 {row['f1']:.2f} vs lexical "
                f"baseline {row['f1_lexical']:.2f}")
    if beyond_word_identity(row):
        return f"beyond word identity: {_comparison(row)}"
    if "lexical_gain_lo" not in row:
        return f"not beyond word identity: no interval (fit without --no-intervals); " \
               f"{_comparison(row)}"
    if row["lexical_gain_hi"] < 0:
        return f"not beyond word identity, below it: {_comparison(row)}"
    return f"not beyond word identity: {_comparison(row)}"
