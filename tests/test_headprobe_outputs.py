"""Outputs every stage shares: one writer per output, ordinary permissions, one-line failures."""

import errno
import json
import os
import signal

import pytest

from headprobe.atomic import atomic_dir, atomic_file, check_target
from headprobe.cli import run_main
from headprobe.errors import UsageError
from headprobe.failures import failure_line, reading
from headprobe.locks import claim_output, lock_path, output_lock, release_claims
from headprobe.space import require_free_space
from tests.fixtures_faults import hold_lock


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path):
    out = tmp_path / "result"
    holder = hold_lock(out)
    try:
        with pytest.raises(UsageError, match=f"another process \\(pid {holder.pid}\\)"):
            with output_lock(out):
                pass
        assert lock_path(out).read_text().strip() == str(holder.pid)
    finally:
        holder.stdin.close()
        holder.wait()
    assert not lock_path(out).exists()          # the owner removes its lock file
    with output_lock(out), output_lock(out):     # free now, and re-entrant in one process
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists() and not out.exists()


def test_a_lock_left_by_a_killed_writer_is_taken_over(tmp_path):
    out = tmp_path / "result.h5"
    holder = hold_lock(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(out).read_text().strip() == str(holder.pid)     # stale lock file
    with output_lock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists()


def test_claims_last_until_released_and_run_main_releases_them(tmp_path):
    out = tmp_path / "figures"

    def main(argv):
        claim_output(out)
        assert lock_path(out).exists()
        raise UsageError("bad input")

    assert run_main(main, []) == 2
    assert not lock_path(out).exists()
    claim_output(out)
    release_claims()
    assert not lock_path(out).exists()


def test_outputs_get_ordinary_permissions_under_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        for mask, file_mode, dir_mode in ((0o022, 0o644, 0o755), (0o077, 0o600, 0o700)):
            os.umask(mask)
            with atomic_file(tmp_path / f"f{mask}.txt") as tmp:
                tmp.write_text("x")
            with atomic_dir(tmp_path / f"d{mask}") as tmp:
                (tmp / "inside.json").write_text("{}")
            assert (tmp_path / f"f{mask}.txt").stat().st_mode & 0o777 == file_mode
            assert (tmp_path / f"d{mask}").stat().st_mode & 0o777 == dir_mode
    finally:
        os.umask(previous)


def test_an_output_of_the_other_kind_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(UsageError, match="is a directory, but the output written there is a "
                                         "file"):
        with atomic_file(tmp_path / "dir", overwrite=True):
            pass
    with pytest.raises(UsageError, match="is a file, but the output written there is a dir"):
        check_target(tmp_path / "file", True, "directory")
    assert (tmp_path / "file").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


def test_a_write_failure_without_a_file_name_names_the_output(tmp_path):
    for context in (atomic_file, atomic_dir):
        target = tmp_path / f"out-{context.__name__}"
        with pytest.raises(OSError) as err, context(target):
            raise OSError(errno.ENOSPC, "No space left on device")   # what write() raises
        assert failure_line(err.value).startswith(f"cannot use {target}: No space left"), \
            failure_line(err.value)
        assert not target.exists()


def test_file_system_and_decoding_failures_are_one_line(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.h5"))
    assert failure_line(full) == (f"cannot use {tmp_path / 'x.h5'}: No space left on device; "
                                  "the disk is full; free some space or write somewhere else")
    assert "permission denied" in failure_line(PermissionError(errno.EACCES, "Permission denied",
                                                               "/root/x"))
    assert failure_line(KeyError("x")) is None          # a bug, not a file: traceback
    with pytest.raises(UnicodeDecodeError) as err:
        b"\xff".decode("utf-8")
    assert failure_line(err.value).startswith("cannot read a file: 'utf-8' codec")
    with pytest.raises(UsageError, match=r"cannot read manifest .*m.json: Expecting .*; "
                                         "write it again"):
        with reading(tmp_path / "m.json", "manifest", "write it again"):
            json.loads("{")


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    import headprobe.space

    monkeypatch.setattr(headprobe.space, "free_bytes", lambda path: 3 << 20)
    require_free_space(tmp_path / "a", 1 << 20)
    with pytest.raises(UsageError, match=r"not enough free space to write .*b\.h5: it needs "
                                         r"about 4\.2 MiB and 3\.0 MiB is free"):
        require_free_space(tmp_path / "tmp-b", 4 << 20, shown=tmp_path / "b.h5")
