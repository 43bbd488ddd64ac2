"""Character-level and plain-id tokenizers saved in Hugging Face fast-tokenizer format.

Both are ``tokenizers.Tokenizer`` objects wrapped as a transformers fast tokenizer, so
they save to ``tokenizer.json``, load with ``AutoTokenizer.from_pretrained`` and give
character offsets like any BPE tokenizer. Id 0 is ``<|endoftext|>`` (BOS and EOS).

* :func:`char_tokenizer` - one token per character seen in the training texts, plus
  optional whole-word tokens (chat senders, say) that are matched before the split
  into characters.
* :func:`id_tokenizer` - tokens ``t1 .. t{V-1}`` for models trained on synthetic
  token-id sequences, so such a model still has a tokenizer to load with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

BOS = "<|endoftext|>"
UNK = "<unk>"


def _wrap(tok: Any, unk: str | None) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS,
                                   unk_token=unk)


def char_tokenizer(texts: Iterable[str], extra_tokens: Sequence[str] = ()) -> Any:
    """A fast tokenizer with one token per distinct character of ``texts``.

    Ids: 0 ``<|endoftext|>``, 1 ``<unk>`` (characters never seen), then the characters
    in sorted order, then ``extra_tokens`` (each one token wherever it occurs in a text).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    chars.discard(BOS)
    vocab = {BOS: 0, UNK: 1}
    for ch in sorted(chars):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # [\s\S] rather than "." so that newlines are characters too.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(BOS, special=True, normalized=False)])
    extras = [t for t in dict.fromkeys(extra_tokens) if t]
    if extras:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in extras])
    return _wrap(tok, UNK)


def id_tokenizer(vocab_size: int) -> Any:
    """A tokenizer whose token ``i`` is the word ``t{i}`` (0 is ``<|endoftext|>``)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {BOS: 0, **{f"t{i}": i for i in range(1, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=BOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens([AddedToken(BOS, special=True, normalized=False)])
    return _wrap(tok, None)
