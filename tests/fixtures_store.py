"""Session fixtures: activation stores extracted through the Python API."""

from pathlib import Path

import pytest

from datasets_build.sources import read_separated
from datasets_build.untagged import write_untagged_dataset
from extract.extractor import extract_store
from headprobe.tokenization import load_tokenizer


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory, shared_dataset, shared_model) -> Path:
    """``shared_dataset`` (40 stories) through the shared model: all splits,
    sites key/query/activity, float32."""
    out = tmp_path_factory.mktemp("shared_store") / "activations.h5"
    return extract_store(shared_dataset, str(shared_model), out, split="all",
                         sites=("key", "query", "activity"), dtype="float32")


@pytest.fixture(scope="session")
def untagged_dataset(tmp_path_factory, valid_text, shared_model) -> Path:
    """12 stories of valid-3117.txt tokenized for the shared model, no tags (cheap to build)."""
    texts = [t.strip() for t, _ in zip(read_separated(valid_text), range(12), strict=False)]
    out = tmp_path_factory.mktemp("untagged_dataset") / "dataset"
    return write_untagged_dataset(out, texts, load_tokenizer(str(shared_model)), test_every=4)
