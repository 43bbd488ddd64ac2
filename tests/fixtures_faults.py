"""Fixtures that simulate a hostile world: a nearly full disk, a read-only directory, another
process writing the same output."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_DISK = 2 << 20
# A writer in another process: takes the lock of argv[1], says so, holds it until stdin closes.
HOLD = ("import sys\nfrom headprobe.locks import output_lock\n"
        "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()\n")


def hold_lock(path: Path) -> subprocess.Popen:
    """A second process that owns output ``path`` until its stdin is closed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _used(disk: Path) -> int:
    return sum(p.stat().st_size for p in disk.rglob("*") if p.is_file())


@pytest.fixture
def tiny_disk(tmp_path, monkeypatch) -> Path:
    """A directory on a 2 MiB file system: a real tmpfs where this user may mount one, else
    a plain directory where the free-space check sees 2 MiB less what the directory holds."""
    disk = tmp_path / "tiny"
    disk.mkdir()
    if os.geteuid() == 0 and _mount("-t", "tmpfs", "-o", f"size={TINY_DISK}", "tmpfs", str(disk)):
        yield disk
        subprocess.run(["umount", "-l", str(disk)], check=True)
        return
    import headprobe.space

    monkeypatch.setattr(headprobe.space, "free_bytes", lambda path: TINY_DISK - _used(disk))
    yield disk


def fill(disk: Path, leave: int) -> None:
    """Fill ``tiny_disk`` until about ``leave`` bytes are free."""
    import shutil

    free = shutil.disk_usage(disk).free if os.path.ismount(disk) else TINY_DISK - _used(disk)
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


def tiny_disk_is_real(disk: Path) -> bool:
    """Whether ``tiny_disk`` is a real small file system (not a patched free-space check)."""
    return os.path.ismount(disk)


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A directory nobody may write into: a read-only bind mount for root (who ignores mode
    bits), mode 0555 for anyone else."""
    ro = tmp_path / "read-only"
    ro.mkdir()
    (ro / "kept.txt").write_text("already here")
    if os.geteuid() == 0:
        if not (_mount("--bind", str(ro), str(ro))
                and _mount("-o", "remount,bind,ro", str(ro))):
            pytest.skip("root cannot make a read-only bind mount here")
        yield ro
        subprocess.run(["umount", "-l", str(ro)], check=True)
        return
    ro.chmod(0o555)
    yield ro
    ro.chmod(0o755)
