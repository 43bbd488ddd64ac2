"""Session fixtures of the case-study tests: the shared model booted once, a store with head
activity, the induction organism and a model that predicts repeats by a fixed offset."""

import hashlib
import inspect
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# The old organism of the repeated study: BOS + seq_len distinct random tokens + the same
# tokens again, always at the same offset. It predicts the repeat with layer-0 heads that
# attend seq_len - 1 tokens back (no previous-token head, no composition): the negative
# control of the circuit tests.
FIXED_OFFSET = dict(vocab=96, seq_len=20, layers=2, heads=4, d_model=64, steps=300, lr=3e-3,
                    batch=32, seed=0)


def fixed_offset_sampler(vocab: int, seq_len: int):
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


def _cache_dir(name: str, settings: dict) -> Path:
    """Where the model ``name`` trained with ``settings`` by the current training code is
    cached."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in _training_sources():
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        digest.update(rel.as_posix().encode() + b"\0" + path.read_bytes())
    key = digest.hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "headprobe-test-cache" / f"{name}-{key}"


@contextmanager
def one_thread():
    """Tiny matrices: one thread is fastest (and leaves the other core to other work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def recipe_model_dir(shared_dir: Path, recipe) -> Path:
    """HF directory of ``python -m extract train --recipe NAME`` (seed 0, one thread) on
    the shared assets, trained once per (recipe, training code) and cached in the temp
    directory."""
    from extract.train import read_corpus, train_model

    settings = {"corpus": recipe.corpus, "tokenizer": recipe.tokenizer, **recipe.settings}
    out = _cache_dir(recipe.name, settings)
    if (out / "config.json").is_file():
        return out
    texts, _ = read_corpus(str(shared_dir / recipe.corpus))
    with one_thread():
        train_model(texts, out, recipe.tokenizer_spec(), progress=False, overwrite=True,
                    ckpt_every=10**6, info={"recipe": recipe.name}, **recipe.settings)
    return out


@pytest.fixture(scope="session")
def induction_model_dir(shared_dir) -> Path:
    """The GPT-Neo induction organism, ``--recipe induction-local``
    (:data:`extract.training.recipes.INDUCTION_LOCAL`), whose layer 0 has a window of 2."""
    from extract.training.recipes import INDUCTION_LOCAL

    return recipe_model_dir(shared_dir, INDUCTION_LOCAL)


@pytest.fixture(scope="session")
def rotary_induction_model_dir(shared_dir) -> Path:
    """The rotary induction organism, ``--recipe induction``
    (:data:`extract.training.recipes.INDUCTION`): every layer attends to the whole context."""
    from extract.training.recipes import INDUCTION

    return recipe_model_dir(shared_dir, INDUCTION)


@pytest.fixture(scope="session")
def fixed_offset_model_dir() -> Path:
    """HF directory of the fixed-offset model (``FIXED_OFFSET``), cached like the organism."""
    from extract.train import train_model

    out = _cache_dir("fixed-offset", FIXED_OFFSET)
    if (out / "config.json").is_file():
        return out
    cfg = dict(FIXED_OFFSET)
    sample = fixed_offset_sampler(cfg.pop("vocab"), cfg.pop("seq_len"))
    with one_thread():
        train_model(sample, out, vocab_size=FIXED_OFFSET["vocab"],
                    ctx=1 + 2 * FIXED_OFFSET["seq_len"], arch="attn-only", progress=False,
                    overwrite=True, log_every=100, ckpt_every=10**6, **cfg)
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
