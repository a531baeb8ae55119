"""``dncsim run``: run the parts of a continual run (``simulator.build.build_run``) into its run
directory (``dncsim.rundir``): train every experience, evaluate, write, checkpoint, and resume
after an interruption. A directory is complete only when its manifest says ``status: finished``;
anything else is resumed by running into it again.
"""
from __future__ import annotations

import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from dncsim.analysis.closing import final_summary, pair_interval_hint
from dncsim.common import DncsimError, RunFailed, WriteFailed
from dncsim.rundir import RunDirectory, now, provenance
from dncsim.simulator.build import RunParts, build_run
from dncsim.simulator.config import RunConfig
from dncsim.simulator.interrupts import Interrupted, deferred, signal_of
from dncsim.simulator.loggers import attach_loggers, check_loggers, close_loggers, new_wandb_id
from dncsim.simulator.progress import StreamProgress
from dncsim.simulator.plugins import stateful_plugins

__all__ = ["run", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 2


# --- random state, as plain tensors and lists (torch.load(weights_only=True) refuses ndarrays) ------

def rng_state(device: Optional[torch.device] = None) -> dict:
    """torch's CPU generator, numpy's and Python's; on a CUDA ``device`` also that device's generator
    (augmentation parameters are drawn there)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                        int(has_gauss), float(cached)],
             "python": [int(version), list(internal), gauss]}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: Optional[torch.device] = None) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device is not None and device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


# --- checkpoints ------------------------------------------------------------------------------------

def checkpoint_state(parts: RunParts, done: int, duration: float) -> dict:
    """Everything a resume needs: model, optimizer, the gradient scaler (fp16), every stateful strategy
    plugin (in order), the evaluation collection, the random state."""
    strategy = parts.strategy
    return {"format": CHECKPOINT_FORMAT, "experiences_done": done, "duration_s": duration,
            "model": strategy.model.state_dict(), "optimizer": strategy.optimizer.state_dict(),
            "precision": strategy.precision_state(),
            "plugins": [{"class": type(p).__name__, "state": p.state_dict()} for p in stateful_plugins(strategy)],
            "evaluation": parts.evaluation.collection.state_dict(), "rng": rng_state(parts.device)}


def restore(parts: RunParts, state: dict) -> int:
    """Load a :func:`checkpoint_state` into freshly built parts; returns the experiences done."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise DncsimError(f"checkpoint.pt has format {state.get('format')}; this dncsim reads format "
                          f"{CHECKPOINT_FORMAT} (use --force to start over)")
    strategy = parts.strategy
    plugins = stateful_plugins(strategy)
    saved = state["plugins"]
    if [type(p).__name__ for p in plugins] != [s["class"] for s in saved]:
        raise DncsimError(f"checkpoint.pt holds the state of plugins {[s['class'] for s in saved]} but this run has "
                          f"{[type(p).__name__ for p in plugins]} (use --force to start over)")
    device = parts.device
    strategy.model.load_state_dict(state["model"])
    strategy.optimizer.load_state_dict(state["optimizer"])
    strategy.load_precision_state(state.get("precision"))
    for plugin, s in zip(plugins, saved):
        plugin.load_state_dict(s["state"], strategy)           # each puts its tensors where it needs them
    try:
        parts.evaluation.collection.load_state_dict(state["evaluation"], device=device)
    except ValueError as exc:                   # a checkpoint of a dncsim that measured other metrics
        raise DncsimError(f"checkpoint.pt cannot resume this run: {exc} (use --force to start over)") from None
    done = int(state["experiences_done"])
    strategy.restore_progress(done)
    set_rng_state(state["rng"], device)
    return done


# --- the run ------------------------------------------------------------------------------------------

def _write_results(parts: RunParts) -> None:
    rd, collection = parts.directory, parts.evaluation.collection
    for result in parts.evaluation.drain():
        rd.write_geometry(result.t, result.geometries)
    rd.write_metrics(collection.rows)
    rd.write_accuracy(collection.rows, parts.task_names, parts.probe_keys, experiences=len(parts.scenario.experiences),
                      learned_at=parts.learned_at)


def stream_record(parts: RunParts) -> dict:
    """For the manifest: whether the experiences' training inputs differ, with a digest per experience."""
    sc = parts.scenario
    digests = sc.input_digests()
    return {"stream": sc.stream_type, "inputs_differ": len(set(digests)) == len(digests),
            "experiences": [{"index": e.index, "name": e.name, "train_samples": int(len(e.train_idx)),
                             "inputs_digest": d, "varying": e.varying, "held": e.held}
                            for e, d in zip(sc.experiences, digests)]}


def _best_effort(write, *args) -> None:
    """A write whose failure must not hide the error being recorded (a full disk, say)."""
    try:
        write(*args)
    except (OSError, RunFailed, ValueError):
        pass


def run(cfg: RunConfig, out: Path, *, resume: bool = False, force: bool = False, argv: Optional[list] = None,
        stream=sys.stderr, quiet: bool = False, plugins: Sequence = ()) -> Path:
    """Run ``cfg`` into directory ``out`` (resuming an unfinished run there); returns the directory.

    Input errors fail before the directory is touched. The run holds the directory's lock throughout.
    A resume takes the newest verified checkpoint (saying so when it falls back); a missing geometry row it
    needs is refused in one line. A failed run records ``status: failed`` and raises
    :class:`~dncsim.common.RunFailed`. Progress goes to ``stream``; ``quiet`` drops the final summary;
    ``plugins`` are extra strategy plugins.
    """
    directory = RunDirectory(out)
    directory.plan(cfg.model_dump(mode="json"), resume=resume, force=force)       # fail fast, touching nothing
    check_loggers(cfg)
    parts = build_run(cfg, directory, plugins=plugins)
    lock = directory.lock("dncsim run")                           # nothing can fail on the user's input past here
    try:
        return _run_locked(parts, argv=argv, stream=stream, quiet=quiet, resume=resume, force=force)
    finally:
        lock.release()


def _run_locked(parts: RunParts, *, argv, stream, quiet: bool, resume: bool, force: bool) -> Path:
    cfg, directory = parts.config, parts.directory
    plan = directory.plan(cfg.model_dump(mode="json"), resume=resume, force=force)   # again, under the lock
    previous = directory.manifest() or {}
    state, note = (directory.load_checkpoint(previous.get("checkpoints")) if plan == RunDirectory.RESUME
                   else (None, None))
    if state is not None:
        missing = directory.missing_rows(state["evaluation"]["done"])
        if missing:
            raise DncsimError(f"{directory.path}: {', '.join(missing)} of this unfinished run "
                              f"{'is' if len(missing) == 1 else 'are'} missing and cannot be recomputed from its "
                              "checkpoint (a row is measured with the model of its time); restore "
                              f"{'it' if len(missing) == 1 else 'them'} or use --force to start the run over")
    try:
        if state is not None:
            directory.quarantine_damaged()          # never rotated over the good generation by the next save
        directory.prepare(plan)
    except OSError as exc:
        raise WriteFailed(f"{exc.filename or directory.path}: cannot prepare the run directory "
                          f"({exc.strerror or exc})", {"path": str(exc.filename or directory.path),
                                                       "errno": exc.errno}) from None
    if note:
        print(note, file=stream, flush=True)
    hint = pair_interval_hint(cfg.analysis, parts.evaluation.collection.tasks,
                              parts.evaluation.collection.geometry_split)
    if hint and not quiet:
        print(hint, file=stream, flush=True)
    wandb_id = None
    if "wandb" in cfg.output.active_loggers:
        wandb_id = (previous.get("wandb_run_id") if plan == RunDirectory.RESUME else None) or new_wandb_id()
    loggers: list = []                # attached once the manifest exists (a logger that fails to start fails the run)
    failed = True
    try:
        out = _run_logged(parts, plan, previous, state, wandb_id, loggers, argv=argv, stream=stream,
                          quiet=quiet)
        failed = False
        return out
    finally:
        close_loggers(loggers, failed=failed, stream=stream)


def _run_logged(parts: RunParts, plan: str, previous: dict, state, wandb_id: Optional[str],
                loggers: list, *, argv, stream, quiet: bool) -> Path:
    cfg, directory = parts.config, parts.directory
    done, duration, started = 0, 0.0, now()
    if state is not None:
        done = restore(parts, state)
        duration = float(state.get("duration_s", 0.0))
        directory.discard_rows_after(done)        # nothing measured after the checkpoint survives
        _write_results(parts)
    if plan == RunDirectory.RESUME:
        started = previous.get("started", started)
    else:
        directory.write_config(cfg.model_dump(mode="json"))
    total = len(parts.scenario.experiences)
    generations = directory.verified if state is not None else []
    manifest = {"name": cfg.name, "status": "running", "seed": cfg.seed, "device": str(parts.device),
                "threads": torch.get_num_threads(), "pid": os.getpid(), "host": socket.gethostname(),
                "started": started, "finished": None, "experiences_done": done, "experiences_total": total,
                "duration_s": duration, **provenance(), "command": argv, "training_inputs": stream_record(parts),
                "checkpoints": generations}
    if parts.device.type == "cuda":          # what bit-identical results on a GPU depend on (docs: How-to, GPUs)
        manifest["cuda"] = {"device_name": torch.cuda.get_device_name(parts.device), "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version()}
    if wandb_id is not None:
        manifest["wandb_run_id"] = wandb_id
    directory.write_manifest(manifest)
    if state is not None and not quiet:
        print(f"resuming after {done} of {total} experiences", file=stream, flush=True)
    t0 = time.perf_counter()
    progress = StreamProgress(parts.scenario, cfg.training.epochs, done, stream=stream)
    parts.strategy.plugins.append(progress)
    try:
        loggers += attach_loggers(parts, wandb_id)
        for t, exp in enumerate(list(parts.scenario.benchmark.train_stream)):
            if t < done:
                continue
            parts.strategy.train(exp, eval_streams=[])
            with deferred():             # a signal stops the run after these writes, never between them
                _write_results(parts)
                elapsed = round(duration + time.perf_counter() - t0, 2)
                if cfg.output.checkpoints:
                    manifest["checkpoints"] = directory.save_checkpoint(checkpoint_state(parts, t + 1, elapsed),
                                                                        manifest["checkpoints"])
                manifest.update(experiences_done=t + 1, duration_s=elapsed)
                directory.write_manifest(manifest)
                progress.experience_done(t)
    except KeyboardInterrupt as exc:     # Ctrl-C; SIGTERM and SIGHUP too where the CLI installed its handlers
        manifest["status"] = "interrupted"
        with deferred(deliver=False):    # a second signal (the study's SIGTERM after Ctrl-C) is the same request
            _best_effort(directory.write_manifest, manifest)
            progress.close()
        raise Interrupted(f"interrupted after {manifest['experiences_done']} of {total} experiences; run the same "
                          "command again to resume", signal_of(exc)) from None
    except BaseException as exc:
        manifest["status"] = "failed"
        manifest["error"] = str(exc) if isinstance(exc, RunFailed) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, RunFailed):
            manifest["failure"] = {"experience": manifest["experiences_done"], **exc.record}
        _best_effort(directory.write_manifest, manifest)
        raise
    finally:
        progress.close()
    manifest.update(status="finished", finished=now())
    directory.write_manifest(manifest)
    if not quiet:
        print(final_summary(parts.evaluation.collection.rows, parts.task_names, parts.probe_keys))
    if cfg.output.report:
        from dncsim.analysis.report import build_report
        report = build_report(directory.path, lock=False)          # this run holds the lock
        if not quiet:
            print(f"report: {report / 'index.html'}")
    return directory.path
