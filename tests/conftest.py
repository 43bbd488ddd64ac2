"""Shared test fixtures: where the shared assets live, offline Hugging Face."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEADPROBE_SHARED", REPO.parent / "shared"))

pytest_plugins = ["tests.fixtures_figures", "tests.fixtures_dataset", "tests.fixtures_organisms",
                  "tests.fixtures_probing", "tests.fixtures_studies", "tests.fixtures_store",
                  "tests.fixtures_faults",
                  "tests.fixtures_families", "tests.fixtures_cluster"]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped, with the reason shown, where CUDA is not available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.fail(f"shared asset {path} is missing; set HEADPROBE_SHARED to the shared folder")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def shared_model() -> Path:
    """The small GPT-Neo trained on TinyStories (HF directory)."""
    return _shared("models/tinystories-8L")


@pytest.fixture(scope="session")
def gpt2_tokenizer() -> Path:
    return _shared("tokenizers/gpt2")


@pytest.fixture(scope="session")
def valid_text() -> Path:
    """3,117 TinyStories stories separated by <|endoftext|>."""
    return _shared("data/tinystories/valid-3117.txt")
