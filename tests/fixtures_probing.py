"""Session fixtures of the probing tests: the shared store and a probe grid fitted on it."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def probing_store(request, tmp_path_factory, shared_dataset, shared_model) -> Path:
    """The store of the 40 shared stories with the shared model (``shared_store`` if defined)."""
    try:
        return Path(request.getfixturevalue("shared_store"))
    except pytest.FixtureLookupError:
        from extract.extractor import extract_store

        out = tmp_path_factory.mktemp("probing_store") / "activations.h5"
        return extract_store(shared_dataset, str(shared_model), out, sites=("key", "query"))


@pytest.fixture(scope="session")
def probing_results(tmp_path_factory, probing_store) -> Path:
    """``probing fit`` on the shared store: key and query of layers 0 and 2, fast solver."""
    from probing.__main__ import main

    out = tmp_path_factory.mktemp("probing_results") / "probes"
    assert main(["fit", "--store", str(probing_store), "--out", str(out), "--layers", "0,2",
                 "--bootstrap", "200"]) == 0
    return out
