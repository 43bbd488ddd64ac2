"""Session fixtures of the case-study tests: the shared model booted once, a store with head
activity, and a tiny attention-only model trained on repeated random tokens."""

import hashlib
import inspect
import json
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# BOS + seq_len distinct random tokens + the same tokens again, as the study generates them.
# The repeat offset is fixed, so a model may learn to attend by relative position from
# layer 0 on; either way it needs a head on the induction diagonal to predict the repeat.
INDUCTION = dict(vocab=96, seq_len=20, layers=2, heads=4, d_model=64, steps=300, lr=3e-3,
                 batch=32, seed=0)


def induction_sampler(vocab: int, seq_len: int):
    """``sample(gen, batch) -> ids [batch, 1 + 2 seq_len]``: BOS, random half, same half."""

    def sample(gen: torch.Generator, batch: int) -> torch.Tensor:
        half = torch.argsort(torch.rand(batch, vocab - 1, generator=gen), dim=1)[:, :seq_len] + 1
        return torch.cat([torch.zeros(batch, 1, dtype=torch.long), half, half], dim=1)

    return sample


def _training_sources() -> list[Path]:
    """Source files of the training code: the module that defines ``train_model``, every
    module under extract/ whose path names training, and the tokenizers."""
    from extract.train import train_model

    extract_dir = REPO / "extract"
    files = {Path(inspect.getsourcefile(train_model)).resolve()}
    files |= {p.resolve() for p in extract_dir.rglob("*.py")
              if "train" in p.relative_to(extract_dir).as_posix()}
    files |= {p.resolve() for p in (REPO / "headprobe" / "tokenization").rglob("*.py")}
    return sorted(files)


def _cache_dir(settings: dict) -> Path:
    """Where the model trained with ``settings`` by the current training code is cached."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in _training_sources():
        name = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        digest.update(name.as_posix().encode() + b"\0" + path.read_bytes())
    key = digest.hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "headprobe-test-cache" / f"induction-{key}"


@pytest.fixture(scope="session")
def induction_model_dir() -> Path:
    """HF directory of a 2-layer attention-only model that predicts repeated tokens.

    Trained once (well under a minute on one free core) and cached in the temp directory.
    """
    from extract.train import train_model

    out = _cache_dir(INDUCTION)
    if (out / "config.json").is_file():
        return out
    cfg = dict(INDUCTION)
    sample = induction_sampler(cfg.pop("vocab"), cfg.pop("seq_len"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest
    try:
        train_model(sample, out, vocab_size=INDUCTION["vocab"], ctx=1 + 2 * INDUCTION["seq_len"],
                    arch="attn-only", progress=False, overwrite=True, log_every=100,
                    ckpt_every=10**6, **cfg)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def induction_model(induction_model_dir):
    from extract.models import load_model

    return load_model(str(induction_model_dir))


@pytest.fixture(scope="session")
def study_model(shared_model):
    """The shared TinyStories model booted as a TransformerBridge (compatibility mode)."""
    from extract.models import load_model

    return load_model(str(shared_model))


@pytest.fixture(scope="session")
def studies_store(shared_store) -> Path:
    """A store of the 40 shared stories with sites key, query and activity (``shared_store``)."""
    return shared_store
