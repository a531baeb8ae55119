"""``dncsim study``: many runs over a grid of config factors, then statistics and a study report.

A study directory holds ``study.yaml`` (the resolved study config), ``study.json`` (every run's
factors, status, error and time; written after each run), ``runs/<name>/`` (ordinary run
directories), and once runs finished: ``tasks.csv``, ``pairs.csv``, ``statistics.json`` and
``report/`` (README, "Studies"). Finished runs are found and skipped; a failed run is recorded
with its error and retried only on request; one failure never stops the others.

Both engines run the same function, :func:`run_one`, on one spec per run: ``local`` in a process
pool, ``dask`` on a dask.distributed cluster (a scheduler address, or a LocalCluster).
"""
from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import re
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Union

import yaml
from pydantic import Field, ValidationError, field_validator
from tqdm import tqdm

from dncsim.common import DncsimError, StrictModel, atomic_write_json, atomic_write_text, one_line_error, read_yaml
from dncsim.simulator.config import run_from_mapping, set_values

__all__ = ["StatisticsConfig", "StudyConfig", "load_study_config", "expand_grid", "run_one", "LocalExecutor",
           "DaskExecutor", "run_study"]


class StatisticsConfig(StrictModel):
    """Which forgetting the hypothesis is tested on, and the resampling settings."""

    probe: Literal["ncc", "linear"] = "linear"
    protocol: Literal["refit", "frozen"] = "frozen"
    forgetting: Literal["forgetting_max", "forgetting_last"] = "forgetting_max"
    bootstrap: int = Field(2000, ge=100, description="cluster-bootstrap resamples (of runs)")
    permutations: int = Field(2000, ge=100, description="permutations for the p-value")
    alpha: float = Field(0.05, gt=0, lt=1)
    seed: int = Field(0, ge=0)
    include_unlearned: bool = Field(False, description="keep tasks that were never learned (accuracy within the "
                                                       "margin of chance right after their experience) in the tests")


class StudyConfig(StrictModel):
    """A base run config, overrides for every run, a grid of factors, the engine and the statistics."""

    name: Optional[str] = Field(None, description="study name (default: the study file's name)")
    base: Union[Path, Dict[str, Any]] = Field(description="a run config file, or an inline run config mapping")
    set: Dict[str, Any] = Field(default_factory=dict, description="KEY.PATH: value overrides for every run")
    factors: Dict[str, List[Any]] = Field(description="KEY.PATH: [values]; the runs are their cartesian product")
    engine: Literal["local", "dask"] = "local"
    workers: int = Field(2, ge=1, description="runs at once")
    threads_per_worker: Optional[int] = Field(None, ge=1, description="torch threads per run (default: cores / "
                                                                      "workers)")
    scheduler: Optional[str] = Field(None, description="dask: address of a running scheduler (default: a LocalCluster)")
    out: Optional[Path] = Field(None, description="study directory (default: studies/<name>)")
    retry_failed: bool = Field(False, description="run again the runs recorded as failed")
    statistics: StatisticsConfig = Field(default_factory=StatisticsConfig)

    @field_validator("factors")
    @classmethod
    def _factors(cls, v):
        if not v:
            raise ValueError("at least one factor is needed")
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"factor {empty[0]} has no values")
        return v


def load_study_config(path, overrides: Dict[str, Any] = None) -> StudyConfig:
    """Read and validate a study file; CLI values in ``overrides`` (engine, workers, ...) take precedence."""
    data = read_yaml(path)
    data.setdefault("name", Path(path).stem)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise DncsimError(one_line_error(exc, StudyConfig)) from None


def _label(key: str, value) -> str:
    parts = key.split(".")
    short = parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return f"{short}={re.sub(r'[^A-Za-z0-9_.+-]', '_', text)}"


def expand_grid(cfg: StudyConfig) -> List[dict]:
    """One spec per run: ``name``, ``factors`` (key -> value) and the validated run ``config`` mapping.

    Every run config is validated here, so a bad grid stops the study before anything runs.
    """
    base = read_yaml(cfg.base) if isinstance(cfg.base, Path) else dict(cfg.base)
    keys = list(cfg.factors)
    specs = []
    for i, values in enumerate(itertools.product(*(cfg.factors[k] for k in keys))):
        factors = dict(zip(keys, values))
        name = f"{i:03d}-" + "-".join(_label(k, v) for k, v in factors.items())
        data = set_values(json.loads(json.dumps(base)), {**cfg.set, **factors, "name": name})
        try:
            run_cfg = run_from_mapping(data)
        except DncsimError as exc:
            raise DncsimError(f"study run {name}: {exc}") from None
        specs.append({"name": name, "factors": factors, "config": run_cfg.model_dump(mode="json")})
    return specs


def run_one(spec: dict) -> dict:
    """Run (or resume) one study run in this process; never raises: failures come back as records.

    ``spec``: ``name``, ``config`` (a run config mapping), ``out`` (its run directory), ``threads``.
    Returns ``{"name", "status": "finished"|"failed", "seconds", "error"}``.
    """
    import torch

    from dncsim.simulator.run import run
    torch.set_num_threads(int(spec["threads"]))
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


def _run_in_child(fn, spec: dict, conn) -> None:
    _die_with_parent()
    conn.send(fn(spec))
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

    def __init__(self, workers: int):
        self.workers = workers

    def map_unordered(self, fn, specs: Sequence[dict]) -> Iterator[dict]:
        from multiprocessing.connection import wait
        ctx = multiprocessing.get_context("spawn")
        pending, running = list(specs), {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    spec = pending.pop(0)
                    receive, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_run_in_child, args=(fn, spec, send), name=f"dncsim-{spec['name']}")
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
        finally:
            for proc, *_ in running.values():
                proc.kill()


class DaskExecutor:
    """dask.distributed: connect to ``scheduler`` (an address) or start a LocalCluster of ``workers``
    single-threaded worker processes."""

    def __init__(self, workers: int, scheduler: Optional[str] = None):
        self.workers, self.scheduler = workers, scheduler

    def map_unordered(self, fn, specs: Sequence[dict]) -> Iterator[dict]:
        try:
            from dask.distributed import Client, LocalCluster
            from dask.distributed import as_completed as dask_completed
        except ImportError:
            raise DncsimError("engine: 'dask' needs dask.distributed: pip install 'dncsim[dask]'") from None
        if self.scheduler:
            try:
                client = Client(self.scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise DncsimError(f"scheduler: cannot connect to {self.scheduler} ({exc})") from None
            cluster = None
        else:
            cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=40)
            client = Client(cluster)
        try:
            futures = {client.submit(fn, s, pure=False, key=f"dncsim-{s['name']}"): s for s in specs}
            for f in dask_completed(list(futures)):
                try:
                    yield f.result()
                except Exception as exc:      # noqa: BLE001 - a lost worker (KilledWorker) fails one run, not all
                    yield {"name": futures[f]["name"], "status": "failed", "seconds": 0.0,
                           "error": f"{type(exc).__name__}: {exc}; rerun with --retry-failed to resume it"}
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _executor(cfg: StudyConfig):
    return DaskExecutor(cfg.workers, cfg.scheduler) if cfg.engine == "dask" else LocalExecutor(cfg.workers)


def _run_status(run_dir: Path) -> Optional[str]:
    try:
        return json.loads((run_dir / "manifest.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _eta(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def run_study(cfg: StudyConfig, *, stream=sys.stderr) -> Path:
    """Run every run of the grid that is not finished yet (failed ones only with ``retry_failed``),
    then aggregate, test and report. Returns the study directory."""
    specs = expand_grid(cfg)            # every run config validated before anything heavy is imported
    out = Path(cfg.out) if cfg.out else Path("studies") / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    state_path = out / "study.json"
    previous = {}
    if state_path.exists():
        try:
            previous = {r["name"]: r for r in json.loads(state_path.read_text())["runs"]}
        except (ValueError, KeyError):
            previous = {}
    threads = cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // cfg.workers)
    records, todo = {}, []
    for spec in specs:
        run_dir = out / "runs" / spec["name"]
        rec = {"name": spec["name"], "factors": spec["factors"], "path": str(run_dir), "status": _run_status(run_dir),
               "error": previous.get(spec["name"], {}).get("error"),
               "seconds": previous.get(spec["name"], {}).get("seconds")}
        if rec["status"] != "finished" and previous.get(spec["name"], {}).get("status") == "failed":
            rec["status"] = "failed"
        records[spec["name"]] = rec
        if rec["status"] == "finished" or (rec["status"] == "failed" and not cfg.retry_failed):
            continue
        todo.append({**spec, "out": str(run_dir), "threads": threads})
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def save():
        atomic_write_json(state_path, {"name": cfg.name, "started": started, "engine": cfg.engine,
                                       "workers": cfg.workers, "threads_per_worker": threads,
                                       "runs": [records[spec["name"]] for spec in specs]})

    save()
    skipped = len(specs) - len(todo)
    print(f"study {cfg.name}: {len(specs)} runs ({skipped} already done or failed), engine {cfg.engine}, "
          f"{cfg.workers} workers x {threads} threads", file=stream)
    tty = bool(getattr(stream, "isatty", lambda: False)())
    bar = tqdm(total=len(todo), desc="runs", unit="run", file=stream, disable=not tty, dynamic_ncols=True)
    t0 = time.perf_counter()
    for n, result in enumerate(_executor(cfg).map_unordered(run_one, todo) if todo else [], start=1):
        records[result["name"]].update(status=result["status"], error=result["error"], seconds=result["seconds"])
        save()
        bar.update(1)
        if not tty:
            elapsed = time.perf_counter() - t0
            print(f"[{n}/{len(todo)}] {result['name']} {result['status']} in {result['seconds']:.0f} s; "
                  f"elapsed {_eta(elapsed)}, ETA {_eta(elapsed / n * (len(todo) - n))}"
                  + (f" ({result['error']})" if result["error"] else ""), file=stream, flush=True)
    bar.close()
    failed = [r for r in records.values() if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} run(spec) failed: " + "; ".join(f"{r['name']}: {r['error']}" for r in failed[:3])
              + ("" if len(failed) <= 3 else " ...") + " (see study.json; rerun with --retry-failed)", file=stream)
    finished = [spec for spec in specs if records[spec["name"]]["status"] == "finished"]
    from dncsim.analysis.report.study import build_study_report

    report = build_study_report(out, [(Path(records[spec["name"]]["path"]), spec["factors"]) for spec in finished], cfg)
    print(f"study directory: {out}\nreport: {report / 'index.html'}", file=stream)
    return out

