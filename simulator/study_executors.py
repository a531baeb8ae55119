"""Where a study's runs run: :func:`run_one` (one run in this process), :class:`LocalExecutor` (a process
per run on this machine) and :class:`DaskExecutor` (dask.distributed: a LocalCluster, SLURM jobs or a
running scheduler), and the GPU a worker process claims (:func:`claim_gpu`)."""
from __future__ import annotations

import io
import multiprocessing
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator, Optional, Sequence

from dncsim.common import DncsimError
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.study_config import AddressClusterConfig, LocalClusterConfig
from dncsim.simulator.study_slurm import DASK_EXTRA, ClusterFailed, slurm_cluster, slurm_job_end, slurm_preflight

__all__ = ["run_one", "LocalExecutor", "DaskExecutor", "wants_gpu", "claim_gpu", "SCHEDULER_TIMEOUT_S"]

#: seconds a study waits for the scheduler of ``cluster: {kind: address}`` (or ``scheduler:``) to answer
SCHEDULER_TIMEOUT_S = 20


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

