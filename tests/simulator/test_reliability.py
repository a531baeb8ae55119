"""Nothing lost, nothing half-trusted: exclusive run directories, checkpoint generations, divergence as a
recorded failure, disk trouble, and studies that survive killed processes."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dncsim.simulator.template import SupervisedPlugin  # Avalanche's plugin base, imported quietly
from dncsim.common import RunFailed
from dncsim.rundir import RunLock
from dncsim.simulator.cli import main
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.run import run
from tests.support.reliability import ROOT, StopAt, TINY, same_results, study_file, wait_for_progress


def tiny(**changes):
    return run_from_mapping({**TINY, **changes})


def config_file(tmp_path, **changes):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".dncsim.lock"}


# --- exclusive run directories ---------------------------------------------------------------------

def test_a_directory_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    cfg = config_file(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    holder = RunLock(out).acquire("dncsim run")             # another run holds it (another open file)
    try:
        assert main(["run", str(cfg), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{out} is in use by pid {os.getpid()} on " in err
        assert "(dncsim run)" in err and "since 20" in err
        assert sorted(p.name for p in out.iterdir()) == [".dncsim.lock"]       # nothing written
    finally:
        holder.release()
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    capsys.readouterr()
    with RunLock(out):
        assert main(["report", str(out)]) == 2
        assert "is in use by pid" in capsys.readouterr().err
        assert main(["report", str(out), "--out", str(tmp_path / "elsewhere")]) == 0   # reading is fine
    assert main(["report", str(out)]) == 0


def lock_holder(directory: Path) -> subprocess.Popen:
    """Another process that takes ``directory``'s run lock and holds it (for a minute, or until killed)."""
    code = ("import sys, time; from dncsim.rundir import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_dies_with_its_process(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    proc = lock_holder(out)
    with pytest.raises(Exception, match=f"in use by pid {proc.pid}"):
        RunLock(out).acquire()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    RunLock(out).acquire().release()                     # a stale lock never blocks a resume


def test_dying_is_read_from_the_kernel(tmp_path):
    from dncsim.rundir.lock import _dying
    assert not _dying(os.getpid()) and not _dying(2 ** 22 + 12345) and not _dying(None)
    child = subprocess.Popen(["true"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.time() + 30
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.time() < deadline:
        time.sleep(0.01)                                    # exited, not reaped yet: a zombie
    assert _dying(child.pid)
    child.wait()

    def fake(pid, sig_pending="0000000000000000", shared="0000000000000000", state="D", flags=4194560):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "status").write_text(f"Name:\tpython\nState:\t{state} (disk sleep)\n"
                                                    f"SigPnd:\t{sig_pending}\nShdPnd:\t{shared}\n")
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (a (b) c) {state} 1 1 1 0 -1 {flags} 0 0 0 0\n")
        return _dying(pid, proc=tmp_path)
    assert not fake(11)                                     # blocked in a write, nothing pending
    assert fake(12, shared="0000000000000100")              # SIGKILL (signal 9: bit 8) sent to the process
    assert fake(13, sig_pending="0000000000000100")
    assert not fake(14, shared="0000000000000200")          # SIGUSR1 (10) is not a death sentence
    assert fake(15, flags=4194560 | 0x4)                    # PF_EXITING: on its way out
    assert fake(16, state="Z", flags=0)


def test_a_lock_whose_holder_is_dying_is_waited_for(tmp_path, monkeypatch):
    import threading

    import dncsim.rundir.lock
    out = tmp_path / "run"
    out.mkdir()
    holder = lock_holder(out)
    monkeypatch.setattr(dncsim.rundir.lock, "_dying", lambda pid, proc=None: pid == holder.pid)   # as if killed
    monkeypatch.setattr(dncsim.rundir.lock, "DYING_HOLDER_WAIT", 0.3)
    start = time.monotonic()
    with pytest.raises(Exception, match=f"in use by pid {holder.pid} .*, which was killed and has not exited yet"):
        RunLock(out).acquire()                              # it did not exit in time
    assert time.monotonic() - start >= 0.3
    monkeypatch.setattr(dncsim.rundir.lock, "DYING_HOLDER_WAIT", 60.0)
    threading.Timer(0.5, os.kill, (holder.pid, signal.SIGKILL)).start()
    start = time.monotonic()
    RunLock(out).acquire().release()                        # waited until the holder was gone
    assert time.monotonic() - start >= 0.4
    holder.wait()


# --- checkpoint generations ---------------------------------------------------------------------------

def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif how == "zero-fill":
        path.write_bytes(bytes(len(data)))
    else:                                               # one bit flipped in the middle
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run(tiny(), tmp_path_factory.mktemp("whole") / "run", quiet=True)


@pytest.mark.parametrize("how", ["truncate", "zero-fill", "bit-flip"])
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_generation(tmp_path, uninterrupted, how, capsys):
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run(tiny(), out, quiet=True, plugins=[StopAt(2)])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["experiences_done"] == 2
    assert [(g["file"], g["experiences_done"]) for g in manifest["checkpoints"]] == [
        ("checkpoint.pt", 2), ("checkpoint.previous.pt", 1)]
    damage(out / "checkpoint.pt", how)
    stream = __import__("io").StringIO()
    run(tiny(), out, quiet=True, stream=stream)
    note = stream.getvalue().splitlines()[0]
    assert "checkpoint.pt does not match any checksum" in note
    assert "resuming from the previous generation, after experience 0" in note
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"
    same_results(out, uninterrupted)


def test_resume_discards_what_the_lost_experience_wrote(tmp_path):
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run(tiny(), out, quiet=True, plugins=[StopAt(2)])
    damage(out / "checkpoint.pt", "truncate")
    with pytest.raises(KeyboardInterrupt):                     # resume, and stop again before training
        run(tiny(), out, quiet=True, plugins=[StopAt(1)])
    assert sorted(p.name for p in (out / "geometry").glob("*.npz")) == ["row_000.npz", "row_001.npz"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["exp"] for r in rows} == {-1, 0}
    assert json.loads((out / "manifest.json").read_text())["experiences_done"] == 1


def test_no_usable_checkpoint_is_one_line(tmp_path, capsys):
    cfg = config_file(tmp_path)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run(tiny(), out, quiet=True, plugins=[StopAt(2)])
    for name in ("checkpoint.pt", "checkpoint.previous.pt"):
        damage(out / name, "zero-fill")
    before = files(out)
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no usable checkpoint" in err and "use --force" in err
    assert files(out) == before


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run interrupted after two of its three experiences (two checkpoint generations on disk)."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(KeyboardInterrupt):
        run(tiny(), out, quiet=True, plugins=[StopAt(2)])
    return out


def copy_of(run_dir: Path, to: Path) -> Path:
    import shutil
    shutil.copytree(run_dir, to)
    return to


@pytest.mark.slow
def test_a_kill_in_any_file_operation_of_the_first_save_after_a_fallback_still_resumes(
        tmp_path, interrupted, uninterrupted, monkeypatch):
    """The newest generation damaged, the run falls back to the previous one; a kill at every file operation
    of its next checkpoint save (and the manifest that records it) leaves a generation it resumes from, to
    the uninterrupted results."""
    import dncsim.common
    real_replace = os.replace
    fallen = copy_of(interrupted, tmp_path / "fallen")
    damage(fallen / "checkpoint.pt", "bit-flip")
    ops = []

    def recording(src, dst, *a, **k):
        ops.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", recording)
    run(tiny(), copy_of(fallen, tmp_path / "recorded"), quiet=True, stream=__import__("io").StringIO())
    monkeypatch.undo()
    first_write = next(i for i, (_, dst) in enumerate(ops) if dst == "checkpoint.pt")
    assert ops[first_write + 1][1] == "manifest.json"
    points = [i for i, op in enumerate(ops[:first_write + 1]) if any(n.startswith("checkpoint") for n in op)]
    points.append(first_write + 1)
    assert len(points) >= 3
    for k in points:
        out = copy_of(fallen, tmp_path / f"killed-at-{k}")
        calls = []

        def killing(src, dst, *a, **kw):
            calls.append(dst)
            if len(calls) > k:                  # the process is gone: nothing after the kill happens
                raise Killed
            return real_replace(src, dst, *a, **kw)
        monkeypatch.setattr(os, "replace", killing)
        monkeypatch.setattr(dncsim.common, "_remove", lambda tmp: None)
        with pytest.raises(Killed):
            run(tiny(), out, quiet=True, stream=__import__("io").StringIO())
        monkeypatch.undo()
        run(tiny(), out, quiet=True, stream=__import__("io").StringIO())
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "finished", ops[k]
        same_results(out, uninterrupted)
        for record in manifest["checkpoints"]:             # every recorded generation is the file it names
            assert __import__("hashlib").sha256((out / record["file"]).read_bytes()).hexdigest() == record["sha256"]


def test_a_missing_geometry_row_of_an_unfinished_run_is_refused_in_one_line(tmp_path, interrupted, capsys):
    out = copy_of(interrupted, tmp_path / "run")
    (out / "geometry" / "row_001.npz").unlink()
    before = files(out)
    assert main(["run", str(config_file(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert (f"{out}: geometry/row_001.npz of this unfinished run is missing and cannot be recomputed from its "
            "checkpoint") in err
    assert files(out) == before


def test_a_missing_config_of_an_unfinished_run_is_named(tmp_path, interrupted, capsys):
    out = copy_of(interrupted, tmp_path / "run")
    (out / "config.yaml").unlink()
    before = files(out)
    assert main(["run", str(config_file(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{out}: config.yaml of this unfinished run is missing or unreadable" in err
    assert files(out) == before


def test_missing_tables_of_an_unfinished_run_are_rewritten_from_its_checkpoint(tmp_path, interrupted, uninterrupted):
    out = copy_of(interrupted, tmp_path / "run")
    for name in ("metrics.csv", "metrics.jsonl", "accuracy.json"):
        (out / name).unlink()
    run(tiny(), out, quiet=True, stream=__import__("io").StringIO())
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"
    same_results(out, uninterrupted)


# --- divergence ---------------------------------------------------------------------------------------

def test_a_diverging_learning_rate_is_a_recorded_failure(tmp_path, capsys):
    cfg = config_file(tmp_path, training={"epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 1e12,
                                          "momentum": 0.0})
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "training diverged" in err and "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "training diverged" in manifest["error"]
    failure = manifest["failure"]
    assert failure["stage"] in ("training", "evaluation") and failure["experience"] == 0
    if failure["stage"] == "training":
        assert failure["loss"] in ("nan", "inf", "-inf") and failure["iteration"] >= 0
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoint.pt").exists()   # no experience finished
    assert manifest["experiences_done"] == 0


class PoisonAt(SupervisedPlugin):
    """Makes the loss NaN in experience ``at`` (a divergence after good experiences)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def before_backward(self, strategy, **kwargs):
        if strategy.experience.current_experience == self.at:
            strategy.loss = strategy.loss * float("nan")


def test_divergence_keeps_the_last_good_checkpoint_and_the_report_says_why(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunFailed, match="training diverged: loss nan at experience 1"):
        run(tiny(), out, quiet=True, plugins=[PoisonAt(1)])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["experiences_done"] == 1
    assert manifest["failure"]["experience"] == 1 and manifest["failure"]["stage"] == "training"
    assert [g["experiences_done"] for g in manifest["checkpoints"]] == [1]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["experiences_done"] == 1
    from dncsim.analysis.report import build_report
    summary = json.loads((build_report(out) / "summary.json").read_text())
    assert summary["run"]["status"] == "failed" and "training diverged" in summary["run"]["error"]
    assert "training diverged" in (out / "report" / "index.html").read_text()
    run(tiny(), out, quiet=True)                                 # resumable: the next attempt finishes
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"


def test_undefined_geometry_is_named(tmp_path, capsys):
    path = tmp_path / "one.npz"
    np.savez(path, features=np.random.default_rng(0).normal(size=(4, 3)), labels=np.arange(4))
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "one sample per class" in err and "undefined" in err
    from dncsim.analysis import UndefinedGeometry, class_geometry
    with pytest.raises(UndefinedGeometry):
        class_geometry(np.eye(3), np.arange(3)).summary()
    with pytest.raises(UndefinedGeometry, match="coincident means"):
        class_geometry(np.zeros((4, 2)), np.array([0, 0, 1, 1]))


# --- disk trouble -------------------------------------------------------------------------------------

def test_a_write_that_fails_leaves_the_old_files_and_the_run_resumable(tmp_path, uninterrupted, monkeypatch, capsys):
    cfg = config_file(tmp_path)
    out = tmp_path / "run"
    real_replace = os.replace

    def full_disk(src, dst, *a, **k):
        if str(dst).endswith("row_002.npz"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", full_disk)
    assert main(["run", str(cfg), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "row_002.npz: cannot write (No space left on device)" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failure"]["errno"] == errno.ENOSPC
    assert not (out / "geometry" / "row_002.npz").exists() and not list(out.rglob("*.tmp"))
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]   # still whole
    monkeypatch.setattr(os, "replace", real_replace)                # space is back
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    same_results(out, uninterrupted)


class Killed(BaseException):
    """What SIGKILL does to a process in the middle of a write: it stops there, its temporary file stays."""


@pytest.fixture(scope="module")
def write_sequence(tmp_path_factory):
    """An uninterrupted run and the files it wrote, in order: one entry per atomic write (``os.replace``)."""
    real_replace, names = os.replace, []
    out = tmp_path_factory.mktemp("sequence") / "run"

    def recording(src, dst, *a, **k):
        names.append(Path(dst).relative_to(out).as_posix())
        return real_replace(src, dst, *a, **k)
    os.replace = recording
    try:
        run(tiny(), out, quiet=True)
    finally:
        os.replace = real_replace
    return out, names


@pytest.mark.slow
def test_a_run_killed_in_any_kind_of_write_resumes_to_the_uninterrupted_results(tmp_path, write_sequence,
                                                                                monkeypatch):
    """Killed while writing the first of each kind of file (config, first manifest, geometry row, tables,
    checkpoint, its rotation) and the last manifest: the rerun finishes with the same results and removes
    the temporary file the kill left."""
    import dncsim.common
    whole, names = write_sequence
    kinds = [re.sub(r"\d+", "N", n) for n in names]
    points = sorted({kinds.index(k) for k in kinds} | {len(names) - 1})
    assert {"config.yaml", "manifest.json", "checkpoint.pt", "checkpoint.previous.pt",
            "geometry/row_N.npz"} <= {kinds[k] for k in points}
    real_replace = os.replace
    for k in points:
        out = tmp_path / f"killed-in-write-{k}"
        done = []

        def killing(src, dst, *a, **kw):
            if len(done) == k:
                raise Killed
            done.append(dst)
            return real_replace(src, dst, *a, **kw)
        monkeypatch.setattr(os, "replace", killing)
        monkeypatch.setattr(dncsim.common, "_remove", lambda tmp: None)
        with pytest.raises(Killed):
            run(tiny(), out, quiet=True)
        monkeypatch.undo()
        assert [p.name for p in out.rglob("*.tmp")], f"write {k} ({names[k]}) left no temporary file"
        run(tiny(), out, quiet=True, stream=__import__("io").StringIO())
        assert json.loads((out / "manifest.json").read_text())["status"] == "finished", names[k]
        same_results(out, whole)
        assert not list(out.rglob("*.tmp")), names[k]


# --- studies that survive killed processes ------------------------------------------------------------


def study_cli(path, *extra):
    return subprocess.Popen([sys.executable, "-m", "dncsim", "study", str(path), *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def clean_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean")
    proc = study_cli(study_file(tmp, "clean"))
    assert proc.wait() == 0, proc.stderr.read()
    return tmp / "clean"


def tables_of(study_dir):
    return {name: (study_dir / name).read_bytes() for name in ("tasks.csv", "pairs.csv", "statistics.json")}


@pytest.mark.slow
def test_a_study_killed_mid_flight_then_rerun_gives_the_uninterrupted_tables(tmp_path, clean_study):
    path = study_file(tmp_path, "killed")
    proc = study_cli(path)
    wait_for_progress(tmp_path / "killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)                                   # its workers die with it (PR_SET_PDEATHSIG)
    proc = study_cli(path)
    assert proc.wait() == 0, proc.stderr.read()
    runs = json.loads((tmp_path / "killed" / "study.json").read_text())["runs"]
    assert [(r["name"], r["status"], r["error"]) for r in runs] == [(r["name"], "finished", None) for r in runs]
    assert tables_of(tmp_path / "killed") == tables_of(clean_study)


@pytest.mark.slow
def test_a_killed_worker_is_a_failed_run_and_retry_failed_completes_it(tmp_path, clean_study):
    path = study_file(tmp_path, "oom")
    proc = study_cli(path)
    victim = wait_for_progress(tmp_path / "oom")
    os.kill(victim["pid"], signal.SIGKILL)           # what the out-of-memory killer does
    assert proc.wait() == 1                           # a study with a failed run fails, saying how many
    assert "\ndncsim study: error: 1 of 2 runs failed (see " in proc.stderr.read()   # then maybe a resource warning
    state = json.loads((tmp_path / "oom" / "study.json").read_text())
    status = {r["name"]: r for r in state["runs"]}
    assert status[victim["name"]]["status"] == "failed" and "SIGKILL" in status[victim["name"]]["error"]
    assert [r["status"] for r in state["runs"] if r["name"] != victim["name"]] == ["finished"]
    proc = study_cli(path, "--retry-failed")
    assert proc.wait() == 0, proc.stderr.read()
    assert all(r["status"] == "finished" for r in json.loads((tmp_path / "oom" / "study.json").read_text())["runs"])
    same_results(tmp_path / "oom" / "runs" / victim["name"], clean_study / "runs" / victim["name"])
    assert tables_of(tmp_path / "oom") == tables_of(clean_study)
