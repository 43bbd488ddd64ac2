"""Session fixtures of the probing tests: the shared store and a probe grid fitted on it."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def probing_store(shared_store) -> Path:
    """The store of the 40 shared stories with the shared model (``shared_store``)."""
    return shared_store


@pytest.fixture(scope="session")
def probing_results(tmp_path_factory, shared_store) -> Path:
    """``probing fit`` on the shared store: key and query of layers 0 and 2, fast solver."""
    from probing.__main__ import main

    out = tmp_path_factory.mktemp("probing_results") / "probes"
    assert main(["fit", "--store", str(shared_store), "--out", str(out), "--layers", "0,2",
                 "--bootstrap", "200"]) == 0
    return out


@pytest.fixture(scope="session")
def quote_study(tmp_path_factory, shared_store) -> Path:
    """``probing quote --no-model`` on the shared store (activity statistics only)."""
    from headprobe.cli import run_main
    from probing.__main__ import main

    out = tmp_path_factory.mktemp("quote_study") / "quote"
    assert run_main(main, ["quote", "--store", str(shared_store), "--no-model",
                           "--out", str(out)]) == 0
    return out
