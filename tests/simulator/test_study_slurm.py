"""Studies on a live single-node SLURM cluster (tests/simulator/live_slurm.py): real jobs through sbatch
give the local engine's tables; a job cancelled under a run fails that run naming SLURM's reason, a new
job takes the other runs, and --retry-failed resumes it from its checkpoint; jobs SLURM refuses, and jobs
whose workers never reach the scheduler, are one-line errors. Skipped only where SLURM cannot run (not
root, not installed)."""
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import pytest
import yaml

from dncsim.simulator.cli import main
from dncsim.simulator.study import StudyFailed, load_study_config, run_study
from tests.simulator.live_slurm import LiveSlurm, unavailable

pytest.importorskip("dask_jobqueue")
pytestmark = pytest.mark.slow

BASE = {"scenario": {"source": {"name": "shapes", "image_size": 16, "train_repeats": 1, "test_repeats": 2},
                     "stream": {"type": "factor", "attributes": ["shape", "color", "style"]}},
        "backbone": {"name": "convnet", "width": 8, "feature_dim": 16}, "training": {"epochs": 1, "batch_size": 48},
        "evaluation": {"linear_steps": 10}, "analysis": {"shots": [1, 5], "episodes": 10},
        "output": {"report": False, "tensorboard": False, "checkpoints": True}}
#: the jobs' dask workers: this interpreter (the worktree's venv), a loopback scheduler without dashboard
OPTIONS = {"python": sys.executable, "scheduler_options": {"host": "127.0.0.1", "dashboard_address": None}}
SEEDS = [0, 1, 2]


def study_file(tmp_path, name, **extra):
    data = {"base": BASE, "factors": {"seed": SEEDS}, "workers": 2, "threads_per_worker": 1,
            "statistics": {"bootstrap": 200, "permutations": 200}, "out": str(tmp_path / name), **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def slurm_study(tmp_path, name, **cluster):
    return study_file(tmp_path, name, engine="dask",
                      cluster={"kind": "slurm", "cores": 1, "memory": "2GiB", "walltime": "00:10:00",
                               "options": OPTIONS, **cluster})


def statuses(out):
    return [r["status"] for r in json.loads((out / "study.json").read_text())["runs"]]


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    """The three runs on the local engine: the tables every SLURM study must reproduce."""
    tmp = tmp_path_factory.mktemp("local")
    out = run_study(load_study_config(study_file(tmp, "local")), stream=open(tmp / "log.txt", "w"))
    assert statuses(out) == ["finished"] * 3
    return out


@pytest.fixture
def slurm(monkeypatch):
    """A live cluster of this test's own; SLURM_CONF points the study's sbatch (and the jobs) at it."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = LiveSlurm()
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        cluster.cleanup()
        raise
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    yield cluster
    left = cluster.stop()
    logs = cluster.logs()
    cluster.cleanup()
    assert left == [], f"processes of the SLURM cluster left running: {left}\n{logs}"


def same_tables(a: Path, b: Path):
    for table in ("tasks.csv", "pairs.csv"):
        lines = (a / table).read_text().splitlines()
        assert len(lines) == 1 + 3 * 3                    # 3 runs x 3 tasks (3 pairs)
        assert (a / table).read_text() == (b / table).read_text(), table


def cancel_when_a_run_is_half_done(cluster, runs: Path, found: dict):
    """In a thread: once a run has checkpointed an experience, scancel the (one) job running it."""
    end = time.monotonic() + 300
    while time.monotonic() < end:
        for manifest in runs.glob("*/manifest.json"):
            try:
                m = json.loads(manifest.read_text())
            except ValueError:
                continue
            if 1 <= m.get("experiences_done", 0) < m.get("experiences_total", 0) and m["status"] == "running":
                running = [j for j, state in cluster.jobs().items() if state == "RUNNING"]
                cluster.client("scancel", *running)
                found.update(run=manifest.parent.name, jobs=running, manifest=m)
                return
        time.sleep(0.05)


def test_slurm_jobs_run_the_study_a_cancelled_job_fails_its_run_and_retry_resumes_it(slurm, local_study, tmp_path):
    """One job at a time: cancelled half-way through a run, it fails that run with SLURM's reason and is
    replaced for the other runs; --retry-failed resumes the run from its checkpoint; the tables are the
    local engine's."""
    path = slurm_study(tmp_path, "slurm", scale=1)
    found = {}
    watcher = threading.Thread(target=cancel_when_a_run_is_half_done, args=(slurm, tmp_path / "slurm" / "runs", found))
    watcher.start()
    t0 = time.perf_counter()
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}), \
            pytest.raises(StudyFailed, match="^1 of 3 runs failed"):                # replace the job sooner
        run_study(load_study_config(path), stream=open(tmp_path / "log.txt", "w"))
    out = tmp_path / "slurm"
    watcher.join()
    first = time.perf_counter() - t0
    log = (tmp_path / "log.txt").read_text()
    assert found, log
    state = {r["name"]: r for r in json.loads((out / "study.json").read_text())["runs"]}
    cancelled = state[found["run"]]
    assert cancelled["status"] == "failed", (cancelled, log)
    job = found["jobs"][0]
    assert f"its SLURM job {job}: CANCELLED AT " in cancelled["error"], cancelled["error"]
    assert cancelled["error"].endswith("rerun with --retry-failed to resume it")
    assert sorted(r["status"] for r in state.values()) == ["failed", "finished", "finished"], state  # a new job
    assert "on SLURM (1 jobs x 1 runs each)" in log
    jobs = sorted(int(p.stem.split("-")[-1]) for p in (out / "dask-logs").glob("dask-worker-*.err"))
    assert len(jobs) >= 2 and int(job) in jobs[:-1], jobs            # the cancelled job was replaced
    half = json.loads((out / "runs" / found["run"] / "manifest.json").read_text())
    assert 1 <= half["experiences_done"] < 3 and half["status"] in ("running", "failed")
    t1 = time.perf_counter()
    run_study(load_study_config(path, {"retry_failed": True}), stream=open(tmp_path / "log2.txt", "w"))
    second = time.perf_counter() - t1
    assert statuses(out) == ["finished"] * 3
    resumed = json.loads((out / "runs" / found["run"] / "manifest.json").read_text())
    assert resumed["started"] == half["started"] and resumed["pid"] != half["pid"]     # resumed, not restarted
    same_tables(out, local_study)
    print(f"slurm study {first:.1f} s, retry {second:.1f} s", [r["seconds"] for r in state.values()])


def test_jobs_slurm_refuses_stop_the_study_in_one_line_naming_slurms_error(slurm, tmp_path, capsys):
    """sbatch --test-only before anything is written: an unknown partition, more memory than the node has,
    more time than the partition allows."""
    too_much = f"{2 * slurm.real_memory // 1024 + 1}GiB"
    cases = [({"queue": "nope"}, '"Invalid partition name specified"; cluster.queue names no partition'),
             ({"memory": too_much}, '"Requested node configuration is not available"; no node of the partition '
                                    'has cluster.cores CPUs, cluster.memory'),
             ({"walltime": "01:00:00"}, '"Requested time limit is invalid (missing or exceeds some limit)"; '
                                        "cluster.walltime exceeds the partition's time limit")]
    for cluster, message in cases:
        path = slurm_study(tmp_path, "refused", **cluster)
        assert main(["study", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dncsim study: error: cluster: SLURM refuses the job (") and message in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "refused").exists()
    assert slurm.jobs() == {}                          # nothing was queued


def test_jobs_whose_workers_cannot_reach_the_scheduler_stop_the_study_quoting_the_log(slurm, tmp_path, capsys):
    """The worker runs without a network (unshare -n): its job ends, no worker ever connects, and the study
    stops with exit 1 instead of waiting for ever."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"]).returncode != 0:
        pytest.skip("unshare -n (a process without network) is not available here")
    path = slurm_study(tmp_path, "unreachable", scale=1,
                       options={**OPTIONS, "python": f"{unshare} -n {sys.executable}", "death_timeout": 2})
    assert main(["study", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert re.match(r"dncsim study: error: cluster: the SLURM jobs (\d+) ended \(FAILED\) and no dask worker reached "
                    r"the scheduler at tcp://127\.0\.0\.1:\d+: can the nodes reach this machine\? \(set "
                    r"cluster\.options\.interface or scheduler_options\.host to a network they share\); \S+"
                    r"/dask-worker-\1\.err: .*Timed out", err[-1]), err

