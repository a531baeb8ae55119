"""Studies on a cluster: the `cluster:` section, the SLURM job dask-jobqueue would submit (built without
a SLURM installation, never scaled), GPU runs as a dask worker resource, and one GPU per worker process."""
import json
import os
import sys

import pytest
import torch
import yaml

from dncsim.common import DncsimError
from dncsim.simulator import study, study_executors
from dncsim.simulator.cli import main
from dncsim.simulator.study import (AddressClusterConfig, DaskExecutor, LocalClusterConfig, SlurmClusterConfig,
                                    load_study_config, run_study, slurm_cluster, wants_gpu)

pytest.importorskip("dask_jobqueue")
#: the scheduler the cluster object starts in this process: loopback only, no dashboard
QUIET = {"scheduler_options": {"host": "127.0.0.1", "dashboard_address": None}}


def study_file(tmp_path, **extra):
    data = {"base": {"objective": {"name": "supervised"}}, "factors": {"seed": [0, 1]}, "engine": "dask",
            "out": str(tmp_path / "study"), **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_slurm_job_script_carries_the_requested_resources(tmp_path):
    cfg = SlurmClusterConfig(queue="gpu", account="proj42", cores=8, memory="64GiB", walltime="1-02:00:00", gpus=2,
                             job_extra_directives=["--constraint=a100"], prologue=["source /data/venv/bin/activate"],
                             worker_args=["--lifetime", "23h50m"], options=QUIET)
    cluster = slurm_cluster(cfg, tmp_path / "logs")
    try:
        script = cluster.job_script()
        assert len(cluster.workers) == 0                  # built, not scaled: no job was submitted
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in ("#SBATCH -p gpu", "#SBATCH -A proj42", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G",
                      "#SBATCH -t 1-02:00:00", "#SBATCH --gres=gpu:2", "#SBATCH --constraint=a100",
                      f"#SBATCH -o {tmp_path / 'logs'}/dask-worker-%J.out"):
        assert directive in lines, (directive, script)
    assert "source /data/venv/bin/activate" in lines
    command = next(line for line in lines if "distributed.cli.dask_worker" in line)
    # one worker process per GPU, one thread each (one run at a time), each offering one GPU
    assert "--nworkers 2" in command and "--nthreads 1" in command and "--resources GPU=1" in command
    assert "--lifetime 23h50m" in command
    assert (tmp_path / "logs").is_dir()


def test_a_cpu_job_runs_several_single_threaded_workers_and_offers_no_gpu(tmp_path):
    cfg = SlurmClusterConfig(cores=12, memory="24GB", runs_per_job=3, options=QUIET)
    cluster = slurm_cluster(cfg, tmp_path / "logs")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --cpus-per-task=12" in script and "--gres" not in script and "--resources" not in script
    assert "--nworkers 3" in script and "--nthreads 1" in script and "#SBATCH -t 04:00:00" in script


def test_the_cluster_section_is_validated_in_one_line(tmp_path, capsys):
    cases = [({"cluster": {"kind": "slurn"}}, "cluster.kind: 'slurn' is not one of local, slurm, address (did you "
                                              "mean 'slurm'?)"),
             ({"cluster": {"kind": "slurm", "qeue": "gpu"}}, "cluster: unknown key 'qeue' (did you mean 'queue'?)"),
             ({"cluster": {"kind": "slurm", "memory": "lots"}}, "cluster.memory: expected an amount such as 16GB"),
             ({"cluster": {"kind": "slurm", "scale": 2, "adapt": {"maximum": 4}}},
              "cluster: give scale (a fixed number of jobs) or adapt, not both"),
             ({"cluster": {"kind": "slurm", "gpus": 1, "runs_per_job": 2}}, "at most one run per GPU"),
             ({"cluster": {"kind": "slurm", "adapt": {"minimum": 5, "maximum": 2}}},
              "cluster.adapt: minimum (5) is more than maximum (2)"),
             ({"cluster": {"kind": "slurm", "options": {"cores": 3}}}, "cluster.options: 'cores' is set from the"),
             ({"cluster": {"kind": "slurm"}, "scheduler": "tcp://h:1"}, "scheduler: a scheduler address and "
                                                                         "cluster.kind 'slurm' exclude each other"),
             ({"cluster": {"kind": "address"}}, "cluster.address: required key is missing")]
    for extra, message in cases:
        assert main(["study", str(study_file(tmp_path, **extra))]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "study").exists()


def test_scheduler_is_an_address_cluster_and_slurm_defaults(tmp_path):
    cfg = load_study_config(study_file(tmp_path, scheduler="tcp://h:8786"))
    assert cfg.dask_cluster == AddressClusterConfig(address="tcp://h:8786")
    assert load_study_config(study_file(tmp_path)).dask_cluster == LocalClusterConfig()
    slurm = load_study_config(study_file(tmp_path, cluster={"kind": "slurm", "gpus": 4})).dask_cluster
    assert (slurm.processes, slurm.cores, slurm.memory, slurm.walltime) == (4, 4, "16GiB", "04:00:00")


def test_without_sbatch_a_slurm_study_stops_before_writing_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))              # no sbatch here
    path = study_file(tmp_path, cluster={"kind": "slurm", "gpus": 1})
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err
    assert "cluster.kind: 'slurm' needs SLURM's sbatch on PATH" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "study").exists()


def test_without_dask_jobqueue_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(DncsimError, match=r"^cluster.kind: 'slurm' needs dask-jobqueue: pip install 'dncsim\[dask\]'$"):
        DaskExecutor(1, cluster=SlurmClusterConfig()).check()
    with pytest.raises(DncsimError, match=r"^cluster.kind: 'slurm' needs dask-jobqueue"):
        slurm_cluster(SlurmClusterConfig(), tmp_path)


@pytest.mark.parametrize("device,cluster,gpu", [
    ("cuda", SlurmClusterConfig(), True), ("cuda:1", AddressClusterConfig(address="tcp://h:1"), True),
    ("cuda", LocalClusterConfig(), False), ("auto", SlurmClusterConfig(gpus=2), True),
    ("auto", SlurmClusterConfig(), False), ("auto", AddressClusterConfig(address="tcp://h:1"), False),
    ("cpu", SlurmClusterConfig(gpus=2), False)])
def test_which_runs_ask_for_a_gpu(device, cluster, gpu):
    assert wants_gpu({"device": device}, cluster) is gpu


def _restrictions(spec):
    """Run in a dask worker thread: the resource restrictions of the task running it."""
    from distributed import get_worker
    from distributed.worker import thread_state
    ts = get_worker().state.tasks[thread_state.key]
    return {"name": spec["name"], "status": "finished", "seconds": 0.0, "error": None,
            "resources": dict(ts.resource_restrictions or {})}


@pytest.fixture
def dask_cluster():
    """A scheduler with one in-process worker offering GPU=1 (threads: the test function needs no pickling)."""
    from dask.distributed import LocalCluster
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, resources={"GPU": 1},
                           dashboard_address=None, silence_logs=40)
    yield cluster
    cluster.close()


def test_gpu_runs_are_submitted_with_the_gpu_resource(dask_cluster):
    executor = DaskExecutor(1, cluster=AddressClusterConfig(address=dask_cluster.scheduler_address))
    specs = [{"name": "a", "gpu": True}, {"name": "b", "gpu": False}]
    got = {r["name"]: r["resources"] for r in executor.map_unordered(_restrictions, specs)}
    assert got == {"a": {"GPU": 1}, "b": {}}


def test_gpu_runs_on_a_scheduler_without_gpu_workers_are_refused_in_one_line():
    from dask.distributed import LocalCluster
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None, silence_logs=40)
    try:
        executor = DaskExecutor(1, cluster=AddressClusterConfig(address=cluster.scheduler_address))
        with pytest.raises(DncsimError, match=r"^cluster: runs ask for a GPU but no worker of \S+ offers one; "
                                              r"start the workers with: dask worker ADDRESS --nthreads 1 "
                                              r"--resources GPU=1"):
            list(executor.map_unordered(_restrictions, [{"name": "a", "gpu": True}]))
    finally:
        cluster.close()


def test_each_worker_process_holds_its_own_gpu(tmp_path, monkeypatch):
    """claim_gpu on a (pretended) 2-GPU machine: the first process takes GPU 0, the next GPU 1, a third none;
    each is made torch's current device. The holds are flocks, so in-process claims stand for processes."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    held = []
    try:
        for expected in (0, 1, None):
            monkeypatch.setattr(study_executors, "_GPU_CLAIM", None)     # a new worker process
            assert study_executors.claim_gpu() == expected
            held.append(study_executors._GPU_CLAIM)
        monkeypatch.setattr(study_executors, "_GPU_CLAIM", held[1])     # the second process again: keeps its GPU
        assert study_executors.claim_gpu() == 1
    finally:
        for claim in held:
            if claim is not None:
                claim[0].close()
    assert chosen == [0, 1, 1]
    locks = sorted(p.name for p in tmp_path.iterdir())
    assert locks == [f"dncsim-gpu-{os.getuid()}-991-4.lock", f"dncsim-gpu-{os.getuid()}-991-7.lock"]


def test_run_specs_of_a_slurm_gpu_study_ask_for_a_gpu_and_share_the_job_cpus(tmp_path, monkeypatch):
    """What run_study hands the executor (the executor itself replaced: nothing is submitted)."""
    seen = {}

    class Recorder(DaskExecutor):
        def check(self):
            pass

        def open(self):
            pass

        def map_unordered(self, fn, specs):
            seen["specs"], seen["cluster"], seen["logs"] = list(specs), self.cluster, self.log_directory
            return iter([])

    monkeypatch.setattr(study, "DaskExecutor", Recorder)
    monkeypatch.setattr("dncsim.analysis.report.study.build_study_report", lambda *args: args[0] / "report")
    path = study_file(tmp_path, cluster={"kind": "slurm", "gpus": 2, "cores": 8}, set={"device": "auto"})
    run_study(load_study_config(path), stream=open(tmp_path / "log.txt", "w"))
    assert [s["gpu"] for s in seen["specs"]] == [True, True]
    assert [s["threads"] for s in seen["specs"]] == [4, 4]              # 8 CPUs shared by 2 runs per job
    assert seen["cluster"].kind == "slurm" and seen["logs"] == tmp_path / "study" / "dask-logs"
    assert "on SLURM (1 jobs x 2 runs, 2 GPUs each)" in (tmp_path / "log.txt").read_text()
    assert json.loads((tmp_path / "study" / "study.json").read_text())["engine"] == "dask"


def test_a_run_lost_with_its_job_names_what_slurm_said(tmp_path):
    """The error of a run whose worker died: the SLURM job whose log names the worker, and SLURM's line
    (walltime, cancel); a log without SLURM's line still names the job; no log: the worker's address."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "dask-worker-41.err").write_text("distributed.worker - INFO - Start worker at: tcp://10.0.0.7:40111\n")
    (logs / "dask-worker-42.err").write_text(
        "distributed.worker - INFO - Start worker at: tcp://10.0.0.7:40222\n"
        "slurmstepd: error: *** JOB 42 ON node7 CANCELLED AT 2026-12-07T03:00:01 DUE TO TIME LIMIT ***\n")
    assert study.slurm_job_end(logs, "tcp://10.0.0.7:40222") == \
        f"job 42: CANCELLED AT 2026-12-07T03:00:01 DUE TO TIME LIMIT (log {logs / 'dask-worker-42.err'})"
    assert study.slurm_job_end(logs, "tcp://10.0.0.7:40111") == f"job 41 (log {logs / 'dask-worker-41.err'})"
    assert study.slurm_job_end(logs, "tcp://10.0.0.7:1") is None

    class KilledWorker(Exception):
        pass

    lost = KilledWorker("Attempted to run task 'dncsim-000-seed=0' on 1 different workers, but all those workers "
                        "died while running it. The last worker that attempt to run the task was "
                        "tcp://10.0.0.7:40222. Inspecting worker logs is often a good next step.")
    executor = DaskExecutor(1, cluster=SlurmClusterConfig(), log_directory=logs)
    assert executor._lost(lost) == (f"its SLURM job 42: CANCELLED AT 2026-12-07T03:00:01 DUE TO TIME LIMIT (log "
                                    f"{logs / 'dask-worker-42.err'}), so the run stopped: KilledWorker")
    local = DaskExecutor(1, cluster=LocalClusterConfig(), log_directory=logs)
    assert local._lost(lost).startswith("KilledWorker: Attempted to run task")


def test_a_machine_without_a_slurm_configuration_is_told_so_in_one_line(tmp_path, monkeypatch, capsys):
    """An sbatch that cannot find its cluster (here a stand-in printing what Debian's sbatch prints without
    slurm.conf): the study stops before writing anything, quoting SLURM and saying where to start it."""
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'sbatch: error: fetch_config: DNS SRV lookup failed' >&2\n"
                    "echo 'sbatch: fatal: Could not establish a configuration source' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert main(["study", str(study_file(tmp_path, cluster={"kind": "slurm", "options": QUIET}))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert ('SLURM refuses the job (cores 4, memory 16GiB, walltime 04:00:00): "Could not establish a configuration '
            'source"; this machine has no SLURM configuration (slurm.conf, SLURM_CONF): start the study where jobs '
            "are submitted, such as the cluster's login node") in err, err
    assert not (tmp_path / "study").exists()
