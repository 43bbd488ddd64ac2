"""Session fixtures: small tagged datasets built through the Python API."""

from pathlib import Path

import pytest

from datasets_build.build import build_dataset


@pytest.fixture(scope="session")
def shared_dataset(tmp_path_factory, valid_text, shared_model) -> Path:
    """First 40 stories of valid-3117.txt, tokenized for the shared model; 25% test, seed 0."""
    out = tmp_path_factory.mktemp("shared_dataset") / "dataset"
    return build_dataset(str(valid_text), str(shared_model), out, limit=40,
                         test_fraction=0.25, seed=0)


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory, shared_model) -> Path:
    """30 synthetic demo stories, tokenized for the shared model; 20% test, seed 0."""
    out = tmp_path_factory.mktemp("demo_dataset") / "dataset"
    return build_dataset("demo:30", str(shared_model), out)
