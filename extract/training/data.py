"""What a training run learns from: corpora, token streams and batch samplers.

A run takes texts (tokenized into one stream, every text prefixed with BOS), token-id
sequences (already starting with BOS), or a sampler ``sample(gen, batch)`` that makes
batches itself. Texts and sequences are sampled as random windows of ``ctx + 1`` tokens
cut from the stream. Corpora are read like the dataset stage reads them
(:func:`datasets_build.sources.open_source`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datasets_build.sources import collect_stories, open_source
from extract.training.config import TrainConfig
from extract.training.repeats import repeat_pool, with_repeats
from headprobe.errors import UsageError, opt
from headprobe.tokenization import bos_id
from headprobe.tokenization.char import id_tokenizer
from headprobe.tokenization.spec import tokenizer_from_spec

BatchFn = Callable[[torch.Generator, int], Any]
MIN_TEXTS_FOR_EVAL = 20
MAX_EVAL_TEXTS = 200


@dataclass
class TrainingData:
    """A run's data, ready to sample.

    sample: ``sample(gen, batch)`` -> ids [batch, seq] or (ids, loss_mask [batch, seq - 1]);
    stream: the training tokens [n_tokens] (None for a sampler); eval_stream: held-out
    tokens [n_eval] or None; tokenizer: saved with the model; short_sample: the same as
    ``sample`` on windows of ``ctx // 2`` tokens, for the run's ``short_steps`` (else None).
    """

    sample: BatchFn
    stream: np.ndarray | None
    eval_stream: np.ndarray | None
    tokenizer: Any
    short_sample: BatchFn | None = None


def read_corpus(source: str) -> tuple[list[str], list[str]]:
    """(texts, chat sender names) of a corpus SOURCE.

    SOURCE is anything the dataset stage reads (:mod:`datasets_build.sources`): a ``.txt``
    file of stories, ``chat:PATH``, ``chatgen:N``, ``demo:N``, ... Stories are stripped
    and empty ones dropped, as in a dataset. A chat is cut into stories of whole messages
    and names its senders; other sources have none.
    """
    corpus = open_source(source)
    texts, _ = collect_stories(corpus)
    return texts, list(corpus.info.get("senders", []))


def encode_stream(texts: Sequence[str], tok: Any) -> np.ndarray:
    """BOS + tokens of each text, concatenated: token ids [n_tokens]."""
    bos = bos_id(tok)
    if bos is None:
        raise UsageError("the tokenizer has neither a BOS nor an EOS token to start stories with")
    parts = []
    for text in texts:
        parts.append([bos])
        parts.append(tok(text, add_special_tokens=False)["input_ids"])
    return np.fromiter((i for p in parts for i in p), dtype=np.int64)


def stream_sampler(stream: np.ndarray, ctx: int) -> BatchFn:
    """Random windows of ctx + 1 tokens from ``stream``: a ``sample(gen, batch)``."""
    data = torch.from_numpy(stream)
    if len(data) < ctx + 2:
        raise UsageError(f"the corpus has {len(data)} tokens, fewer than one window of "
                         f"{ctx + 1}; lower {opt('ctx')} or give more text")

    def sample(gen: torch.Generator, batch: int) -> torch.Tensor:
        starts = torch.randint(0, len(data) - ctx, (batch,), generator=gen)
        return torch.stack([data[s:s + ctx + 1] for s in starts.tolist()])

    return sample


def text_sampler(stream: np.ndarray, tok: Any, cfg: TrainConfig, ctx: int | None = None
                 ) -> BatchFn:
    """Random windows of ``ctx`` (default ``cfg.ctx``) tokens of ``stream``, with repeated
    segments mixed in when the run asks."""
    sample = stream_sampler(stream, cfg.ctx if ctx is None else ctx)
    if cfg.repeat_frac > 0:
        sample = with_repeats(sample, cfg, repeat_pool(tok, cfg.vocab_size), bos_id(tok) or 0)
    return sample


def split_batch(value: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A sampler's batch as (ids [batch, seq], loss_mask [batch, seq - 1] or None)."""
    if isinstance(value, tuple):
        ids, mask = value
        return torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(mask, dtype=torch.bool)
    return torch.as_tensor(value, dtype=torch.long), None


def split_eval(texts: list[str], cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): the last ``eval_fraction`` of 20 texts or more."""
    n_eval = int(len(texts) * cfg.eval_fraction) if len(texts) >= MIN_TEXTS_FOR_EVAL else 0
    n_eval = min(n_eval, MAX_EVAL_TEXTS)
    return texts[:len(texts) - n_eval], texts[len(texts) - n_eval:]


def _from_sampler(sample: BatchFn, tokenizer: Any, cfg: TrainConfig) -> TrainingData:
    if cfg.vocab_size <= 0 and tokenizer is None:
        raise UsageError(f"give {opt('vocab_size')} when training from a batch sampler")
    for name in ("repeat_frac", "short_steps"):
        if getattr(cfg, name) > 0:
            raise UsageError(f"{opt(name)} acts on windows of texts or token ids; a batch "
                             "sampler makes its own batches")
    tok = tokenizer_from_spec(tokenizer, None) if tokenizer is not None else None
    if cfg.vocab_size <= 0:
        cfg.vocab_size = len(tok)
    return TrainingData(sample, None, None, tok if tok is not None else id_tokenizer(
        cfg.vocab_size))


def _from_ids(sequences: list[Sequence[int]], tokenizer: Any, cfg: TrainConfig) -> TrainingData:
    stream = np.fromiter((int(i) for seq in sequences for i in seq), dtype=np.int64)
    if cfg.vocab_size <= 0:
        cfg.vocab_size = int(stream.max()) + 1
    tok = (tokenizer_from_spec(tokenizer, None) if tokenizer is not None
           else id_tokenizer(cfg.vocab_size))
    return stream_data(stream, None, tok, cfg)


def _from_texts(texts: list[str], tokenizer: Any, cfg: TrainConfig,
                extra_tokens: Sequence[str], eval_texts: Sequence[str] | None) -> TrainingData:
    if tokenizer is None:
        raise UsageError(f"training on texts needs a {opt('tokenizer')} (a directory, 'char' "
                         "or 'bpe:N')")
    if eval_texts is None:
        texts, eval_texts = split_eval(texts, cfg)
    tok = tokenizer_from_spec(tokenizer, texts, extra_tokens)
    cfg.vocab_size = cfg.vocab_size or len(tok)
    if cfg.vocab_size < len(tok):
        raise UsageError(f"{opt('vocab_size')} {cfg.vocab_size} is smaller than the tokenizer "
                         f"({len(tok)})")
    stream = encode_stream(texts, tok)
    eval_stream = encode_stream(list(eval_texts), tok) if eval_texts else None
    return stream_data(stream, eval_stream, tok, cfg)


def stream_data(stream: np.ndarray, eval_stream: np.ndarray | None, tok: Any,
                cfg: TrainConfig) -> TrainingData:
    """TrainingData sampling windows of ``stream`` [n_tokens] (and half-length windows
    when the run ends with ``short_steps``)."""
    short = text_sampler(stream, tok, cfg, cfg.ctx // 2) if cfg.short_steps else None
    return TrainingData(text_sampler(stream, tok, cfg), stream, eval_stream, tok, short)


def prepare_data(data: Sequence[str] | Sequence[Sequence[int]] | BatchFn, tokenizer: Any,
                 cfg: TrainConfig, extra_tokens: Sequence[str] = (),
                 eval_texts: Sequence[str] | None = None) -> TrainingData:
    """The run's :class:`TrainingData`; sets ``cfg.vocab_size`` when it is 0.

    data: texts (with ``tokenizer``: object, directory, "char" or "bpe:VOCAB"), token-id
    sequences, or a sampler; eval_texts: held-out texts (default: the last few texts).
    """
    if callable(data):
        prepared = _from_sampler(data, tokenizer, cfg)
    else:
        data = list(data)
        if not data:
            raise UsageError("no training data")
        prepared = (_from_texts(data, tokenizer, cfg, extra_tokens, eval_texts)
                    if isinstance(data[0], str) else _from_ids(data, tokenizer, cfg))
    if cfg.vocab_size <= 0:
        raise UsageError(f"{opt('vocab_size')} is needed when training without a tokenizer")
    return prepared
