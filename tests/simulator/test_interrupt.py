"""Ctrl-C, SIGTERM and SIGHUP: one line, exit status 128 + the signal, ``status: interrupted``, and a rerun
that says it resumes and ends with the uninterrupted run's files; the CLI details around it (the
finished-directory check before heavy imports, the scenario grid's default path, the closing table's
footnote, the stream bar drawn once)."""
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dncsim.simulator import interrupts
from dncsim.simulator.cli import main
from tests.support.cli import dncsim as dncsim_importing
from tests.support.reliability import TINY, same_results

ROOT = Path(__file__).resolve().parents[2]
#: two experiences: the signal comes while the second trains, once the first is on disk
TWO = {**TINY, "scenario": {**TINY["scenario"], "stream": {"type": "factor", "attributes": ["color", "style"]}}}


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(TWO))
    return path


def cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dncsim", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def manifest(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for_first_experience(run_dir: Path, proc: subprocess.Popen, timeout=600) -> None:
    deadline = time.time() + timeout
    while manifest(run_dir).get("experiences_done", 0) < 1:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the first experience did not finish"
        time.sleep(0.02)


def progress_lines(err: str):
    """stderr without the per-experience progress lines (stderr is not a terminal here)."""
    return [line for line in err.splitlines() if not (line.startswith("[") and "] experience " in line)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = cli("run", config_file(tmp), "--out", tmp / "run")
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    return tmp / "run", out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signalled_run_says_so_in_one_line_and_the_rerun_resumes_to_the_uninterrupted_files(tmp_path, sig,
                                                                                                uninterrupted):
    cfg, out = config_file(tmp_path), tmp_path / "run"
    proc = cli("run", cfg, "--out", out)
    wait_for_first_experience(out, proc)
    proc.send_signal(sig)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
    assert progress_lines(err) == ["dncsim run: interrupted after 1 of 2 experiences; run the same command again "
                                   "to resume"], err
    assert stdout == ""
    m = manifest(out)
    assert (m["status"], m["experiences_done"], m["experiences_total"]) == ("interrupted", 1, 2)

    proc = cli("run", cfg, "--out", out)
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert progress_lines(err)[0] == "resuming after 1 of 2 experiences", err
    assert manifest(out)["status"] == "finished"
    same_results(out, uninterrupted[0])
    closing = [line for line in stdout.splitlines() if not line.startswith("run directory:")]
    assert closing == [line for line in uninterrupted[1].splitlines() if not line.startswith("run directory:")]


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_after_an_experience_is_saved_stops_the_run_there(tmp_path, sig, monkeypatch, capsys):
    """The signal arrives while the first experience's results, checkpoint and manifest are written: they
    are all written (the signal is held back), then the run stops, before the second experience."""
    from dncsim.simulator.progress import StreamProgress
    done = StreamProgress.experience_done

    def signalled(self, t):
        os.kill(os.getpid(), sig)
        done(self, t)

    monkeypatch.setattr(StreamProgress, "experience_done", signalled)
    handlers = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    out = tmp_path / "run"
    assert main(["run", str(config_file(tmp_path)), "--out", str(out)]) == 128 + sig
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == ("dncsim run: interrupted after 1 of 2 experiences; run the same "
                                             "command again to resume")
    assert "Traceback" not in captured.err and captured.out == ""
    m = manifest(out)
    assert (m["status"], m["experiences_done"], len(m["checkpoints"])) == ("interrupted", 1, 1)
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == handlers        # main() put them back


def test_held_back_signals_are_delivered_once_the_block_ends_or_dropped():
    got = []
    installed = interrupts.install()
    try:
        with pytest.raises(interrupts.Interrupted) as info:
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                got.append("after the signal")
        assert got == ["after the signal"] and info.value.exit_code == 143
        with interrupts.deferred(deliver=False):
            os.kill(os.getpid(), signal.SIGHUP)
        assert interrupts.signal_of(KeyboardInterrupt()) == signal.SIGINT
    finally:
        interrupts.restore(installed)


def test_ctrl_c_in_any_command_is_one_line_and_status_130(monkeypatch, capsys):
    import dncsim.simulator.stats_command as stats

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stats, "stats_for", interrupted)
    assert main(["stats", "somewhere"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "dncsim stats: interrupted\n" and captured.out == ""


def test_running_into_a_finished_directory_is_refused_before_heavy_imports(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"status": "finished"}))
    status, out, err, imported = dncsim_importing("run", config_file(tmp_path), "--out", tmp_path / "run")
    assert status == 2 and out == ""
    assert err == f"dncsim run: error: {tmp_path / 'run'} holds a finished run; use --force to overwrite it or --out " \
                  "for a new directory\n"
    assert imported == []


def test_the_scenario_grid_goes_to_a_new_temporary_directory_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["scenario", str(ROOT / "configs" / "digits_task_incremental.yaml")]) == 0
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    png = Path(wrote[0].removeprefix("wrote "))
    try:
        assert png.name == "digits_task_incremental_examples.png" and png.stat().st_size > 10_000
        assert png.parent.name.startswith("dncsim-scenario-") and list(tmp_path.iterdir()) == []
    finally:
        png.unlink()
        png.parent.rmdir()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_final_stream_bar_is_drawn_once():
    from dncsim.simulator.progress import StreamProgress
    scenario = SimpleNamespace(experiences=[SimpleNamespace(name=n) for n in ("color", "size", "shape")])
    stream = _Terminal()
    progress = StreamProgress(scenario, 1, 1, stream=stream)
    assert "1/3" in stream.getvalue()
    for t in (1, 2):
        time.sleep(0.15)                # past tqdm's mininterval: each update may draw
        progress.experience_done(t)
    progress.close()
    assert stream.getvalue().count("3/3") == 1 and stream.getvalue().count("2/3") >= 1


def test_the_closing_table_footnotes_an_undefined_geometry():
    from dncsim.analysis.names import ACC, CDNV, DIR_CDNV, RESOLVED_PAIRS
    from dncsim.analysis.closing import final_summary

    def row(metric, task, value, probe=None, protocol=None):
        return {"exp": 1, "metric": metric, "task": task, "probe": probe, "protocol": protocol, "value": value}

    rows = [row(ACC, 0, 1.0, "ncc", "refit"), row(ACC, 1, 0.4, "ncc", "refit"), row(DIR_CDNV, 0, 0.5),
            row(CDNV, 0, 2.0), row(RESOLVED_PAIRS, 0, 6), row(RESOLVED_PAIRS, 1, 0)]
    text = final_summary(rows, ["color", "shape"], [SimpleNamespace(probe="ncc", protocol="refit")])
    lines = text.splitlines()
    assert lines[-3].split()[-2:] == ["0.5", "2"] and lines[-2].split()[-2:] == ["n/a", "n/a"]
    assert lines[-1] == ("n/a: shape's dir-CDNV and CDNV undefined after the last experience: no class pair resolved "
                         "(every pair's bias-corrected squared mean gap is within the noise of the class means)")


@pytest.mark.slow
def test_a_signalled_study_stops_its_runs_which_record_that_they_were_interrupted(tmp_path):
    from tests.support.reliability import study_file, wait_for_progress
    path = study_file(tmp_path, "study")
    proc = subprocess.Popen([sys.executable, "-m", "dncsim", "study", str(path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = wait_for_progress(tmp_path / "study")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert re.fullmatch(r"dncsim study: interrupted after [01] of 2 runs; run the same command again to resume",
                        err.splitlines()[-1]), err
    assert "Traceback" not in err
    statuses = {m.parent.name: manifest(m.parent)["status"] for m in (tmp_path / "study").glob("runs/*/manifest.json")}
    assert statuses[victim["name"]] == "interrupted" and "running" not in statuses.values(), statuses
