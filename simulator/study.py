"""``dncsim study``: many runs over a grid of config factors, then statistics and a study report.

A study directory holds ``study.yaml``, ``study.json`` (each run's factors, status, error, time),
``runs/<name>/`` and, once runs finished, ``tasks.csv``, ``pairs.csv``, ``statistics.json``
(``analysis.study``) and ``report/`` (``analysis.report.study``). Finished runs are skipped; failed ones
retried only on request. This module orchestrates; the schema is ``study_config``, the runs of the grid
``study_grid``, the engines ``study_executors`` (local, dask; GPU claiming) and ``study_slurm``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import yaml
from tqdm import tqdm

from dncsim.analysis.study import StatisticsConfig
from dncsim.common import DncsimError, RunFailed, atomic_write_json, atomic_write_text, is_atomic_temporary
from dncsim.simulator.design import design_summary
from dncsim.simulator.study_config import (AdaptConfig, AddressClusterConfig, ClusterConfig, LocalClusterConfig,
                                           SlurmClusterConfig, StudyConfig, load_study_config)
from dncsim.simulator.study_executors import DaskExecutor, LocalExecutor, claim_gpu, run_one, wants_gpu
from dncsim.simulator.study_grid import expand_grid
from dncsim.simulator.study_slurm import ClusterFailed, slurm_cluster, slurm_job_end, slurm_preflight

__all__ = ["StatisticsConfig", "StudyConfig", "LocalClusterConfig", "SlurmClusterConfig", "AddressClusterConfig",
           "AdaptConfig", "ClusterConfig", "load_study_config", "expand_grid", "run_one", "LocalExecutor",
           "DaskExecutor", "slurm_cluster", "slurm_preflight", "slurm_job_end", "ClusterFailed", "wants_gpu",
           "claim_gpu", "run_study", "StudyFailed", "study_runs", "paper_claims_of_study"]


def _executor(cfg: StudyConfig, out: Path):
    if cfg.engine != "dask":
        return LocalExecutor(cfg.workers)
    cluster = cfg.dask_cluster
    logs = getattr(cluster, "log_directory", None) or out / "dask-logs"
    return DaskExecutor(cfg.workers, cluster=cluster, log_directory=logs)


def _run_status(run_dir: Path) -> Optional[str]:
    from dncsim.rundir import run_status
    return run_status(run_dir)


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
    from dncsim.analysis.study import write_study_products
    from dncsim.rundir import load_run

    runs = [(Path(records[spec["name"]]["path"]), spec["factors"]) for spec in finished]
    products = write_study_products(out, [(load_run(path), factors) for path, factors in runs], cfg.statistics)
    report = build_study_report(out, runs, cfg, products)
    print(f"study directory: {out}\nreport: {report / 'index.html'}", file=stream)
    if failed:
        raise StudyFailed(f"{len(failed)} of {len(specs)} runs failed (see {state_path}; rerun with "
                          "--retry-failed)")
    return out

