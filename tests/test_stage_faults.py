"""Hostile input and a hostile file system across the stages: one line, exit code 2, nothing
under a final name that was not there before."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from headprobe.cli import run_main
from tests.fixtures_faults import fill, tiny_disk_is_real

REPO = Path(__file__).resolve().parents[1]
PROGS = {"datasets_build": "python -m datasets_build", "extract": "python -m extract",
         "probing": "python -m probing", "figures": "python -m figures"}


def run(stage: str, *args) -> int:
    """``python -m <stage> ARGS`` in this process."""
    module = __import__(f"{stage}.__main__", fromlist=["main"])
    return run_main(module.main, [str(a) for a in args], prog=PROGS[stage])


def one_line_error(capsys) -> str:
    """The command's one error line (after any progress lines); no traceback."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert err.splitlines()[-1] == errors[0] and errors[0].startswith("python -m "), err
    return errors[0]


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_a_tokenizer_without_vocabulary_is_refused(valid_text, shared_model, tmp_path, capsys):
    bare = tmp_path / "weights-only"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(shared_model / name, bare / name)
    assert run("datasets_build", "--source", valid_text, "--tokenizer", bare, "--limit", "3",
               "--out", tmp_path / "ds") == 2
    assert "has no vocabulary" in one_line_error(capsys)
    assert listing(tmp_path) == ["weights-only"]


def test_text_sources_decode_strictly_unless_asked_to_replace(shared_model, tmp_path, capsys):
    txt = tmp_path / "stories.txt"
    txt.write_bytes(b"Tom had a red ball.\n<|endoftext|>\nSue saw a \xffbig dog.\n")
    jsonl = tmp_path / "stories.jsonl"
    jsonl.write_bytes(b'{"text": "Tom ran."}\n{"text": "Sue \xfe sat."}\n')
    for source, line in ((txt, 3), (jsonl, 2)):
        assert run("datasets_build", "--source", source, "--tokenizer", shared_model,
                   "--out", tmp_path / "ds") == 2
        err = one_line_error(capsys)
        assert f"{source} is not valid UTF-8 (line {line}" in err and "--decode-errors" in err
    assert listing(tmp_path) == ["stories.jsonl", "stories.txt"]
    assert run("datasets_build", "--source", txt, "--tokenizer", shared_model,
               "--decode-errors", "replace", "--out", tmp_path / "ds") == 0
    from datasets_build.dataset import load_tagged_dataset

    texts = load_tagged_dataset(tmp_path / "ds").story_table()["text"]
    assert texts == ["Tom had a red ball.", "Sue saw a \ufffdbig dog."]


def test_structure_tags_need_a_chat_log(valid_text, shared_model, tmp_path, capsys):
    for source in (valid_text, "demo:5"):
        assert run("datasets_build", "--source", source, "--tokenizer", shared_model,
                   "--tagset", "structure", "--out", tmp_path / "ds") == 2
        assert "--tagset structure tags the fields of a chat log" in one_line_error(capsys)
    assert listing(tmp_path) == []


def test_outputs_in_read_only_or_impossible_places_are_one_line(
        read_only_dir, shared_dataset, shared_model, probing_store, probing_results,
        tmp_path, capsys):
    calls = {
        "datasets_build": ["--source", "demo:3", "--tokenizer", shared_model],
        "extract": ["--dataset", shared_dataset, "--model", shared_model, "--split", "test"],
        "probing": ["fit", "--store", probing_store, "--layers", "0"],
        "figures": ["--results", probing_results],
    }
    for stage, args in calls.items():
        out = read_only_dir / ("act.h5" if stage == "extract" else "out")
        assert run(stage, *args, "--out", out) == 2, stage
        assert "cannot write" in one_line_error(capsys)
    assert run("figures", *calls["figures"], "--out", read_only_dir) == 2
    assert f"cannot write {read_only_dir}/" in one_line_error(capsys)
    assert listing(read_only_dir) == ["kept.txt"]
    for stage in ("datasets_build", "extract"):
        out = "/proc/headprobe-out" + (".h5" if stage == "extract" else "")
        assert run(stage, *calls[stage], "--out", out) == 2
        assert "cannot write /proc/headprobe-out" in one_line_error(capsys)


def test_overwrite_never_replaces_an_output_of_the_other_kind(shared_model, tmp_path, capsys):
    (tmp_path / "ds").write_text("not a dataset")
    assert run("datasets_build", "--source", "demo:3", "--tokenizer", shared_model,
               "--out", tmp_path / "ds", "--overwrite") == 2
    assert "is a file, but the output written there is a directory" in one_line_error(capsys)
    assert (tmp_path / "ds").read_text() == "not a dataset" and listing(tmp_path) == ["ds"]


def test_a_store_with_damaged_bytes_is_one_line_for_probing(probing_store, tmp_path, capsys):
    store = tmp_path / "act.h5"
    shutil.copy(probing_store, store)
    with h5py.File(store, "r") as f:
        info = f["keys"].id.get_chunk_info(0)         # layer 0, head 0, first rows
    with open(store, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(os.urandom(info.size))
    assert run("probing", "fit", "--store", store, "--out", tmp_path / "probes",
               "--layers", "0", "--sites", "key", "--bootstrap", "10") == 2
    line = one_line_error(capsys)
    assert f"{store}: rows 0-" in line and "of array keys" in line, line
    assert listing(tmp_path) == ["act.h5"]


FIT_ONE_LAYER = ["--layers", "0", "--sites", "key", "--bootstrap", "10"]


def test_probing_fit_on_a_full_disk_is_one_line(probing_store, tiny_disk, capsys):
    fill(tiny_disk, leave=128 << 10)
    assert run("probing", "fit", "--store", probing_store, "--out", tiny_disk / "probes",
               *FIT_ONE_LAYER) == 2
    assert "not enough free space to write" in one_line_error(capsys)
    assert listing(tiny_disk) == ["filler"]


# probing fit with the free-space check switched off, so that the disk fills while writing
UNCHECKED_FIT = ("import sys\nimport headprobe.hdf5\nfrom headprobe.cli import run_main\n"
                 "from probing.__main__ import main\n"
                 "headprobe.hdf5.require_free_space = lambda *args, **kwargs: None\n"
                 "sys.exit(run_main(main, sys.argv[1:], prog='python -m probing'))\n")


def test_a_disk_that_fills_while_probes_are_written_is_no_crash(probing_store, tiny_disk):
    if not tiny_disk_is_real(tiny_disk):
        pytest.skip("needs a real full file system (mounting a tmpfs needs root)")
    fill(tiny_disk, leave=32 << 10)
    got = subprocess.run(
        [sys.executable, "-c", UNCHECKED_FIT, "fit", "--store", str(probing_store), "--out",
         str(tiny_disk / "probes"), *FIT_ONE_LAYER],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert got.returncode == 2, got.stderr[-2000:]
    last = got.stderr.strip().splitlines()[-1]
    assert "Traceback" not in got.stderr and "No space left on device" in last, got.stderr
    assert f"cannot use {tiny_disk / 'probes'}" in last, last     # the file is named
    assert listing(tiny_disk) == ["filler"]


def test_patching_refuses_empty_prompts_and_damaged_weights(shared_model, tmp_path, capsys):
    assert run("probing", "patch", "--model", shared_model, "--clean", "", "--corrupt", " ",
               "--out", tmp_path / "patch") == 2
    assert "the --clean prompt is empty" in one_line_error(capsys)
    model = tmp_path / "model"
    shutil.copytree(shared_model, model)
    with open(model / "model.safetensors", "r+b") as f:
        f.truncate(50_000)
    assert run("probing", "patch", "--model", model, "--out", tmp_path / "patch") == 2
    assert "cannot load model" in one_line_error(capsys)
    assert listing(tmp_path) == ["model"]


def test_stage_outputs_get_ordinary_permissions(shared_dataset, probing_results):
    umask = os.umask(0)
    os.umask(umask)
    for path in (shared_dataset, probing_results, probing_results / "probes.h5",
                 shared_dataset / "manifest.json"):
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == want, path


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _catches_sigint(pid: int) -> bool:
    """Whether process ``pid`` has a SIGINT handler of its own (Python's, say)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return True


def _cpu_ticks(pid: int) -> int:
    """User plus system CPU time process ``pid`` has used, in clock ticks (0 once gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _workers_at_work(pid: int, n: int) -> bool:
    """Whether process ``pid`` has ``n`` children that left Ctrl-C to the default action
    and have started working (used CPU time of their own)."""
    children = _children(pid)
    return len(children) >= n and not any(_catches_sigint(c) for c in children) and all(
        _cpu_ticks(c) > 0 for c in children)


def _die_by_ctrl_c(send) -> None:
    send.close()
    os.kill(os.getpid(), signal.SIGINT)


def test_a_read_that_fails_before_the_own_ctrl_c_arrives_is_an_interrupt():
    """A worker killed by Ctrl-C closes its pipe; the main process's own SIGINT arrives a
    moment later: the failed read is reported as the interrupt, not as EOFError."""
    import multiprocessing
    import threading

    from headprobe.interrupts import with_workers
    ctx = multiprocessing.get_context("fork")
    own_ctrl_c = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))

    def start(late_ctrl_c: bool):
        recv, send = ctx.Pipe(False)
        worker = ctx.Process(target=_die_by_ctrl_c, args=(send,))
        worker.start()
        send.close()
        worker.join()
        assert worker.exitcode == -signal.SIGINT     # the worker took SIGINT's default action
        if late_ctrl_c:
            own_ctrl_c.start()
        yield recv.recv()

    try:
        with pytest.raises(KeyboardInterrupt):
            list(with_workers(lambda: start(True)))
    finally:
        own_ctrl_c.cancel()
    with pytest.raises(EOFError):   # without a Ctrl-C on its way the failure stays itself
        list(with_workers(lambda: start(False)))


def test_ctrl_c_with_worker_processes_is_one_line(valid_text, shared_model, tmp_path):
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("needs /proc/PID/task/PID/children to see the worker processes")
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-m", "datasets_build", "--source", str(valid_text), "--tokenizer",
         str(shared_model), "--limit", "2000", "--n-process", "2", "--out", str(out)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:   # wait until both workers work and leave Ctrl-C to the default action
        while proc.poll() is None and not _workers_at_work(proc.pid, 2):
            time.sleep(0.05)
        assert proc.poll() is None, "the command ended before its workers were seen"
        os.killpg(proc.pid, signal.SIGINT)             # what a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Warning" not in err, err
    assert err.strip().splitlines()[-1] == "python -m datasets_build: interrupted"
    assert listing(tmp_path) == []


def test_failed_commands_leave_no_empty_directories(tmp_path, shared_model, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    runs = tmp_path / "runs"
    assert run("probing", "fit", "--run", runs / "nope") == 2
    assert run("probing", "quote", f"--run={runs / 'x'}") == 2
    assert run("figures", "--run", runs / "y") == 2
    assert run("datasets_build", "--source", empty, "--tokenizer", shared_model,
               "--run", runs / "emptyds") == 2
    assert listing(tmp_path) == ["empty.txt"]
    (runs / "kept").mkdir(parents=True)             # there before: stays, even when empty
    assert run("probing", "quote", "--run", runs / "kept") == 2
    assert listing(runs) == ["kept"] and listing(runs / "kept") == []
    capsys.readouterr()


def test_a_model_directory_without_a_model_says_so(tmp_path, shared_dataset, capsys):
    folder = tmp_path / "notamodel"
    folder.mkdir()
    (folder / "notes.txt").write_text("weights elsewhere\n")
    for stage, args in (("probing", ("patch", "--out", tmp_path / "patch")),
                        ("probing", ("repeated", "--out", tmp_path / "rep")),
                        ("extract", ("--dataset", shared_dataset, "--out", tmp_path / "a.h5"))):
        assert run(stage, *args, "--model", folder) == 2
        line = one_line_error(capsys)
        assert f"{folder} holds no model: no config.json in it" in line, line
        assert "give a model directory or a hub name" in line
    assert listing(tmp_path) == ["notamodel"]
