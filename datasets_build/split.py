"""Story-level train/test split: every story, with all its tokens, is on one side only."""

from __future__ import annotations

import numpy as np

from headprobe.errors import UsageError, opt


def check_test_fraction(test_fraction: float) -> float:
    """Refuse fractions outside [0, 1)."""
    if not 0.0 <= test_fraction < 1.0:
        raise UsageError(f"{opt('test_fraction')} must be in [0, 1), got {test_fraction}")
    return float(test_fraction)


def n_test_stories(n_stories: int, test_fraction: float) -> int:
    """round(n * fraction), but at least one test and one train story when both can exist."""
    n_test = int(round(n_stories * check_test_fraction(test_fraction)))
    if test_fraction > 0 and n_stories >= 2:
        n_test = min(max(n_test, 1), n_stories - 1)
    return n_test


def split_stories(n_stories: int, test_fraction: float, seed: int) -> np.ndarray:
    """Split codes int8 [n_stories]: 0 train, 1 test; the same for the same arguments.

    Exactly ``n_test_stories(n_stories, test_fraction)`` stories, drawn uniformly with
    ``numpy.random.default_rng(seed)``, are test stories.
    """
    codes = np.zeros(n_stories, dtype=np.int8)
    test = np.random.default_rng(seed).permutation(n_stories)[:n_test_stories(n_stories,
                                                                             test_fraction)]
    codes[test] = 1
    return codes
