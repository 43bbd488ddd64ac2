"""Session fixtures: tiny model organisms trained once per test session (seconds each)."""

import pytest

from datasets_build import chatlog

# A chat model small enough to train in well under a minute on two cores; it learns the
# timestamp format, not the ordering (the documented organism trains much longer).
TINY_CHAT = dict(layers=2, d_model=32, heads=4, ctx=64, batch=16, steps=150, lr=1e-2,
                 log_every=50, ckpt_every=1000)


@pytest.fixture(scope="session")
def chat_organism(tmp_path_factory):
    """Directory of a tiny character-level chat model with one token per sender."""
    from extract.train import train_model

    out = tmp_path_factory.mktemp("organisms") / "chat"
    texts = chatlog.chat_stories(chatlog.generate_chat(1500, seed=0), max_chars=60)
    train_model(texts, out, "char", extra_tokens=chatlog.sender_names(6), progress=False,
                **TINY_CHAT)
    return out
