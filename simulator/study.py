"""``dncsim study``: many runs over a grid of config factors, then statistics and a study report.

A study directory holds ``study.yaml``, ``study.json`` (each run's factors, status, error, time),
``runs/<name>/`` and, once runs finished, ``tasks.csv``, ``pairs.csv``, ``statistics.json``, ``report/``.
Finished runs are skipped; failed ones retried only on request. Engines: ``local`` (process pool) and
``dask`` (:func:`run_one` per spec); a GPU run takes worker resource ``GPU=1`` (:func:`claim_gpu`).
"""
from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Dict, Iterator, List, Literal, Optional, Sequence, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from dncsim.common import (DncsimError, RunFailed, StrictModel, UserPath, atomic_write_json, atomic_write_text,
                           is_atomic_temporary, one_line_error, read_yaml)
from dncsim.simulator.config import MAX_THREADS, run_from_mapping
from dncsim.simulator.design import MAX_RUNS, DesignConfig, design_specs, design_summary

__all__ = ["StatisticsConfig", "StudyConfig", "LocalClusterConfig", "SlurmClusterConfig", "AddressClusterConfig",
           "AdaptConfig", "ClusterConfig", "load_study_config", "expand_grid", "run_one", "LocalExecutor",
           "DaskExecutor", "slurm_cluster", "slurm_preflight", "slurm_job_end", "ClusterFailed", "wants_gpu",
           "claim_gpu", "run_study", "StudyFailed", "study_runs", "paper_claims_of_study"]


class StatisticsConfig(StrictModel):
    """Which forgetting the hypothesis is tested on, and the resampling settings."""

    probe: Literal["ncc", "linear"] = Field("linear", description="the probe whose forgetting is the outcome")
    protocol: Literal["refit", "frozen"] = Field("frozen", description="the protocol whose forgetting is the outcome")
    forgetting: Literal["forgetting_max", "forgetting_last"] = Field("forgetting_max",
        description="forgetting_max: the largest drop after learning; forgetting_last: the drop at the end")
    bootstrap: int = Field(2000, ge=100, description="cluster-bootstrap resamples (of runs)")
    permutations: int = Field(2000, ge=100, description="permutations for the p-value")
    alpha: float = Field(0.05, gt=0, lt=1, description="level of the tests (1 - alpha intervals)")
    seed: int = Field(0, ge=0, lt=2 ** 32, description="seed of the permutations and bootstraps")
    include_unlearned: bool = Field(False, description="keep tasks that were never learned (accuracy within the "
                                                       "margin of chance right after their experience) in the tests")
    paper: Literal["auto", "always", "never"] = Field("auto", description="the paper's three claims over the "
                                                      "study's runs, per setting of the other factors (auto: when "
                                                      "every run is a joint stream)")


# --- where a dask study runs (cluster:) ------------------------------------------------------------------

class LocalClusterConfig(StrictModel):
    """A dask LocalCluster on this machine: ``workers`` single-threaded worker processes (the default)."""

    kind: Literal["local"] = "local"


class AddressClusterConfig(StrictModel):
    """A running dask scheduler to connect to; its workers must see the data and the study directory."""

    kind: Literal["address"] = "address"
    address: str = Field(min_length=1, description="the scheduler's address, tcp://host:8786")


class AdaptConfig(StrictModel):
    """dask's adaptive scaling, in SLURM jobs."""

    minimum: int = Field(0, ge=0, description="fewest jobs kept")
    maximum: int = Field(ge=1, description="most jobs at once")

    @model_validator(mode="after")
    def _ordered(self):
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) is more than maximum ({self.maximum})")
        return self


#: SLURMCluster keywords set from the keys above; ``options`` may not set them again
_SLURM_MANAGED = ("queue", "account", "cores", "job_cpu", "memory", "walltime", "processes", "job_extra_directives",
                  "job_script_prologue", "log_directory", "worker_extra_args")


class SlurmClusterConfig(StrictModel):
    """SLURM jobs started by ``dask_jobqueue.SLURMCluster`` (``pip install 'dncsim[dask]'``), each running
    ``runs_per_job`` single-threaded dask worker processes: one run at a time per process, with one GPU
    each when the job has GPUs (the workers offer the resource ``GPU=1``; a run asking for a GPU takes one)."""

    kind: Literal["slurm"] = "slurm"
    queue: Optional[str] = Field(None, description="partition (#SBATCH -p)")
    account: Optional[str] = Field(None, description="account to charge (#SBATCH -A)")
    cores: int = Field(4, ge=1, description="CPUs per job (--cpus-per-task), shared by its runs")
    memory: str = Field("16GiB", description="memory per job (--mem; 16GiB is --mem=16G), shared by its runs")
    walltime: str = Field("04:00:00", description="time limit per job (#SBATCH -t)")
    gpus: int = Field(0, ge=0, description="GPUs per job (--gres=gpu:N)")
    runs_per_job: Optional[int] = Field(None, ge=1, description="worker processes per job, one run each at a time "
                                                                "(default: gpus, or 1)")
    job_extra_directives: List[str] = Field(default_factory=list,
                                            description="more #SBATCH lines, e.g. --constraint=a100, --qos=long")
    prologue: List[str] = Field(default_factory=list,
                                description="shell lines the job runs before its workers start (module load ..., "
                                            "source .venv/bin/activate)")
    worker_args: List[str] = Field(default_factory=list,
                                   description="more arguments to every dask worker, e.g. [--lifetime, 3h50m, "
                                               "--lifetime-stagger, 5m] to leave before the walltime ends")
    log_directory: Optional[UserPath] = Field(None, description="the jobs' SLURM output (default: <study "
                                                                "dir>/dask-logs)")
    scale: Optional[int] = Field(None, ge=1, description="jobs to start (default: enough for `workers` runs at once)")
    adapt: Optional[AdaptConfig] = Field(None, description="{minimum, maximum} jobs: scale with the queue of runs "
                                                           "instead of a fixed number")
    options: Dict[str, Any] = Field(default_factory=dict,
                                    description="more SLURMCluster keyword arguments (interface, local_directory, "
                                                "scheduler_options, python, ...)")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v):
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?)\s*", v):
            raise ValueError(f"expected an amount such as 16GB or 64GiB; got {v!r}")
        return v.strip()

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v):
        if not re.fullmatch(r"(\d+-)?\d+(:\d{2}){0,2}", v.strip()):
            raise ValueError(f"expected SLURM's [D-]HH:MM:SS (or minutes); got {v!r}")
        return v.strip()

    @field_validator("options")
    @classmethod
    def _options(cls, v):
        taken = [k for k in v if k in _SLURM_MANAGED]
        if taken:
            raise ValueError(f"{taken[0]!r} is set from the cluster's own keys; leave it out of options")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.scale is not None and self.adapt is not None:
            raise ValueError("give scale (a fixed number of jobs) or adapt, not both")
        if self.gpus and self.runs_per_job is not None and self.runs_per_job > self.gpus:
            raise ValueError(f"runs_per_job {self.runs_per_job} would share the job's {self.gpus} GPUs; at most one "
                             "run per GPU (runs_per_job <= gpus)")
        return self

    @property
    def processes(self) -> int:
        """Worker processes per job (= runs at once per job)."""
        return self.runs_per_job or self.gpus or 1


ClusterConfig = Annotated[Union[LocalClusterConfig, SlurmClusterConfig, AddressClusterConfig],
                          Field(discriminator="kind")]


class StudyConfig(StrictModel):
    """A base run config, overrides for every run, a grid of factors, the engine and the statistics."""

    name: Optional[str] = Field(None, description="study name (default: the study file's name)")
    base: Union[UserPath, Dict[str, Any]] = Field(description="a run config file, or an inline run config mapping")
    set: Dict[str, Any] = Field(default_factory=dict, description="KEY.PATH: value overrides for every run")
    factors: Dict[str, List[Any]] = Field(description="KEY.PATH: [values]; the runs are their cartesian product")
    engine: Literal["local", "dask"] = Field("local",
        description="local: a process pool on this machine; dask: dask.distributed on cluster (the dask extra)")
    workers: int = Field(2, ge=1, le=10_000, description="runs at once")
    threads_per_worker: Optional[int] = Field(None, ge=1, le=MAX_THREADS,
                                              description="torch threads per run (default: cores / workers)")
    scheduler: Optional[str] = Field(None, description="dask: address of a running scheduler (default: a "
                                                       "LocalCluster); the same as cluster: {kind: address, ...}")
    cluster: ClusterConfig = Field(default_factory=LocalClusterConfig,
                                   description="dask: where the workers run: local (a LocalCluster), slurm (SLURM "
                                               "jobs through dask-jobqueue) or address (a running scheduler)")
    out: Optional[UserPath] = Field(None, description="study directory (default: studies/<name>)")
    retry_failed: bool = Field(False, description="run again the runs recorded as failed")
    statistics: StatisticsConfig = Field(default_factory=StatisticsConfig,
                                         description="the outcome the tests read and how they resample")
    design: DesignConfig = Field(default_factory=DesignConfig, description="seeds per run, task order and per-task "
                                 "treatments on Latin squares, placebo arms, replicates (simulator/design.py)")

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, v):
        if not isinstance(v, (str, Path, dict)):
            raise ValueError(f"expected a run config file name or an inline run config mapping; got "
                             f"{type(v).__name__} {v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        from dncsim.rundir import plain_name
        return v if v is None else plain_name(v, "--out or out:")

    @field_validator("factors")
    @classmethod
    def _factors(cls, v):
        if not v:
            raise ValueError("at least one factor is needed")
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"factor {empty[0]} has no values")
        runs = math.prod(len(vals) for vals in v.values())
        if runs > MAX_RUNS:
            raise ValueError(f"the grid has {runs} runs ({' x '.join(str(len(vals)) for vals in v.values())}); "
                             f"at most {MAX_RUNS}")
        return v

    @model_validator(mode="after")
    def _one_scheduler(self):
        if self.scheduler and self.cluster.kind == "slurm":
            raise ValueError("scheduler: a scheduler address and cluster.kind 'slurm' exclude each other (the SLURM "
                             "cluster starts its own scheduler)")
        if self.scheduler and self.cluster.kind == "address" and self.cluster.address != self.scheduler:
            raise ValueError(f"scheduler: {self.scheduler} differs from cluster.address {self.cluster.address}")
        return self

    @property
    def dask_cluster(self):
        """The cluster of engine dask, ``scheduler`` counting as ``{kind: address}``."""
        if self.scheduler and self.cluster.kind == "local":
            return AddressClusterConfig(address=self.scheduler)
        return self.cluster


def load_study_config(path, overrides: Dict[str, Any] = None) -> StudyConfig:
    """Read and validate a study file; CLI values in ``overrides`` (engine, workers, ...) take precedence."""
    data = read_yaml(path)
    data.setdefault("name", Path(path).stem)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise DncsimError(one_line_error(exc, StudyConfig)) from None


def expand_grid(cfg: StudyConfig) -> List[dict]:
    """One spec per run: ``name``, ``factors`` (key -> value), the validated run ``config`` mapping and,
    under an active ``design``, its record (``simulator.design.design_specs``).

    Every run config is validated here, so a bad grid stops the study before anything runs.
    """
    base = read_yaml(cfg.base) if isinstance(cfg.base, Path) else dict(cfg.base)
    return design_specs(cfg, base)


def run_one(spec: dict) -> dict:
    """Run (or resume) one study run in this process; never raises: failures come back as records.

    ``spec``: ``name``, ``config`` (a run config mapping), ``out`` (its run directory), ``threads``.
    Returns ``{"name", "status": "finished"|"failed", "seconds", "error"}``.
    """
    import torch

    from dncsim.simulator.devices import deterministic_environment
    from dncsim.simulator.run import run
    torch.set_num_threads(int(spec["threads"]))
    config = spec["config"]
    deterministic_environment(bool((config.get("training") or {}).get("deterministic", True)),
                              str(config.get("device", "auto")))          # before claim_gpu starts CUDA
    if spec.get("gpu"):
        claim_gpu()
    start = time.perf_counter()
    try:
        run(run_from_mapping(spec["config"]), Path(spec["out"]), stream=io.StringIO(), quiet=True)
        return {"name": spec["name"], "status": "finished", "seconds": round(time.perf_counter() - start, 2),
                "error": None}
    except Exception as exc:           # noqa: BLE001 - one failing run must not stop the study
        tb = traceback.format_exc(limit=-3)
        return {"name": spec["name"], "status": "failed", "seconds": round(time.perf_counter() - start, 2),
                "error": f"{type(exc).__name__}: {exc}", "traceback": tb}


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when its parent dies (a study killed with SIGKILL must not
    leave its runs going on, orphaned, in directories the rerun will resume)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _run_in_child(fn, spec: dict, conn, parent: int) -> None:
    from dncsim.simulator.interrupts import install, signal_of
    _die_with_parent()
    if os.getppid() != parent:          # the study died while this process started, before it could ask
        return
    install()                           # SIGTERM from the study (and Ctrl-C) records the run as interrupted
    try:
        conn.send(fn(spec))
    except KeyboardInterrupt as exc:    # no traceback: the study says it was interrupted
        sys.exit(128 + signal_of(exc))
    conn.close()


def _killed(spec: dict, exitcode: int, seconds: float) -> dict:
    """The record of a run whose process died without answering."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = f"killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")
    else:
        why = f"exited with status {exitcode} before reporting"
    return {"name": spec["name"], "status": "failed", "seconds": round(seconds, 2),
            "error": f"the run's process was {why}; rerun with --retry-failed to resume it", "signal": -exitcode}


class LocalExecutor:
    """Each run in its own spawned process (a clean interpreter with its own torch threads), at most
    ``workers`` at once. A process that dies without answering (the out-of-memory killer, a signal) is
    recorded as a failed run naming the signal, and the others go on; the processes die with the study."""

    #: seconds the runs of an interrupted study get to record ``status: interrupted`` before they are killed
    GRACE_S = 30.0

    def __init__(self, workers: int):
        self.workers = workers

    def open(self) -> None:
        """Nothing to connect to (see :meth:`DaskExecutor.open`)."""

    def close(self) -> None:
        """Nothing to close."""

    def map_unordered(self, fn, specs: Sequence[dict]) -> Iterator[dict]:
        from multiprocessing.connection import wait
        ctx = multiprocessing.get_context("spawn")
        pending, running = list(specs), {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    spec = pending.pop(0)
                    receive, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_run_in_child, args=(fn, spec, send, os.getpid()),
                                       name=f"dncsim-{spec['name']}")
                    proc.start()
                    send.close()
                    running[proc.sentinel] = (proc, spec, receive, time.perf_counter())
                for sentinel in wait(list(running)):
                    proc, spec, receive, start = running.pop(sentinel)
                    try:
                        result = receive.recv() if receive.poll() else None
                    except (EOFError, OSError):          # the process died without answering
                        result = None
                    proc.join()
                    receive.close()
                    yield result if result is not None else _killed(spec, proc.exitcode, time.perf_counter() - start)
        finally:                        # interrupted: each run records itself as interrupted, then stops
            for proc, *_ in running.values():
                proc.terminate()
            deadline = time.perf_counter() + self.GRACE_S
            for proc, *_ in running.values():
                proc.join(max(0.0, deadline - time.perf_counter()))
                if proc.is_alive():
                    proc.kill()


DASK_EXTRA = "pip install 'dncsim[dask]'"
#: seconds a study waits for the scheduler of ``cluster: {kind: address}`` (or ``scheduler:``) to answer
SCHEDULER_TIMEOUT_S = 20


def _slurm_kwargs(cfg: SlurmClusterConfig, log_directory: Path) -> dict:
    directives = list(cfg.job_extra_directives) + ([f"--gres=gpu:{cfg.gpus}"] if cfg.gpus else [])
    worker_args = list(cfg.worker_args) + (["--resources", "GPU=1"] if cfg.gpus else [])
    return dict(queue=cfg.queue, account=cfg.account, cores=cfg.processes, processes=cfg.processes, job_cpu=cfg.cores,
                memory=cfg.memory, walltime=cfg.walltime, job_extra_directives=directives,
                job_script_prologue=list(cfg.prologue), worker_extra_args=worker_args,
                log_directory=str(log_directory), **cfg.options)


def slurm_cluster(cfg: SlurmClusterConfig, log_directory: Path):
    """The ``dask_jobqueue.SLURMCluster`` of ``cfg``, not scaled yet (no job submitted: the caller scales
    it). Each job books ``cores`` CPUs, ``memory`` and ``gpus`` GPUs (``--gres=gpu:N``) for ``walltime``,
    and runs ``processes`` dask worker processes of one thread each (one run at a time each), started
    with ``--resources GPU=1`` when the job has GPUs. Starts the scheduler in this process, which gives a
    worker no run beyond the ones it runs and fails a run whose worker died (job cancelled, out of time
    or memory) at once (allowed-failures 0)."""
    try:
        import dask
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise DncsimError(f"cluster.kind: 'slurm' needs dask-jobqueue: {DASK_EXTRA}") from None
    Path(log_directory).mkdir(parents=True, exist_ok=True)
    # one run per worker thread at a time, none queued on a worker (a queued run would die with its job)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}):
        return SLURMCluster(**{"silence_logs": "error", **_slurm_kwargs(cfg, log_directory)})


class ClusterFailed(DncsimError):
    """The cluster could not run the study (its jobs end without a worker, SLURM does not answer): exit 1."""

    exit_code = 1


#: words of SLURM's refusal -> what in the cluster section asked for it
_SLURM_REFUSALS = (
    ("partition", "cluster.queue names no partition this user may submit to (sinfo lists them)"),
    ("account", "cluster.account is not an account of this user on that partition (sacctmgr show assoc)"),
    ("time limit", "cluster.walltime exceeds the partition's time limit (sinfo -o '%P %l')"),
    ("node configuration", "no node of the partition has cluster.cores CPUs, cluster.memory and cluster.gpus GPUs "
                           "(sinfo -o '%P %c %m %G')"),
    ("memory", "cluster.memory is more than the partition allows (sinfo -o '%P %m')"),
    ("gres", "cluster.gpus: the partition offers no such GPUs (sinfo -o '%P %G')"),
    ("qos", "a --qos in cluster.job_extra_directives is not allowed here"),
    ("configuration source", "this machine has no SLURM configuration (slurm.conf, SLURM_CONF): start the study "
                             "where jobs are submitted, such as the cluster's login node"),
    ("slurm controller", "slurmctld does not answer from here (scontrol ping)"),
)


def slurm_preflight(cfg: SlurmClusterConfig) -> None:
    """Ask SLURM whether it accepts the job (``sbatch --test-only`` of the job script; nothing is queued);
    a refusal raises a one-line :class:`DncsimError` quoting SLURM's error and naming the key behind it."""
    import inspect
    import subprocess
    import tempfile

    from dask_jobqueue.core import Job
    from dask_jobqueue.slurm import SLURMJob
    accepted = set(inspect.signature(Job.__init__).parameters) | set(inspect.signature(SLURMJob.__init__).parameters)
    with tempfile.TemporaryDirectory(prefix="dncsim-check-") as tmp:     # the study directory is not made yet
        kwargs = {k: v for k, v in _slurm_kwargs(cfg, Path(tmp) / "logs").items() if k in accepted}
        script = Path(tmp) / "job.sh"
        script.write_text(SLURMJob(scheduler="tcp://127.0.0.1:8786", name="dncsim-check", **kwargs).job_script())
        try:
            done = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterFailed(f"cluster: sbatch --test-only did not answer ({exc}); is SLURM reachable from "
                                "here?") from None
    if done.returncode == 0:
        return
    lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
    error = re.sub(r"^(sbatch: (error|fatal): |allocation failure: )", "",
                   lines[-1] if lines else f"exit {done.returncode}")
    hint = next((h for word, h in _SLURM_REFUSALS if word in error.lower()), "see the cluster section")
    asked = ", ".join(f"{k} {v}" for k, v in (("queue", cfg.queue), ("cores", cfg.cores), ("memory", cfg.memory),
                                               ("walltime", cfg.walltime), ("gpus", cfg.gpus)) if v)
    raise DncsimError(f"cluster: SLURM refuses the job ({asked}): \"{error}\"; {hint}")


_JOB_END = re.compile(r"\*\*\* JOB (\d+) ON \S+ (.+?) \*\*\*")


def slurm_job_end(log_directory: Path, worker_address: str) -> Optional[str]:
    """What SLURM said when it ended the job whose worker had ``worker_address`` (the ``*** JOB 12 ON node
    CANCELLED AT ... ***`` line of its log, such as ``DUE TO TIME LIMIT`` or ``CANCELLED``), as
    ``job 12: CANCELLED AT ... (log PATH)``; ``job 12 (log PATH)`` when SLURM wrote no such line; None
    when no job log names the worker."""
    for log in sorted(Path(log_directory).glob("*.err")) + sorted(Path(log_directory).glob("*.out")):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        if worker_address not in text:
            continue
        found = _JOB_END.search(text)
        if found:
            return f"job {found.group(1)}: {found.group(2)} (log {log})"
        job = re.search(r"(\d+)\.\w+$", log.name)
        return f"job {job.group(1) if job else '?'} (log {log})"
    return None


def wants_gpu(run_config: dict, cluster) -> bool:
    """Whether a study run takes one GPU (a dask worker resource): device cuda or cuda:N, or auto on a SLURM
    cluster whose jobs have GPUs."""
    device = str(run_config.get("device", "auto"))
    if device.startswith("cuda"):
        return cluster.kind != "local"
    return device == "auto" and cluster.kind == "slurm" and cluster.gpus > 0


_GPU_CLAIM = None       # (lock file, device index): the GPU this worker process holds for its life


def claim_gpu() -> Optional[int]:
    """Make the first visible GPU that no other process of this job on this host holds torch's current device
    (so ``device: cuda`` and ``auto`` land on it), and hold it for this process's life; returns its index.

    The hold is an ``flock`` on a file per GPU in the temporary directory (named by user, SLURM job and the
    CUDA_VISIBLE_DEVICES entry), released by the kernel when the process dies. None without CUDA, or when
    every visible GPU is held (the run then shares the default device)."""
    global _GPU_CLAIM
    import torch
    if _GPU_CLAIM is not None:
        torch.cuda.set_device(_GPU_CLAIM[1])
        return _GPU_CLAIM[1]
    if not torch.cuda.is_available():
        return None
    try:
        import fcntl
    except ImportError:           # not POSIX
        return None
    import tempfile
    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")][:count] if visible else [str(i) for i in range(count)]
    job = os.environ.get("SLURM_JOB_ID", "nojob")
    for index, ident in enumerate(ids):
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"dncsim-gpu-{os.getuid()}-{job}-{ident}.lock")
        handle = open(Path(tempfile.gettempdir()) / name, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _GPU_CLAIM = (handle, index)
        torch.cuda.set_device(index)
        return index
    return None


class DaskExecutor:
    """dask.distributed on ``cluster`` (:data:`ClusterConfig`): a LocalCluster of ``workers`` single-threaded
    processes, SLURM jobs (:func:`slurm_cluster`: ``scale``, enough for ``workers``, or ``adapt``), or a
    running ``scheduler``'s workers. A ``gpu`` spec gets ``resources={'GPU': 1}``. On SLURM a run whose job
    ended is failed with SLURM's reason; if all jobs end before reaching the scheduler, the study stops
    with their log's last line.
    """

    #: seconds between the looks at the SLURM jobs while runs are waiting
    watch_interval = 5.0

    def __init__(self, workers: int, scheduler: Optional[str] = None, cluster=None,
                 log_directory: Optional[Path] = None):
        if cluster is None:
            cluster = AddressClusterConfig(address=scheduler) if scheduler else LocalClusterConfig()
        self.workers, self.cluster = workers, cluster
        self.log_directory = Path(log_directory) if log_directory is not None else Path("dask-logs")
        self._checked, self._met_worker = False, False

    def check(self) -> None:
        """The one-line errors that need nothing started: dask (and dask-jobqueue, SLURM's sbatch) missing, and
        a job SLURM would refuse (:func:`slurm_preflight`)."""
        if self._checked:
            return
        import importlib.util
        import shutil
        if importlib.util.find_spec("distributed") is None:
            raise DncsimError(f"engine: 'dask' needs dask.distributed: {DASK_EXTRA}")
        if self.cluster.kind == "slurm":
            if importlib.util.find_spec("dask_jobqueue") is None:
                raise DncsimError(f"cluster.kind: 'slurm' needs dask-jobqueue: {DASK_EXTRA}")
            if shutil.which("sbatch") is None:
                raise DncsimError("cluster.kind: 'slurm' needs SLURM's sbatch on PATH (start the study on a "
                                  "machine that submits jobs, such as the cluster's login node)")
            slurm_preflight(self.cluster)
        self._checked = True

    def _start(self):
        from dask.distributed import Client, LocalCluster
        kind = self.cluster.kind
        if kind == "address":
            try:
                return Client(self.cluster.address, timeout=f"{SCHEDULER_TIMEOUT_S}s"), None
            except (OSError, TimeoutError) as exc:
                raise DncsimError(f"scheduler: cannot connect to {self.cluster.address} ({exc})") from None
        if kind == "slurm":
            cluster = slurm_cluster(self.cluster, self.log_directory)
            # a fixed number of jobs is adapt(n, n): the adaptive loop submits a job again when one ends
            fixed = self.cluster.scale or -(-self.workers // self.cluster.processes)
            adapt = self.cluster.adapt
            low, high = (adapt.minimum, adapt.maximum) if adapt else (fixed, fixed)
            cluster.adapt(minimum_jobs=low, maximum_jobs=high)
            return Client(cluster), cluster
        cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        return Client(cluster), cluster

    def _check_gpu_workers(self, client, specs) -> None:
        if self.cluster.kind != "address" or not any(s.get("gpu") for s in specs):
            return
        workers = client.scheduler_info().get("workers", {})
        if workers and not any((w.get("resources") or {}).get("GPU") for w in workers.values()):
            raise DncsimError(f"cluster: runs ask for a GPU but no worker of {self.cluster.address} offers one; "
                              "start the workers with: dask worker ADDRESS --nthreads 1 --resources GPU=1 "
                              "(one worker process per GPU)")

    def open(self) -> None:
        """Connect to the scheduler (or start the cluster) now; the next :meth:`map_unordered` uses that
        connection (without it, it connects itself) and closes it when done."""
        self.check()
        self._session = self._start()

    def close(self) -> None:
        client, cluster = getattr(self, "_session", None) or (None, None)
        self._session = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def map_unordered(self, fn, specs: Sequence[dict]) -> Iterator[dict]:
        from dask.distributed import as_completed as dask_completed
        if getattr(self, "_session", None) is None:
            self.open()
        client, cluster = self._session
        try:
            self._check_gpu_workers(client, specs)
            futures = {client.submit(fn, s, pure=False, key=f"dncsim-{s['name']}",
                                     resources={"GPU": 1} if s.get("gpu") else None): s for s in specs}
            done = dask_completed(list(futures))
            watched = time.monotonic()
            while not done.is_empty():
                batch = done.next_batch(block=False)
                for f in batch:
                    try:
                        yield f.result()
                    except Exception as exc:      # noqa: BLE001 - a lost worker (KilledWorker) fails one run
                        yield {"name": futures[f]["name"], "status": "failed", "seconds": 0.0,
                               "error": self._lost(exc) + "; rerun with --retry-failed to resume it"}
                if not batch:
                    time.sleep(0.2)
                if self.cluster.kind == "slurm" and time.monotonic() - watched > self.watch_interval:
                    self._watch_slurm(client, cluster)
                    watched = time.monotonic()
        finally:
            self.close()

    def _lost(self, exc: Exception) -> str:
        """The error of a run whose worker died: on SLURM, what SLURM said when it ended the job."""
        text = f"{type(exc).__name__}: {exc}"
        found = re.search(r"(tcp|tls|inproc|ucx)://[\w.:\[\]-]+?(?=\.? |\.$|$)", str(exc))
        if self.cluster.kind != "slurm" or type(exc).__name__ != "KilledWorker" or not found:
            return text
        ended = slurm_job_end(self.log_directory, found.group(0))
        return (f"its SLURM {ended}" if ended else f"its SLURM job ended (worker {found.group(0)})") + \
            f", so the run stopped: {type(exc).__name__}"

    def _watch_slurm(self, client, cluster) -> None:
        """Stop the study when every SLURM job submitted so far has ended and no worker ever reached the
        scheduler (the nodes cannot reach it, or the job fails before its worker starts), quoting the log."""
        import subprocess
        if self._met_worker or client.scheduler_info().get("workers"):
            self._met_worker = True
            return
        ids = [str(job.job_id) for job in list(cluster.workers.values()) if getattr(job, "job_id", None)]
        if not ids:
            return
        try:
            out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(ids)],
                                 capture_output=True, text=True, timeout=30).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            return
        states = dict(zip(out[::2], out[1::2]))
        live = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")
        if any(states.get(i, "ENDED") in live for i in ids):
            return
        last = ""
        for job in ids:
            for log in sorted(self.log_directory.glob(f"*-{job}.*")):
                lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
                telling = [ln for ln in lines if re.search(r"(?i)error|timed out|refused|unreachable|failed", ln)]
                if lines:
                    last = f"; {log}: {(telling or lines)[-1][:300]}"
        ended = ", ".join(sorted({states.get(i, "ENDED") for i in ids}))
        raise ClusterFailed(f"cluster: the SLURM jobs {', '.join(ids)} ended ({ended}) and no dask worker reached the "
                            f"scheduler at {cluster.scheduler_address}: can the nodes reach this machine? (set "
                            f"cluster.options.interface or scheduler_options.host to a network they share){last}")


def _executor(cfg: StudyConfig, out: Path):
    if cfg.engine != "dask":
        return LocalExecutor(cfg.workers)
    cluster = cfg.dask_cluster
    logs = getattr(cluster, "log_directory", None) or out / "dask-logs"
    return DaskExecutor(cfg.workers, cluster=cluster, log_directory=logs)


def _run_status(run_dir: Path) -> Optional[str]:
    try:
        return json.loads((run_dir / "manifest.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _eta(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class StudyFailed(RunFailed):
    """A study whose runs ran, some of them failing: exit status 1 once its tables and report are written."""


def _check_out(out: Path) -> Optional[dict]:
    """The ``study.json`` of study directory ``out`` (None when ``out`` is new or empty). DncsimError when
    ``out`` is not a directory, or is one that holds anything but a dncsim study (its ``study.json``, a
    mapping with a ``runs`` list, is the proof; temporary files of unfinished writes and a ``dask-logs``
    folder alone do not count): a study writes its files there and must not overwrite another's."""
    if out.exists() and not out.is_dir():
        raise DncsimError(f"out: {out} exists and is not a directory")
    if not out.is_dir():
        return None
    try:
        state = json.loads((out / "study.json").read_text())
    except FileNotFoundError:
        state = None
    except (OSError, ValueError):
        state = "unreadable"
    if isinstance(state, dict) and isinstance(state.get("runs"), list):
        return state
    if state is None and all(is_atomic_temporary(p.name) or p.name == "dask-logs" for p in out.iterdir()):
        return None
    raise DncsimError(f"out: {out} exists and is not a dncsim study directory"
                      + (" (study.json is not a study record)" if state is not None else "")
                      + "; choose another --out or out: (a new or empty directory)")


def study_runs(study_dir: Path) -> List[tuple]:
    """(run directory, factors) of the finished runs that ``study_dir``/study.json lists (under runs/)."""
    try:
        state = json.loads((study_dir / "study.json").read_text())
        return [(study_dir / "runs" / r["name"], dict(r.get("factors") or {})) for r in state["runs"]
                if r.get("status") == "finished"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DncsimError(f"{study_dir / 'study.json'}: not a readable study record ({type(exc).__name__})") from None


def paper_claims_of_study(study_dir: Path, setting: str = "auto") -> Optional[dict]:
    """The paper's claims over the study's finished runs (``analysis.report.study.paper_over_study``)."""
    from dncsim.analysis.report.study import paper_over_study
    return paper_over_study(study_runs(Path(study_dir)), setting)


def run_study(cfg: StudyConfig, *, stream=None) -> Path:
    """Run every run of the grid that is not finished yet (failed ones only with ``retry_failed``),
    then aggregate, test and report. Returns the study directory; :class:`StudyFailed` (after the tables
    and the report) when any run failed. Nothing is written before the study directory is known to be a
    study's (or new) and the dask scheduler, if any, answered."""
    stream = sys.stderr if stream is None else stream
    specs = expand_grid(cfg)            # every run config validated before anything heavy is imported
    out = Path(cfg.out) if cfg.out else Path("studies") / cfg.name
    state = _check_out(out)
    executor = _executor(cfg, out)
    if isinstance(executor, DaskExecutor):
        executor.check()                # dask, dask-jobqueue, sbatch: before anything is written
    state_path = out / "study.json"
    previous = {}
    try:
        previous = {r["name"]: r for r in (state or {})["runs"]}
    except (KeyError, TypeError):
        previous = {}
    cluster = cfg.dask_cluster if cfg.engine == "dask" else None
    if cfg.threads_per_worker:
        threads = cfg.threads_per_worker
    elif cluster is not None and cluster.kind == "slurm":        # a job's CPUs, shared by its runs
        threads = max(1, cluster.cores // cluster.processes)
    else:
        threads = max(1, (os.cpu_count() or 1) // cfg.workers)
    records, todo = {}, []
    for spec in specs:
        run_dir = out / "runs" / spec["name"]
        rec = {"name": spec["name"], "factors": spec["factors"], "path": str(run_dir), "status": _run_status(run_dir),
               "error": previous.get(spec["name"], {}).get("error"),
               "seconds": previous.get(spec["name"], {}).get("seconds"), **({"design": spec["design"]}
                                                                              if "design" in spec else {})}
        if rec["status"] != "finished" and previous.get(spec["name"], {}).get("status") == "failed":
            rec["status"] = "failed"
        records[spec["name"]] = rec
        if rec["status"] == "finished" or (rec["status"] == "failed" and not cfg.retry_failed):
            continue
        todo.append({**spec, "out": str(run_dir), "threads": threads,
                     "gpu": cluster is not None and wants_gpu(spec["config"], cluster)})
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def save():
        atomic_write_json(state_path, {"name": cfg.name, "started": started, "engine": cfg.engine,
                                       "workers": cfg.workers, "threads_per_worker": threads,
                                       "runs": [records[spec["name"]] for spec in specs]})

    if todo:
        executor.open()                 # the scheduler answers (or the cluster starts) before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
        save()                          # study.json first: it is what makes the directory a study's
        atomic_write_text(out / "study.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    except BaseException:
        executor.close()
        raise
    skipped = len(specs) - len(todo)
    where = ""
    if cluster is not None and cluster.kind == "slurm":
        jobs = (f"adaptive {cluster.adapt.minimum}-{cluster.adapt.maximum}" if cluster.adapt
                else str(cluster.scale or -(-cfg.workers // cluster.processes)))
        where = (f" on SLURM ({jobs} jobs x {cluster.processes} runs" + (f", {cluster.gpus} GPUs" if cluster.gpus
                                                                          else "") + " each)")
    elif cluster is not None and cluster.kind == "address":
        where = f" at {cluster.address}"
    print(f"study {cfg.name}: {len(specs)} runs ({skipped} already done or failed), engine {cfg.engine}{where}, "
          f"{cfg.workers} workers x {threads} threads", file=stream)
    if cfg.design.active:
        print(design_summary(cfg.design, math.prod(map(len, cfg.factors.values())), len(specs),
                             len(specs[0]["design"]["order"] or []) or None), file=stream)
    tty = bool(getattr(stream, "isatty", lambda: False)())
    bar = tqdm(total=len(todo), desc="runs", unit="run", file=stream, disable=not tty, dynamic_ncols=True)
    t0 = time.perf_counter()
    results = executor.map_unordered(run_one, todo) if todo else iter([])
    n = 0
    try:
        for n, result in enumerate(results, start=1):
            records[result["name"]].update(status=result["status"], error=result["error"],
                                           seconds=result["seconds"])
            save()
            bar.update(1)
            if not tty:
                elapsed = time.perf_counter() - t0
                print(f"[{n}/{len(todo)}] {result['name']} {result['status']} in {result['seconds']:.0f} s; "
                      f"elapsed {_eta(elapsed)}, ETA {_eta(elapsed / n * (len(todo) - n))}"
                      + (f" ({result['error']})" if result["error"] else ""), file=stream, flush=True)
    except KeyboardInterrupt as exc:    # Ctrl-C, SIGTERM, SIGHUP (dncsim.simulator.interrupts)
        from dncsim.simulator.interrupts import Interrupted, signal_of
        if hasattr(results, "close"):
            results.close()             # stops the runs still going (each records status: interrupted)
        bar.close()
        raise Interrupted(f"interrupted after {n} of {len(todo)} runs; run the same command again to resume",
                          signal_of(exc)) from None
    bar.close()
    failed = [r for r in records.values() if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} run(s) failed: " + "; ".join(f"{r['name']}: {r['error']}" for r in failed[:3])
              + ("" if len(failed) <= 3 else " ...") + " (see study.json; rerun with --retry-failed)", file=stream)
    finished = [spec for spec in specs if records[spec["name"]]["status"] == "finished"]
    from dncsim.analysis.report.study import build_study_report

    report = build_study_report(out, [(Path(records[spec["name"]]["path"]), spec["factors"]) for spec in finished], cfg)
    print(f"study directory: {out}\nreport: {report / 'index.html'}", file=stream)
    if failed:
        raise StudyFailed(f"{len(failed)} of {len(specs)} runs failed (see {state_path}; rerun with "
                          "--retry-failed)")
    return out

