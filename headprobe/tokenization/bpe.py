"""Training small byte-level BPE tokenizers, and caching them by corpus.

``train_bpe(texts)`` returns a fast tokenizer that ``AutoTokenizer`` can save and reload;
``cached_bpe(texts)`` trains once per (corpus, settings) and keeps the result under the
cache directory (``$HEADPROBE_CACHE``, else ``~/.cache/headprobe``) in ``bpe/<key>/``.
Like the shared TinyStories model's tokenizer, ``<|endoftext|>`` is id 0 and serves as
BOS and EOS.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence, Sized
from pathlib import Path
from typing import Any

from headprobe.atomic import atomic_dir

SPECIAL = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 2048
CACHE_FORMAT = "headprobe-bpe-1"


def cache_root() -> Path:
    """``$HEADPROBE_CACHE`` or ``~/.cache/headprobe``."""
    return Path(os.environ.get("HEADPROBE_CACHE") or Path.home() / ".cache" / "headprobe")


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE,
              min_frequency: int = 2, extra_tokens: Sequence[str] = ()) -> Any:
    """Train a byte-level BPE on ``texts`` (read once, as a stream); returns a transformers
    fast tokenizer.

    The vocabulary holds the 256 byte symbols, ``<|endoftext|>`` (id 0) and up to
    ``vocab_size`` entries in all; a small corpus may give fewer. ``extra_tokens`` are
    added after training, each one token wherever it occurs.
    """
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[SPECIAL], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer=trainer,
                            length=len(texts) if isinstance(texts, Sized) else None)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=SPECIAL, eos_token=SPECIAL,
                                  unk_token=SPECIAL)
    if extra_tokens:
        tok.add_tokens([AddedToken(t, normalized=False) for t in dict.fromkeys(extra_tokens)])
    return tok


def corpus_key(texts: Iterable[str], vocab_size: int, min_frequency: int) -> str:
    """Hash of the corpus and training settings: the cache entry's name."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{vocab_size}|{min_frequency}|".encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def cached_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE,
               min_frequency: int = 2, cache_dir: str | Path | None = None) -> Path:
    """Directory of the BPE trained on ``texts`` (trained and saved on first use).

    ``texts`` is read twice, for the key and for training: a list, or a stream that starts
    again when iterated again (:class:`datasets_build.sources.StoryStream`); neither pass
    holds the texts together.
    """
    root = Path(cache_dir) if cache_dir else cache_root()
    path = root / "bpe" / corpus_key(texts, vocab_size, min_frequency)
    if (path / "tokenizer.json").is_file():
        return path
    tok = train_bpe(texts, vocab_size, min_frequency)
    # overwrite=True: a concurrent run may have saved the same tokenizer meanwhile
    with atomic_dir(path, overwrite=True) as tmp:
        tok.save_pretrained(str(tmp))
    return path
