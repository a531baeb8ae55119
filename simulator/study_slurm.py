"""SLURM for a dask study: the ``dask_jobqueue.SLURMCluster`` of a ``cluster: {kind: slurm}``, SLURM's
verdict on its job before anything starts, and what SLURM said when it ended a job."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from dncsim.common import DncsimError
from dncsim.simulator.study_config import SlurmClusterConfig

__all__ = ["DASK_EXTRA", "slurm_cluster", "slurm_preflight", "slurm_job_end", "ClusterFailed"]

DASK_EXTRA = "pip install 'dncsim[dask]'"


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

