"""Loading tokenizers and fingerprinting their vocabularies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from headprobe.errors import UsageError
from headprobe.hub import resolve_pretrained

PROBE_TEXT = "Once upon a time, a cat sat."


def load_tokenizer(name: str) -> Any:
    """Load a fast tokenizer (hub name or local dir); refuse ones without offsets."""
    from transformers import AutoTokenizer

    source = resolve_pretrained(name, "tokenizer", example="../shared/tokenizers/gpt2")
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises bare Exception
        raise UsageError(f"cannot load tokenizer {name!r}: {_whole_reason(exc)}") from exc
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"tokenizer {name!r} has no offsets support (it is not a fast tokenizer)")
    check_vocabulary(tok, name)
    return tok


def _whole_reason(exc: BaseException) -> str:
    """An exception's message on one line, all of it (libraries spread theirs over several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def check_vocabulary(tok: Any, name: str) -> None:
    """Refuse a tokenizer that cannot tokenize: no token besides its special ones, or no
    token for a plain sentence (a model directory without tokenizer files loads as one)."""
    specials = set(tok.all_special_tokens)
    if (all(token in specials for token in tok.get_vocab())
            or not tok(PROBE_TEXT, add_special_tokens=False)["input_ids"]):
        raise UsageError(f"tokenizer {name!r} has no vocabulary (no tokenizer.json or vocabulary "
                         "files); give a directory or hub name that holds a tokenizer")


def vocab_hash(tok: Any) -> str:
    """sha256 over the sorted (token, id) pairs: equal hashes mean equal vocabularies."""
    return _mapping_hash(tok.get_vocab())


def _mapping_hash(vocab: dict[str, int]) -> str:
    items = sorted(vocab.items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def has_vocabulary(name: str, expected: str) -> bool:
    """Whether the tokenizer of ``name`` (hub name or local dir) has the vocabulary whose
    :func:`vocab_hash` is ``expected``.

    A local ``tokenizer.json`` is read first with the tokenizers library alone, which takes
    a fraction of loading the whole tokenizer; only when that does not give ``expected``
    (no such file, or tokens the tokenizer's other files add) is the tokenizer loaded.
    """
    path = Path(name).expanduser() / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        try:
            quick = Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
        except Exception:  # noqa: BLE001 - a file it cannot read: the full load says why
            quick = None
        if quick is not None and _mapping_hash(quick) == expected:
            return True
    return vocab_hash(load_tokenizer(name)) == expected


def bos_id(tok: Any) -> int | None:
    """The id prepended to every story (BOS, else EOS as GPT-2 style models do)."""
    if tok.bos_token_id is not None:
        return int(tok.bos_token_id)
    return None if tok.eos_token_id is None else int(tok.eos_token_id)
