"""Ray engines in one line: an address nobody answers at fails at once, and a run says which
cluster it runs on."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from headprobe import cluster
from headprobe.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_nobody_answers_at_is_refused_before_ray_tries():
    address = f"127.0.0.1:{unused_port()}"
    with pytest.raises(UsageError, match="cannot reach the Ray cluster at .*connection refused"):
        cluster.check_reachable(address, timeout=2)
    cluster.check_reachable("auto")             # nothing to check before Ray looks it up


def test_probing_fit_on_an_unreachable_cluster_is_one_line(probing_store, tmp_path):
    pytest.importorskip("ray")
    cmd = [sys.executable, "-m", "probing", "fit", "--store", str(probing_store),
           "--out", str(tmp_path / "probes"), "--layers", "0", "--sites", "key",
           "--ray", f"127.0.0.1:{unused_port()}"]
    # Ray's own retries took 25 s and 20 lines; the bound only stops a hang
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "cannot reach the Ray cluster at '127.0.0.1:" in errors[0], \
        proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "probes").exists()


def test_a_ray_run_says_once_which_cluster_it_runs_on(ray_cluster, monkeypatch):
    monkeypatch.setattr(cluster, "_ANNOUNCED", False)
    lines: list[str] = []
    cluster.connect("local:2", log=lines.append)
    cluster.connect("local:2", log=lines.append)
    assert len(lines) == 1, lines
    assert lines[0].startswith("Ray cluster ") and "1 node, 2 CPUs, 0 GPUs" in lines[0], lines
