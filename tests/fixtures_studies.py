"""Session fixtures of the case-study tests: the shared model booted once, a store with head
activity, and a tiny attention-only model trained on repeated random tokens."""

import hashlib
import json
import tempfile
from pathlib import Path

import pytest
import torch

# Training sequences: BOS, a prefix of 0..max_prefix fresh random tokens, then a segment of
# min_period..max_period random tokens repeated to the end of the window (no token twice
# within prefix + segment). Segment length and start vary per sequence, so no fixed
# positional offset finds the earlier copy: the model has to learn a previous-token head
# feeding an induction head. The loss counts only the tokens an induction circuit can
# predict (every repeated token but the first of the second copy).
INDUCTION = dict(vocab=64, ctx=48, min_period=4, max_period=20, max_prefix=8, layers=2, heads=4,
                 d_model=64, steps=3000, lr=3e-3, batch=32, seed=0)


def induction_sampler(vocab: int, ctx: int, min_period: int, max_period: int, max_prefix: int):
    """``sample(gen, batch) -> (ids [batch, ctx + 1], loss_mask [batch, ctx])``."""
    n = ctx + 1
    if vocab - 1 < n or 1 + 2 * max_period > n:
        raise ValueError("the window must hold two periods and fewer tokens than the vocabulary")
    pos = torch.arange(n)

    def sample(gen: torch.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        fresh = torch.argsort(torch.rand(batch, vocab - 1, generator=gen), dim=1)[:, :n] + 1
        fresh[:, 0] = 0
        period = torch.randint(min_period, max_period + 1, (batch,), generator=gen)
        room = torch.clamp(n - 1 - 2 * period, max=max_prefix)      # two full copies fit
        start = 1 + (torch.rand(batch, generator=gen) * (room + 1)).long()
        start, period = start[:, None], period[:, None]
        source = torch.where(pos >= start, start + (pos - start) % period, pos)
        ids = fresh.gather(1, source)
        mask = pos[:-1] >= start + period               # predicts a token after its copy
        return ids, mask

    return sample


def _cache_dir(settings: dict) -> Path:
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "headprobe-test-cache" / f"induction-{key}"


@pytest.fixture(scope="session")
def induction_model_dir() -> Path:
    """HF directory of a 2-layer attention-only model with an induction circuit.

    Trained once and cached in the temp directory (keyed by the settings).
    """
    from extract.train import train_model

    out = _cache_dir(INDUCTION)
    if (out / "config.json").is_file():
        return out
    cfg = dict(INDUCTION)
    sample = induction_sampler(*(cfg.pop(k) for k in ("vocab", "ctx", "min_period",
                                                         "max_period", "max_prefix")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest
    try:
        train_model(sample, out, vocab_size=INDUCTION["vocab"], ctx=INDUCTION["ctx"],
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
def studies_store(request, tmp_path_factory, shared_dataset, shared_model) -> Path:
    """A store of the 40 shared stories with sites key, query and activity."""
    from extract.store import open_store

    try:
        path = Path(request.getfixturevalue("shared_store"))
        with open_store(path) as store:
            if "activity" in store.sites:
                return path
    except pytest.FixtureLookupError:
        pass
    from extract.extractor import extract_store

    out = tmp_path_factory.mktemp("studies_store") / "activations.h5"
    return extract_store(shared_dataset, str(shared_model), out,
                         sites=("key", "query", "activity"))
