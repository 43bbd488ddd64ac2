"""``--batch-tokens auto`` off CUDA: the fastest of a few batch sizes, by a short trial.

On a CPU the best number of padded tokens per forward pass depends on its caches and
cores more than on memory, so it is measured: the first stories of the store (about
TRIAL_TOKENS tokens) go through the extractor's own batching, forward and copies once per
candidate after a warm-up, and the candidate with the least wall time is used. Its
timings are kept in the store's ``batch_tokens_trial`` attribute, the chosen value in
``batch_tokens``. A resumed store keeps the value it was started with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import h5py

from extract.extractor import Extractor
from extract.options import ExtractOptions
from extract.store.integrity import resumable_rows
from headprobe.stories import Story

CANDIDATES = (512, 1024, 2048)
TRIAL_TOKENS = 2 * max(CANDIDATES)   # so that the largest candidate fills its batches


def trial_sample(stories: Sequence[Story], tokens: int = TRIAL_TOKENS) -> list[Story]:
    """The first stories, up to about ``tokens`` tokens (one story at least)."""
    sample: list[Story] = []
    total = 0
    for story in stories:
        if sample and total + story.n_tokens > tokens:
            break
        sample.append(story)
        total += story.n_tokens
    return sample


def time_candidates(forward: Any, stories: Sequence[Story], dtype: str,
                    candidates: Sequence[int] = CANDIDATES) -> dict[int, float]:
    """Wall seconds of the extractor's forward and copies over ``stories`` at each candidate
    batch size (padded tokens), after one untimed warm-up pass."""
    Extractor(forward, candidates[0], dtype).run_group(stories[:1])
    seconds = {}
    for tokens in candidates:
        start = time.perf_counter()
        Extractor(forward, tokens, dtype).run_group(stories)
        seconds[int(tokens)] = round(time.perf_counter() - start, 4)
    return seconds


def _started_with(options: ExtractOptions) -> tuple[int, dict] | None:
    """(batch_tokens, trial) of the unfinished store a resume continues, if any."""
    if not (options.resume and resumable_rows(options.partial)):
        return None
    from extract.store.json_attrs import decode_attrs

    with h5py.File(options.partial, "r") as file:
        attrs = decode_attrs(file.attrs)
    return int(attrs["batch_tokens"]), dict(attrs.get("batch_tokens_trial") or {})


def choose_batch_tokens(options: ExtractOptions, forward: Any, stories: Sequence[Story]
                        ) -> dict[int, float]:
    """Set ``options.batch_tokens`` to the fastest candidate on ``stories`` (or to what a
    resumed store was started with); return the trial's seconds per candidate."""
    started = _started_with(options)
    if started is not None:
        options.batch_tokens, trial = started
        return trial
    trial = time_candidates(forward, trial_sample(stories), options.dtype)
    options.batch_tokens = int(min(trial, key=trial.__getitem__))
    return trial
