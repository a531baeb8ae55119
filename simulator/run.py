"""``dncsim run``: a continual run end to end, written to a run directory that can be resumed.

A run directory holds (README, "Outputs"): ``config.yaml`` (the resolved config), ``manifest.json``
(versions, git commit, seed, device, times, status), ``metrics.csv`` / ``metrics.jsonl`` (the
long-format metrics table), ``accuracy.json`` (accuracy matrices), ``geometry/row_<t>.npz`` (class
geometry per task per row), ``tb/`` (TensorBoard events) and ``checkpoint.pt`` (the state after the
last finished experience). Every file is written atomically. A directory is complete only when
``manifest.json`` says ``status: finished``; anything else is resumed by running into it again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import yaml

from analysis import names as N
from analysis.errors import DncsimError
from analysis.plugins import EvaluationSettings, StreamEvaluation, TaskSpec
from analysis.text_table import format_table
from scenarios import build_scenario
from scenarios.streams import Scenario
from simulator.build import build_strategy, resolve_device
from simulator.config import RunConfig
from simulator.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from simulator.progress import StreamProgress
from simulator.strategies import FeatureDistillation, ParameterImportance, TensorReplay

__all__ = ["FeatureExtractor", "RunDirectory", "run"]

CHECKPOINT_FORMAT = 1


# --- features for evaluation -------------------------------------------------------------------------

class FeatureExtractor:
    """``features(task, split)``: backbone features (n, d) of a task's split with the current weights.

    Inputs without a domain shift share the source tensors, so their features are computed once
    per evaluation row for the whole split and indexed per task; shifted experiences get their own.
    ``clear()`` drops the cache (called by the evaluation at the start of every row).
    """

    def __init__(self, sc: Scenario, device: torch.device, batch_size: int, model: Optional[torch.nn.Module] = None):
        self.model, self.sc, self.device, self.batch_size = model, sc, device, batch_size
        self._cache: Dict[tuple, torch.Tensor] = {}

    def clear(self) -> None:
        self._cache = {}

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return torch.cat([self.model.backbone(x[i:i + self.batch_size].to(self.device))
                                  for i in range(0, len(x), self.batch_size)])
        finally:
            self.model.train(was_training)

    def __call__(self, task: int, split: str) -> torch.Tensor:
        e = self.sc.experiences[task]
        idx = e.train_idx if split == "train" else e.test_idx
        if e.shift is None:
            key = ("source", split)
            if key not in self._cache:
                self._cache[key] = self._embed(self.sc.source.split(split).x)
            return self._cache[key][idx.to(self._cache[key].device)]
        key = (task, split)
        if key not in self._cache:
            self._cache[key] = self._embed(self.sc.experience_data(task, split)[0])
        return self._cache[key]


def task_specs(sc: Scenario) -> List[TaskSpec]:
    """One TaskSpec per experience; tasks measured on the same test samples share a ``group``."""
    specs = []
    for e in sc.experiences:
        lab = next(l for l in sc.labelings if l.spec == e.labeling)
        digest = hashlib.sha1(e.test_idx.numpy().tobytes()).hexdigest()[:12]
        specs.append(TaskSpec(index=e.index, name=e.name, train_labels=lab.train[e.train_idx],
                              test_labels=lab.test[e.test_idx], group=f"{e.shift_name or 'none'}:{digest}"))
    return specs


def evaluation_settings(cfg: RunConfig) -> EvaluationSettings:
    ev, an = cfg.evaluation, cfg.analysis
    return EvaluationSettings(probes=tuple(ev.probes), protocols=tuple(ev.protocols), linear_steps=ev.linear_steps,
                              linear_weight_decay=ev.linear_weight_decay, max_train_samples=ev.max_train_samples,
                              shots=tuple(an.shots), ways=an.ways, episodes=an.episodes, ddof=an.ddof,
                              geometry_split=an.split, seed=cfg.seed)


# --- random state, as plain tensors and lists (torch.load(weights_only=True) refuses ndarrays) ------

def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                       int(has_gauss), float(cached)],
            "python": [int(version), list(internal), gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# --- the run directory ------------------------------------------------------------------------------

def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version(), "torch": torch.__version__}   # the full build string (+cu130)
    for pkg in ("dncsim", "avalanche-lib", "numpy", "lightly", "kornia"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _git_commit() -> Optional[str]:
    src = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _config_dict(cfg: RunConfig) -> dict:
    return cfg.model_dump(mode="json")


def _first_difference(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}{k}"
            d = _first_difference(a[k], b[k], f"{path}{k}.")
            if d:
                return d
        return None
    return None if a == b else path.rstrip(".")


class RunDirectory:
    """The files of one run; see the module docstring."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def manifest(self) -> Optional[dict]:
        try:
            return json.loads(self.file("manifest.json").read_text())
        except (OSError, ValueError):
            return None

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.file("manifest.json"), manifest)

    def stored_config(self) -> Optional[dict]:
        try:
            return yaml.safe_load(self.file("config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return None

    def write_metrics(self, rows: List[dict]) -> None:
        buf = io.StringIO()
        buf.write(",".join(N.TABLE_COLUMNS) + "\n")
        for r in rows:
            buf.write(",".join("" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else str(r[c]))
                               for c in N.TABLE_COLUMNS) + "\n")
        atomic_write_text(self.file("metrics.csv"), buf.getvalue())
        atomic_write_text(self.file("metrics.jsonl"), "".join(json.dumps({c: r[c] for c in N.TABLE_COLUMNS}) + "\n"
                                                             for r in rows))

    def write_accuracy(self, ev: StreamEvaluation, sc: Scenario) -> None:
        mats = {k: [[None if v != v else v for v in row] for row in R.tolist()] for k, R in ev.R.items()}
        atomic_write_json(self.file("accuracy.json"), {
            "rows": ["before training"] + [f"after experience {t}" for t in range(len(sc.experiences))],
            "tasks": [e.name for e in sc.experiences], "matrices": mats})

    def write_geometry(self, t: int, geoms: dict) -> None:
        arrays = {}
        for k, g in geoms.items():
            for field in ("classes", "counts", "means", "var", "m4", "d2", "cdnv", "dir_cdnv", "theta", "mean_axis_var"):
                v = getattr(g, field)
                if v is not None:
                    arrays[f"task{k}/{field}"] = v.detach().cpu().numpy()
            arrays[f"task{k}/ddof"] = np.array(g.ddof)
            arrays[f"task{k}/pairs"] = g.pairs().cpu().numpy()            # (P, 2) class-index pairs i < j
            arrays[f"task{k}/axes"] = g.axes().detach().cpu().numpy().astype(np.float32)   # (P, d) unit u_ij
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        (self.path / "geometry").mkdir(exist_ok=True)
        atomic_write_bytes(self.path / "geometry" / f"row_{t + 1:03d}.npz", buf.getvalue())

    def save_checkpoint(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.file("checkpoint.pt"), buf.getvalue())

    def load_checkpoint(self) -> Optional[dict]:
        if not self.file("checkpoint.pt").exists():
            return None
        return torch.load(self.file("checkpoint.pt"), map_location="cpu", weights_only=True)


def prepare_directory(rd: RunDirectory, cfg: RunConfig, *, resume: bool, force: bool) -> bool:
    """Decide what to do with ``rd``: returns True to resume, False to start fresh (after clearing it
    when ``force``). A finished run is never overwritten without ``force``; an unfinished one with a
    different configuration is an error naming the first differing key."""
    if not rd.path.exists():
        if resume:
            raise DncsimError(f"--resume: {rd.path} does not exist")
        return False
    if not rd.path.is_dir():
        raise DncsimError(f"--out: {rd.path} exists and is not a directory")
    manifest = rd.manifest()
    if force:
        shutil.rmtree(rd.path)
        return False
    if manifest is None:
        if any(rd.path.iterdir()):
            raise DncsimError(f"{rd.path} exists and is not a dncsim run directory; choose another --out or use --force")
        return False
    if manifest.get("status") == "finished":
        raise DncsimError(f"{rd.path} holds a finished run; use --force to overwrite it or --out for a new directory")
    stored = rd.stored_config() or {}
    new = _config_dict(cfg)
    stored.pop("output", None)
    new.pop("output", None)
    diff = _first_difference(stored, new)
    if diff is not None:
        raise DncsimError(f"{rd.path} holds an unfinished run with a different configuration (first difference: "
                          f"{diff}); use --force to start over or --out for a new directory")
    return True


# --- the run -------------------------------------------------------------------------------------------

def _summary(ev: StreamEvaluation, sc: Scenario) -> str:
    """Per task after the last experience: accuracy (forgetting) per probe and protocol, dir-CDNV, CDNV."""
    t = len(sc.experiences) - 1
    last = {(r["metric"], r["task"], r["probe"], r["protocol"]): r["value"] for r in ev.rows if r["exp"] == t}
    combos = [(probe, proto) for probe in N.PROBES for proto in N.PROTOCOLS if f"{proto}/{probe}" in ev.R]
    rows = []
    for k, e in enumerate(sc.experiences):
        row = [k, e.name]
        for probe, proto in combos:
            acc = last.get((N.ACC, k, probe, proto))
            forg = last.get((N.FORGETTING_MAX, k, probe, proto))
            row.append("n/a" if acc is None else f"{acc:.3f}" + ("" if forg is None else f" ({forg:+.3f})"))
        row += [f"{last[(N.DIR_CDNV, k, None, None)]:.4g}", f"{last[(N.CDNV, k, None, None)]:.4g}"]
        rows.append(row)
    return format_table(["task", "name"] + [f"{probe} {proto}" for probe, proto in combos] + ["dir-CDNV", "CDNV"],
                        rows, title="After the last experience: test accuracy (forgetting = best earlier minus final)")


def _stateful_plugins(strategy) -> Dict[str, object]:
    """The strategy plugins whose state a checkpoint must carry, by class name (one of each at most)."""
    return {type(p).__name__: p for p in strategy.plugins
            if isinstance(p, (TensorReplay, ParameterImportance, FeatureDistillation))}


def _checkpoint_state(strategy, ev: StreamEvaluation, done: int, duration: float) -> dict:
    return {"format": CHECKPOINT_FORMAT, "experiences_done": done, "duration_s": duration,
            "model": strategy.model.state_dict(), "optimizer": strategy.optimizer.state_dict(),
            "plugins": {name: p.state_dict() for name, p in _stateful_plugins(strategy).items()},
            "evaluation": ev.state_dict(), "rng": rng_state()}


def _restore(strategy, ev: StreamEvaluation, state: dict) -> int:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise DncsimError(f"checkpoint.pt has format {state.get('format')}; this dncsim reads format {CHECKPOINT_FORMAT}")
    strategy.model.load_state_dict(state["model"])
    strategy.optimizer.load_state_dict(state["optimizer"])
    for name, plugin in _stateful_plugins(strategy).items():
        if isinstance(plugin, FeatureDistillation):        # needs the backbone's structure
            plugin.load_state_dict(state["plugins"][name], backbone=strategy.backbone)
        else:
            plugin.load_state_dict(state["plugins"][name])
    ev.load_state_dict(state["evaluation"])
    done = int(state["experiences_done"])
    strategy.seen = [strategy.experience_tensors(i) for i in range(done)]
    strategy.clock.train_exp_counter = done
    set_rng_state(state["rng"])
    return done


def run(cfg: RunConfig, out: Path, *, resume: bool = False, force: bool = False, argv: Optional[list] = None,
        stream=sys.stderr, quiet: bool = False) -> Path:
    """Run ``cfg`` into directory ``out`` (resuming an unfinished run there); returns the directory.

    Everything that can fail on the user's input (config, data, devices, the directory) fails before
    the directory is created or touched. Progress goes to ``stream``; ``quiet`` suppresses the final
    summary on stdout (studies run many runs at once).
    """
    rd = RunDirectory(out)
    resuming = prepare_directory(rd, cfg, resume=resume, force=force)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    sc = build_scenario(cfg.scenario)
    tasks = task_specs(sc)

    features = FeatureExtractor(sc, device, cfg.evaluation.batch_size)
    ev = StreamEvaluation(tasks, features, evaluation_settings(cfg))
    strategy = build_strategy(cfg, sc, device, evaluator=_evaluator(ev))
    features.model = strategy.model
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    done, duration = 0, 0.0
    rd.path.mkdir(parents=True, exist_ok=True)              # nothing can fail on the user's input past here
    if cfg.output.tensorboard:
        _attach_tensorboard(strategy, rd)
    if resuming:
        state = rd.load_checkpoint()
        if state is not None:
            done = _restore(strategy, ev, state)
            duration = float(state.get("duration_s", 0.0))
        started = (rd.manifest() or {}).get("started", started)
    else:
        atomic_write_text(rd.file("config.yaml"), yaml.safe_dump(_config_dict(cfg), sort_keys=False))
    manifest = {"name": cfg.name, "status": "running", "seed": cfg.seed, "device": str(device),
                "threads": torch.get_num_threads(), "started": started, "finished": None,
                "experiences_done": done, "experiences_total": len(sc.experiences), "duration_s": duration,
                "git_commit": _git_commit(), "versions": _versions(), "command": argv}
    rd.write_manifest(manifest)
    t0 = time.perf_counter()
    progress = StreamProgress(sc, cfg.training.epochs, done, stream=stream)
    strategy.plugins.append(progress)
    try:
        for t, exp in enumerate(list(sc.benchmark.train_stream)):
            if t < done:
                continue
            strategy.train(exp, eval_streams=[])
            for row, geoms in sorted(ev.pending_geometries.items()):
                rd.write_geometry(row, geoms)
            ev.pending_geometries.clear()
            rd.write_metrics(ev.rows)
            rd.write_accuracy(ev, sc)
            elapsed = round(duration + time.perf_counter() - t0, 2)
            if cfg.output.checkpoints:
                rd.save_checkpoint(_checkpoint_state(strategy, ev, t + 1, elapsed))
            manifest.update(experiences_done=t + 1, duration_s=elapsed)
            rd.write_manifest(manifest)
            progress.experience_done(t)
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        rd.write_manifest(manifest)
        raise
    except BaseException as exc:
        manifest["status"] = "failed"
        manifest["error"] = f"{type(exc).__name__}: {exc}"
        rd.write_manifest(manifest)
        raise
    finally:
        progress.close()
    manifest.update(status="finished", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    rd.write_manifest(manifest)
    if not quiet:
        print(_summary(ev, sc))
    if cfg.output.report:
        from analysis.report import build_report
        report = build_report(rd.path)
        if not quiet:
            print(f"report: {report / 'index.html'}")
    return rd.path


def _evaluator(ev: StreamEvaluation):
    """Avalanche's EvaluationPlugin carrying the evaluation (loggers are attached once the directory exists)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # import-time warnings; "no loggers" yet
        from avalanche.training.plugins import EvaluationPlugin
        return EvaluationPlugin(ev, loggers=[])


def _attach_tensorboard(strategy, rd: RunDirectory) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.logging import TensorboardLogger
    strategy.evaluator.loggers = list(strategy.evaluator.loggers) + [TensorboardLogger(tb_log_dir=str(rd.path / "tb"))]
