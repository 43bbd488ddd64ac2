"""A tokenizer from a short specification: a directory or hub name, ``char`` or ``bpe:N``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headprobe.errors import UsageError, opt
from headprobe.tokenization import load_tokenizer
from headprobe.tokenization.bpe import train_bpe
from headprobe.tokenization.char import char_tokenizer

MIN_BPE_VOCAB = 260   # the 256 byte symbols, the special token and a few merges


def tokenizer_from_spec(spec: Any, texts: Sequence[str] | None,
                        extra_tokens: Sequence[str] = ()) -> Any:
    """A tokenizer from ``spec``: a tokenizer object (returned as it is), a directory or hub
    name, ``"char"`` (one token per character of ``texts``) or ``"bpe:VOCAB"`` (a byte-level
    BPE trained on ``texts``). ``extra_tokens`` become whole tokens of a trained tokenizer."""
    if not isinstance(spec, str):
        return spec
    if spec == "char":
        if texts is None:
            raise UsageError("a char tokenizer needs training texts")
        return char_tokenizer(texts, extra_tokens)
    if spec.startswith("bpe:"):
        try:
            vocab = int(spec[4:])
        except ValueError as exc:
            raise UsageError(f"{opt('tokenizer')} {spec!r}: expected bpe:VOCAB_SIZE, "
                             "e.g. bpe:4096") from exc
        if texts is None or vocab < MIN_BPE_VOCAB:
            raise UsageError(f"{opt('tokenizer')} {spec!r} needs texts and a vocabulary of "
                             f">= {MIN_BPE_VOCAB}")
        return train_bpe(texts, vocab, extra_tokens=extra_tokens)
    return load_tokenizer(spec)
