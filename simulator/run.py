"""``dncsim run``: run the parts of a continual run (``simulator.build.build_run``) into its run
directory (``dncsim.rundir``): train every experience, evaluate, write, checkpoint, and resume
after an interruption. A directory is complete only when its manifest says ``status: finished``;
anything else is resumed by running into it again.
"""
from __future__ import annotations

import itertools
import os
import random
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from dncsim.analysis.estimators import AUTO_WILD_PAIRS, balanced_pairs, resolve_pair_scheme
from dncsim.analysis.metrics.probe_accuracy import convergence_finding, probe_convergence
from dncsim.analysis.names import ACC, CDNV, DIR_CDNV, FORGETTING_MAX
from dncsim.analysis.closing import closing_notes
from dncsim.analysis.text_table import format_table
from dncsim.common import DncsimError, RunFailed, WriteFailed
from dncsim.rundir import RunDirectory, now, provenance
from dncsim.simulator.build import RunParts, build_run
from dncsim.simulator.config import RunConfig
from dncsim.simulator.interrupts import Interrupted, deferred, signal_of
from dncsim.simulator.loggers import attach_loggers, check_loggers, close_loggers, new_wandb_id
from dncsim.simulator.progress import StreamProgress
from dncsim.simulator.strategies import stateful_plugins

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


#: the tagged entries of a packed metric state (``dncsim.analysis.metrics.base.pack_state``) that hold
#: tensors computed from the backbone's features, which live on the run's device
_FEATURE_STATE_TYPES = ("probe", "ClassGeometry")


def features_state_to_device(value, device: torch.device):
    """The evaluation's packed state (a checkpoint loads it on the CPU) with the fitted probes and geometries
    back on ``device``, where the uninterrupted run keeps them (they were computed from features there);
    everything else stays where the metrics created it (the CPU)."""
    if device.type == "cpu":
        return value
    if isinstance(value, dict):
        if value.get("__type__") in _FEATURE_STATE_TYPES and isinstance(value.get("arrays"), dict):
            return {**value, "arrays": {k: v.to(device) if isinstance(v, torch.Tensor) else v
                                        for k, v in value["arrays"].items()}}
        return {k: features_state_to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [features_state_to_device(v, device) for v in value]
    return value


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
        parts.evaluation.collection.load_state_dict(features_state_to_device(state["evaluation"], device))
    except ValueError as exc:                   # a checkpoint of a dncsim that measured other metrics
        raise DncsimError(f"checkpoint.pt cannot resume this run: {exc} (use --force to start over)") from None
    done = int(state["experiences_done"])
    strategy.restore_progress(done)
    set_rng_state(state["rng"], device)
    return done


# --- the run ------------------------------------------------------------------------------------------

def final_summary(rows: List[dict], tasks: Sequence[str], keys) -> str:
    """Per task after the last experience: accuracy (forgetting) per probe and protocol, dir-CDNV, CDNV;
    a geometry that is undefined there is ``n/a``, with a note saying why."""
    t = max(r["exp"] for r in rows)
    last = {(r["metric"], r["task"], r["probe"], r["protocol"]): r["value"] for r in rows if r["exp"] == t}
    table = []
    for k, name in enumerate(tasks):
        row = [k, name]
        for key in keys:
            acc = last.get((ACC, k, key.probe, key.protocol))
            forg = last.get((FORGETTING_MAX, k, key.probe, key.protocol))
            row.append("n/a" if acc is None else f"{acc:.3f}" + ("" if forg is None else f" ({forg:+.3f})"))
        geometry = [last.get((m, k, None, None)) for m in (DIR_CDNV, CDNV)]
        row += ["n/a" if v is None else f"{v:.4g}" for v in geometry]
        table.append(row)
    out = format_table(["task", "name"] + [f"{key.probe} {key.protocol}" for key in keys] + ["dir-CDNV", "CDNV"],
                       table, title="After the last experience: test accuracy (forgetting = best earlier minus final)")
    out += closing_notes(rows, tasks)
    note = convergence_finding(probe_convergence(rows))
    return out if note is None else f"{out}\nnote: {note}"


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
    config = cfg.model_dump(mode="json")
    directory.plan(config, resume=resume, force=force)           # fail fast, touching nothing
    check_loggers(cfg)
    parts = build_run(cfg, directory, plugins=plugins)
    lock = directory.lock("dncsim run")                           # nothing can fail on the user's input past here
    try:
        return _run_locked(parts, config, argv=argv, stream=stream, quiet=quiet, resume=resume, force=force)
    finally:
        lock.release()


#: from this many task pairs resampled pair by pair (``joint``) a run says that the cost is theirs: the
#: number of pairs from which ``pair_bootstrap: auto`` itself stops resampling balanced pairs pair by pair
PAIR_HINT_PAIRS = AUTO_WILD_PAIRS


def pair_interval_hint(analysis, tasks, split: str = "test") -> Optional[str]:
    """One line about the median |cos| intervals of task pairs on the same samples, or None.

    A pair is balanced when its joint classes are an exactly balanced design (:func:`balanced_pairs`).
    ``auto``: how many pairs take the iid or wild bootstrap. ``joint``/``wild``: that unbalanced pairs hold
    their random cell sizes fixed; else, from ``PAIR_HINT_PAIRS`` pairs, that their cost dominates.
    """
    if not analysis.bootstrap:
        return None
    groups: dict = {}
    for task in tasks:
        groups.setdefault(task.group, []).append(task)
    counts = Counter()
    for members in groups.values():
        n = len(members)
        if n < 2:
            continue
        labels = torch.stack([t.test_labels if split == "test" else t.train_labels for t in members])
        bal = balanced_pairs(labels).tolist()
        for a, b in itertools.combinations(range(n), 2):
            counts[resolve_pair_scheme(analysis.pair_bootstrap, n, bal[a][b]), bal[a][b]] += 1
    total = sum(counts.values())
    unbalanced = sum(v for (_, b), v in counts.items() if not b)
    scheme = analysis.pair_bootstrap
    if scheme == "auto":
        iid, wild = counts["iid", False], counts["wild", True]
        if not (iid or wild):
            return None
        parts = [f"{iid} resample the samples (iid: joint classes of unequal size)" if iid else "",
                 f"{wild} share one wild bootstrap (balanced, 20 tasks or more)" if wild else "",
                 f"{counts['joint', True]} resample within their joint classes" if counts["joint", True] else ""]
        return (f"note: {total} task pairs share their samples; their median |cos| intervals: "
                + ", ".join(p for p in parts if p) + " (analysis.pair_bootstrap: auto; docs, Methods, Estimators)")
    if unbalanced and scheme != "iid":
        return (f"note: {unbalanced} of {total} task pairs on the same samples have joint classes of unequal "
                f"size; analysis.pair_bootstrap: {scheme} holds those sizes fixed, so their median |cos| "
                "intervals are too narrow if the samples were drawn at random (iid or auto lets them vary; "
                "docs, Methods, Estimators)")
    joint = counts["joint", True]
    if scheme != "joint" or joint < PAIR_HINT_PAIRS:
        return None
    return (f"note: {joint} task pairs share their samples; the interval of each pair's median |cos| resamples "
            f"that pair's joint classes (analysis.pair_bootstrap: {scheme}), a cost per evaluation that grows "
            "with the number of pairs; analysis.pair_bootstrap: wild grows with the number of tasks (docs: "
            "Benchmarks)")


def _run_locked(parts: RunParts, config: dict, *, argv, stream, quiet: bool, resume: bool, force: bool) -> Path:
    cfg, directory = parts.config, parts.directory
    plan = directory.plan(config, resume=resume, force=force)    # again, now that no one else can change it
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
        out = _run_logged(parts, config, plan, previous, state, wandb_id, loggers, argv=argv, stream=stream,
                          quiet=quiet)
        failed = False
        return out
    finally:
        close_loggers(loggers, failed=failed, stream=stream)


def _run_logged(parts: RunParts, config: dict, plan: str, previous: dict, state, wandb_id: Optional[str],
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
        directory.write_config(config)
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
        loggers += attach_loggers(parts, config, wandb_id)
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
