"""The run directory: the one module that writes and reads it (docs, Reference, Outputs).

Files, each written atomically: ``config.yaml``, ``manifest.json`` (status; only ``finished`` means
complete), ``metrics.csv`` / ``metrics.jsonl``, ``accuracy.json``, ``geometry/row_<r>.npz`` (row 0 =
before training), ``checkpoint.pt`` / ``checkpoint.previous.pt`` (two generations, SHA-256 in the manifest;
a failed one goes to ``checkpoint.damaged.pt``), ``.dncsim.lock`` (an OS file lock), ``tb/``, ``report/``.

Writing: :class:`RunDirectory`. Reading: :func:`load_run` -> :class:`RunData`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from dncsim.common import (DncsimError, WriteFailed, atomic_write_bytes, atomic_write_json, atomic_write_text,
                           csv_lines, csv_text, is_atomic_temporary, load_yaml_text)

__all__ = ["RunDirectory", "RunLock", "RunData", "load_run", "load_geometry", "read_metrics_csv", "accuracy_matrices",
           "REQUIRED_FILES", "CONFIG", "MANIFEST", "METRICS_CSV", "METRICS_JSONL", "ACCURACY", "GEOMETRY",
           "CHECKPOINT", "TENSORBOARD", "REPORT", "plain_name"]

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"
ACCURACY = "accuracy.json"
GEOMETRY = "geometry"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREVIOUS = "checkpoint.previous.pt"
CHECKPOINT_DAMAGED = "checkpoint.damaged.pt"
LOCK = ".dncsim.lock"
TENSORBOARD = "tb"
REPORT = "report"
REQUIRED_FILES = (CONFIG, MANIFEST, METRICS_JSONL, ACCURACY)
#: what a run writes into its directory (``wandb``: the wandb logger's folder); ``--force`` deletes these
#: and nothing else
OWNED = (CONFIG, METRICS_CSV, METRICS_JSONL, ACCURACY, GEOMETRY, CHECKPOINT, CHECKPOINT_PREVIOUS, CHECKPOINT_DAMAGED,
         TENSORBOARD, REPORT, "wandb")
STATUSES = ("running", "finished", "failed", "interrupted")


def plain_name(name: str, where: str = "--out") -> str:
    """``name`` when it can name one folder (a run's or a study's): not empty, no ``/`` or ``\\``, not
    ``.`` or ``..``, no NUL. ValueError otherwise (for a pydantic validator), saying that ``where`` chooses
    the location."""
    if not name.strip():
        raise ValueError("expected a name; got an empty one")
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"{name!r} is a path; a name is one folder name (no '/', '\\', '..'); choose the "
                         f"location with {where}")
    return name


def is_run_manifest(manifest) -> bool:
    """Whether ``manifest`` (a parsed ``manifest.json``) is a dncsim run's: a mapping with a run status."""
    return isinstance(manifest, dict) and manifest.get("status") in STATUSES

_INT_COLUMNS = ("exp", "task", "task_b", "shots")


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


def provenance() -> dict:
    """``versions`` (python, torch, dncsim, avalanche-lib, numpy, lightly, kornia) and ``git_commit``
    (of the dncsim checkout, ``-dirty`` when modified; None outside a checkout) for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    versions = {"python": platform.python_version(), "torch": torch.__version__}   # the build string (+cu130)
    for pkg in ("dncsim", "avalanche-lib", "numpy", "lightly", "kornia"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    from dncsim.analysis.names import METHODS_REVISION
    return {"versions": versions, "git_commit": _git_commit(), "methods_revision": METHODS_REVISION}


def _git_commit() -> Optional[str]:
    src = Path(__file__).resolve().parents[2]
    if not (src / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def now() -> str:
    """The current UTC time as the manifest writes it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- the metrics table ------------------------------------------------------------------------------

def _columns():
    from dncsim.analysis.names import TABLE_COLUMNS
    return TABLE_COLUMNS


def metrics_csv_text(rows: Iterable[dict]) -> str:
    """The metrics table as CSV (``dncsim.common.csv_text``: quoted where needed, floats as ``repr``,
    None as an empty field)."""
    cols = _columns()
    return csv_text(cols, ([r[c] for c in cols] for r in rows))


def read_metrics_csv(path) -> List[dict]:
    """The rows of a ``metrics.csv``, typed as the writer had them (ints, floats, None for empty)."""
    cols = _columns()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if tuple(header or ()) != cols:
            raise DncsimError(f"{path}: header is not {','.join(cols)}")
        out = []
        for n, fields_ in enumerate(reader, start=2):
            if len(fields_) != len(cols):
                raise DncsimError(f"{path}: line {n} has {len(fields_)} fields; expected {len(cols)}")
            r = {c: (None if v == "" else v) for c, v in zip(cols, fields_)}
            for c in _INT_COLUMNS:
                r[c] = None if r[c] is None else int(r[c])
            r["value"] = float(r["value"])
            out.append(r)
    return out


def accuracy_matrices(rows: Iterable[dict], n_tasks: int, keys: Sequence, *, experiences: Optional[int] = None) -> Dict:
    """ProbeKey -> (E+1, T) float64 accuracy matrix R built from the table's ``acc`` rows (E experiences,
    default T): R[t + 1, k] is task k's accuracy after experience t (row 0: before training); NaN where
    unmeasured."""
    from dncsim.analysis.names import ACC, ProbeKey
    rows_count = (n_tasks if experiences is None else experiences) + 1
    mats = {key: np.full((rows_count, n_tasks), np.nan) for key in keys}
    for r in rows:
        if r["metric"] == ACC:
            key = ProbeKey(r["probe"], r["protocol"])
            if key in mats:
                mats[key][r["exp"] + 1, r["task"]] = r["value"]
    return mats


# --- geometry files ---------------------------------------------------------------------------------

def geometry_npz_bytes(geoms: Dict[int, object]) -> bytes:
    """The ``geometry/row_<r>.npz`` content for task index -> ClassGeometry: ``task<k>/<field>`` for every
    field of ``to_arrays()``, plus ``task<k>/pairs`` (P, 2) and ``task<k>/axes`` (P, d) float32."""
    arrays = {}
    for k, g in geoms.items():
        for name, value in g.to_arrays().items():
            arrays[f"task{k}/{name}"] = value.numpy()
        arrays[f"task{k}/pairs"] = g.pairs().cpu().numpy()
        arrays[f"task{k}/axes"] = g.axes().detach().cpu().numpy().astype(np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _check_geometry_shapes(path, k: int, headers: Dict[str, tuple]) -> None:
    """DncsimError unless task k's geometry fields (name -> (shape, dtype)) are numeric with the shapes of
    ``ClassGeometry.to_arrays``: ``classes`` (C,), ``means`` (C, d), (C,) vectors, (C, C) matrices, ``ddof`` ()."""
    if "classes" not in headers or "means" not in headers:
        missing = ", ".join(f for f in ("classes", "means") if f not in headers)
        raise DncsimError(f"{path}: task {k}: geometry arrays lack {missing}")
    c = headers["classes"][0][0] if len(headers["classes"][0]) == 1 else -1
    means = headers["means"][0]
    d = means[1] if len(means) == 2 else -1
    want = {"classes": (c,), "counts": (c,), "means": (c, d), "var": (c,), "m4": (c,), "ddof": ()}
    for name, (shape, dtype) in headers.items():
        expected = want.get(name, (c, c))
        if c < 1 or d < 1 or shape != expected or dtype.kind not in "fiub":
            raise DncsimError(f"{path}: task {k}: '{name}' has shape {shape} dtype {dtype}; expected {expected} "
                              "numbers (damaged, or written by another dncsim version?)")


def load_geometry(path) -> Dict[int, object]:
    """Task index -> ClassGeometry from a ``geometry/row_<r>.npz`` file (only the fields ``from_arrays``
    needs are read; ``dncsim.npzfile``). DncsimError naming the file when it is not a readable geometry
    file: not an .npz, damaged, a member that is not ``task<k>/<field>``, or no task at all."""
    from dncsim.analysis.geometry import ClassGeometry
    from dncsim.npzfile import NpzArchive
    fields_ = ClassGeometry.__dataclass_fields__
    out = {}
    with NpzArchive(path, "geometry file (.npz)") as z:
        tasks: Dict[int, List[str]] = {}
        for name in z.names:
            head, sep, field_ = name.partition("/")
            if not (sep and head.startswith("task") and head[4:].isascii() and head[4:].isdigit()):
                raise DncsimError(f"{path}: array '{name}' is not task<k>/<field> (not a geometry file)")
            tasks.setdefault(int(head[4:]), []).append(field_)
        if not tasks:
            raise DncsimError(f"{path}: holds no task's geometry")
        for k in sorted(tasks):
            _check_geometry_shapes(path, k, {f: z.header(f"task{k}/{f}") for f in tasks[k] if f in fields_})
            arrays = {f: z.read(f"task{k}/{f}") for f in tasks[k] if f in fields_}
            try:
                out[k] = ClassGeometry.from_arrays(arrays)
            except (DncsimError, ValueError, TypeError, RuntimeError, IndexError) as exc:
                raise DncsimError(f"{path}: task {k}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                                  " (damaged, or written by another dncsim version?)") from None
    return out


# --- the lock ---------------------------------------------------------------------------------------

#: seconds a lock is waited for while its holder is dying (killed but not gone yet: the kernel finishes a
#: write to a slow disk before it can tear the process down, and only then drops the lock)
DYING_HOLDER_WAIT = 60.0


def _dying(pid, proc: Path = Path("/proc")) -> bool:
    """Linux: whether process ``pid`` is on its way out -- SIGKILL pending (a process blocked in an
    uninterruptible write takes it only when the write completes), its exit under way (``PF_EXITING``), or
    a zombie. False when it runs normally, does not exist or ``proc`` cannot be read (other systems)."""
    try:
        status = (proc / str(pid) / "status").read_text()
        stat = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        kill = 1 << (9 - 1)                                              # SIGKILL's bit in the pending masks
        pending = any(int(fields.get(k, "0").strip() or "0", 16) & kill for k in ("SigPnd", "ShdPnd"))
        after = stat.rsplit(")", 1)[1].split()                           # field 3 (state) onwards
        state, flags = after[0], int(after[6])                           # field 9: the kernel's flags
    except (ValueError, IndexError):
        return False
    return pending or state in ("Z", "X") or bool(flags & 0x4)          # PF_EXITING


class RunLock:
    """An exclusive OS lock (``fcntl.flock``) on a run directory's ``.dncsim.lock``, held from
    :meth:`acquire` to :meth:`release` (or the process's death: the OS drops it, so a killed run never
    blocks its resume). The holder writes its pid, host, start time and command into the file, so the
    one that finds it taken can say who has it."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self._fd: Optional[int] = None

    def _holder_info(self) -> dict:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def holder(self) -> str:
        info = self._holder_info()
        if not info:
            return "another process"
        return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}"
                + (f" ({info['what']})" if info.get("what") else ""))

    def acquire(self, what: str = "dncsim run") -> "RunLock":
        """Take the lock (the directory must exist); DncsimError naming the directory and the holder when
        another process has it. A holder on this host that is dying (:func:`_dying`: killed, not gone yet)
        is waited for, up to ``DYING_HOLDER_WAIT`` seconds: a run restarted right after a kill resumes."""
        import fcntl
        import time
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteFailed(f"{self.path}: cannot create the lock file ({exc.strerror or exc})",
                              {"path": str(self.path), "errno": exc.errno}) from None
        deadline = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                info = self._holder_info()
                dying = info.get("host") == socket.gethostname() and _dying(info.get("pid"))
                deadline = deadline or time.monotonic() + DYING_HOLDER_WAIT
                if not dying or time.monotonic() > deadline:
                    os.close(fd)
                    raise DncsimError(f"{self.directory} is in use by {self.holder()}"
                                      + (", which was killed and has not exited yet" if dying else "")
                                      + "; wait for it to finish or choose another directory") from None
                time.sleep(0.05)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now(), "what": what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc):
        self.release()


# --- writing ----------------------------------------------------------------------------------------

class RunDirectory:
    """The files of one run directory (see the module docstring), for the run that writes it."""

    FRESH, RESUME, REPLACE = "fresh", "resume", "replace"

    def __init__(self, path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def manifest(self) -> Optional[dict]:
        try:
            return json.loads(self.file(MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def stored_config(self) -> Optional[dict]:
        import yaml
        try:
            return load_yaml_text(self.file(CONFIG).read_text(encoding="utf-8"), str(self.file(CONFIG)))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, DncsimError):
            return None

    def plan(self, config: dict, *, resume: bool, force: bool) -> str:
        """What running ``config`` here means, touching nothing: ``fresh``, ``resume`` (an unfinished run of the
        same configuration and ``METHODS_REVISION``) or ``replace`` (``force`` on a run directory).

        A directory without a manifest is ``fresh`` if it holds only the lock, temporary files and a
        ``config.yaml`` of this configuration. DncsimError for a finished run without ``force``, an unfinished
        run of another configuration (naming the first differing key) or revision, a directory that is not a
        run directory, or ``resume`` with no directory.
        """
        if not self.path.exists():
            if resume:
                raise DncsimError(f"--resume: {self.path} does not exist")
            return self.FRESH
        if not self.path.is_dir():
            raise DncsimError(f"--out: {self.path} exists and is not a directory")
        manifest = self.manifest()
        if manifest is not None and not is_run_manifest(manifest):
            raise DncsimError(f"{self.path} exists and is not a dncsim run directory ({MANIFEST} is not a run "
                              "manifest); choose another --out (a new or empty directory)")
        if manifest is None:
            stray = [p.name for p in self.path.iterdir() if p.name != LOCK and not is_atomic_temporary(p.name)]
            if stray and not (stray == [CONFIG] and self._config_difference(config) is None):
                raise DncsimError(f"{self.path} exists and is not a dncsim run directory; choose another --out "
                                  "(a new or empty directory)")
            return self.FRESH
        if force:
            return self.REPLACE
        if manifest.get("status") == "finished":
            raise DncsimError(f"{self.path} holds a finished run; use --force to overwrite it or --out for a new "
                              "directory")
        if self.stored_config() is None:
            raise DncsimError(f"{self.path}: {CONFIG} of this unfinished run is missing or unreadable, so it cannot "
                              "be checked against this configuration; use --force to start over or --out for a "
                              "new directory")
        diff = self._config_difference(config)
        if diff is not None:
            raise DncsimError(f"{self.path} holds an unfinished run with a different configuration (first "
                              f"difference: {diff}); use --force to start over or --out for a new directory")
        from dncsim.analysis.names import METHODS_REVISION
        began = manifest.get("methods_revision")
        if began != METHODS_REVISION:
            by = (f"methods revision {began}" if began is not None else
                  "a dncsim from before methods revisions were recorded")
            commit = manifest.get("git_commit") or (manifest.get("versions") or {}).get("dncsim")
            raise DncsimError(f"{self.path} holds an unfinished run begun by {by}; this dncsim computes revision "
                              f"{METHODS_REVISION}, and resuming would compute its rows two ways in one table; use "
                              "--force to start over, or finish it with the dncsim that began it"
                              + (f" ({commit})" if commit else ""))
        return self.RESUME

    def _config_difference(self, config: dict) -> Optional[str]:
        """The first key in which ``config`` and the stored ``config.yaml`` differ (``output`` aside), or None."""
        stored = dict(self.stored_config() or {})
        new = dict(config)
        stored.pop("output", None)
        new.pop("output", None)
        return _first_difference(stored, new)

    def prepare(self, plan: str) -> None:
        """Carry out a :meth:`plan`: create the directory; for ``replace``, delete the run's files (the names
        in ``OWNED`` and temporary files of unfinished writes; ``manifest.json`` last, so a replace cut short
        leaves a run directory); otherwise delete the temporary files that writes of a killed process left
        behind (here and in ``geometry/``: a checkpoint's can be as large as the model). Files the run did
        not write stay."""
        self.path.mkdir(parents=True, exist_ok=True)
        if plan == self.REPLACE:
            for p in self.path.iterdir():
                if p.name in OWNED or (is_atomic_temporary(p.name) and p.is_file()):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
            self.file(MANIFEST).unlink(missing_ok=True)
            return
        for folder in (self.path, self.path / GEOMETRY):
            if folder.is_dir():
                for p in folder.iterdir():
                    if is_atomic_temporary(p.name) and p.is_file():
                        p.unlink()

    def lock(self, what: str = "dncsim run") -> RunLock:
        """Create the directory if needed and take its lock (see :class:`RunLock`); WriteFailed (one line,
        exit status 1) when the directory cannot be created or written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WriteFailed(f"{self.path}: cannot create the run directory ({exc.strerror or exc})",
                              {"path": str(self.path), "errno": exc.errno}) from None
        return RunLock(self.path).acquire(what)

    def write_config(self, config: dict) -> None:
        import yaml
        atomic_write_text(self.file(CONFIG), yaml.safe_dump(config, sort_keys=False))

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.file(MANIFEST), manifest)

    def write_metrics(self, rows: Sequence[dict]) -> None:
        """``metrics.csv`` and ``metrics.jsonl`` of the whole table ``rows`` (rewritten atomically). The text
        of a row already written (the same row object, at the same position) is reused, so a run that
        rewrites its growing table after every experience formats each row once."""
        cols = _columns()
        cache = getattr(self, "_row_text", [])
        keep = 0
        while keep < min(len(cache), len(rows)) and cache[keep][0] is rows[keep]:
            keep += 1
        new = rows[keep:]
        lines = csv_lines([r[c] for c in cols] for r in new)
        cache = cache[:keep] + [(r, line, json.dumps({c: r[c] for c in cols}) + "\n") for r, line in zip(new, lines)]
        self._row_text = cache
        header = metrics_csv_text([])
        atomic_write_text(self.file(METRICS_CSV), header + "".join(c[1] for c in cache))
        atomic_write_text(self.file(METRICS_JSONL), "".join(c[2] for c in cache))

    def write_accuracy(self, rows: Sequence[dict], tasks: Sequence[str], keys: Sequence, *,
                       experiences: Optional[int] = None, learned_at: Optional[Sequence] = None) -> None:
        """``accuracy.json``: ``rows`` labels (before training, after each of the ``experiences``),
        ``tasks`` names, ``learned_at`` (the experience each task is learned in; null: only watched;
        default: task k in experience k) and ``matrices["<probe>/<protocol>"]`` ((experiences + 1) x
        tasks, null where unmeasured), built from the table's ``acc`` rows."""
        experiences = len(tasks) if experiences is None else experiences
        learned_at = list(range(len(tasks))) if learned_at is None else list(learned_at)
        mats = accuracy_matrices(rows, len(tasks), keys, experiences=experiences)
        atomic_write_json(self.file(ACCURACY), {
            "rows": ["before training"] + [f"after experience {t}" for t in range(experiences)],
            "tasks": list(tasks), "learned_at": learned_at,
            "matrices": {str(k): [[None if v != v else float(v) for v in row] for row in m.tolist()]
                         for k, m in mats.items()}})

    def write_geometry(self, t: int, geoms: Dict[int, object]) -> None:
        """``geometry/row_<t + 1>.npz`` for the row after experience t (t = -1: before training)."""
        (self.path / GEOMETRY).mkdir(exist_ok=True)
        atomic_write_bytes(self.path / GEOMETRY / f"row_{t + 1:03d}.npz", geometry_npz_bytes(geoms))

    def save_checkpoint(self, state: dict, generations: Sequence[dict] = ()) -> List[dict]:
        """Write ``state`` as the newest checkpoint generation. ``generations``: the records of the verified
        generations on disk (what the manifest holds). The current ``checkpoint.pt`` becomes
        ``checkpoint.previous.pt`` (a rename) only when a record vouches for it; otherwise the atomic write
        replaces it and ``checkpoint.previous.pt`` stays, so at every moment a recorded good generation is
        on disk. Returns the records to put in the manifest: per file on disk, newest first, ``file``,
        ``experiences_done``, ``sha256``, ``bytes``."""
        import torch
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        newest = {"file": CHECKPOINT, "experiences_done": int(state["experiences_done"]),
                  "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        current = next((g for g in generations if g.get("file") == CHECKPOINT), None)
        kept = next((g for g in generations if g.get("file") == CHECKPOINT_PREVIOUS), None)
        if current is not None and self.file(CHECKPOINT).exists():
            try:
                os.replace(self.file(CHECKPOINT), self.file(CHECKPOINT_PREVIOUS))
            except OSError as exc:
                raise DncsimError(f"{self.file(CHECKPOINT)}: cannot keep it as the previous generation "
                                  f"({exc.strerror or exc})") from None
            kept = dict(current, file=CHECKPOINT_PREVIOUS)
        atomic_write_bytes(self.file(CHECKPOINT), data)
        return [newest] + ([kept] if kept is not None else [])

    def load_checkpoint(self, generations: Optional[Sequence[dict]] = None):
        """The newest verified checkpoint generation: ``(state, note)``, or ``(None, None)`` without one.

        Verified: its SHA-256 matches a manifest record (or, without records, it loads) and it loads with
        ``weights_only=True``. ``note`` is one line when the newest was passed over. DncsimError when files exist
        but none is usable. Sets ``verified`` (usable records, newest first) and ``damaged``.
        """
        import torch
        self.verified, self.damaged = [], []
        files = [f for f in (CHECKPOINT, CHECKPOINT_PREVIOUS) if self.file(f).exists()]
        if not files:
            return None, None
        records = list(generations or [])
        problems, usable = [], []
        for name in files:
            data = self.file(name).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            record = next((r for r in records if r.get("sha256") == sha), None)
            if records and record is None:
                problems.append(f"{name} does not match any checksum in manifest.json (damaged or incomplete)")
                self.damaged.append(name)
                continue
            try:
                state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except Exception as exc:      # noqa: BLE001 - any unreadable file is the same problem
                problems.append(f"{name} is unreadable ({type(exc).__name__})")
                self.damaged.append(name)
                continue
            if record is not None and int(state.get("experiences_done", -1)) != int(record["experiences_done"]):
                problems.append(f"{name} holds another experience than its record says")
                self.damaged.append(name)
                continue
            usable.append(state)
            self.verified.append({"file": name, "experiences_done": int(state["experiences_done"]), "sha256": sha,
                                  "bytes": len(data)})
        if not usable:
            raise DncsimError(f"{self.path}: no usable checkpoint ({'; '.join(problems)}); use --force to start the "
                              "run over")
        self.verified.sort(key=lambda r: -r["experiences_done"])
        best = max(usable, key=lambda s: int(s["experiences_done"]))
        newest_recorded = max((int(r["experiences_done"]) for r in records), default=int(best["experiences_done"]))
        note = None
        if problems or int(best["experiences_done"]) < newest_recorded:
            which = "newest" if self.verified[0]["file"] == CHECKPOINT else "previous"
            note = (f"{self.path}: {'; '.join(problems) or 'the newest checkpoint is missing'}: resuming from the "
                    f"{which} generation, after experience {int(best['experiences_done']) - 1}"
                    + (f" ({', '.join(self.damaged)} kept as {CHECKPOINT_DAMAGED})" if self.damaged else ""))
        return best, note

    def quarantine_damaged(self) -> None:
        """Move the generations :meth:`load_checkpoint` found damaged to ``checkpoint.damaged.pt`` (the
        last one moved stays there), so that no later save rotates one over a good generation."""
        for name in getattr(self, "damaged", []):
            if self.file(name).exists():
                os.replace(self.file(name), self.file(CHECKPOINT_DAMAGED))
        self.damaged = []

    def missing_rows(self, rows: Iterable[int]) -> List[str]:
        """The geometry files (``geometry/row_<t + 1>.npz``) of evaluated rows ``t`` that are not on disk."""
        return [f"{GEOMETRY}/row_{t + 1:03d}.npz" for t in rows
                if not (self.path / GEOMETRY / f"row_{t + 1:03d}.npz").is_file()]

    def discard_rows_after(self, experiences_done: int) -> None:
        """Delete the geometry files of rows after ``experiences_done`` experiences (resuming from an older
        checkpoint generation: nothing measured after it may survive)."""
        for p in sorted((self.path / GEOMETRY).glob("row_*.npz")):
            if int(p.stem.split("_")[1]) > experiences_done:
                p.unlink()


# --- reading ----------------------------------------------------------------------------------------

@dataclass
class RunData:
    """A run directory's contents, read by :func:`load_run`.

    ``rows``: the metrics table (dicts with ``TABLE_COLUMNS``); ``tasks``: task names; ``learned_at``:
    the experience each task is learned in (None: only watched); ``matrices``: ProbeKey -> (E+1, T)
    float64 accuracy matrix (NaN where undefined); ``geometry_rows``: the sorted geometry files (row 0
    before training). ``config`` and ``manifest`` are the raw files; read them
    through the accessors.
    """

    path: Path
    config: dict
    manifest: dict
    rows: List[dict]
    tasks: List[str]
    matrices: Dict
    geometry_rows: List[Path] = field(default_factory=list)
    learned_at: List[Optional[int]] = field(default_factory=list)
    _geometry_cache: Dict[Path, Dict[int, object]] = field(default_factory=dict, repr=False)
    _index: Optional[Dict[Tuple, float]] = field(default=None, repr=False)

    # --- the configuration, by meaning ------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.get("name") or self.path.name

    @property
    def objective(self) -> str:
        return self.config["objective"]["name"]

    @property
    def strategy(self) -> str:
        return self.config["strategy"]["name"]

    @property
    def backbone(self) -> str:
        return self.config["backbone"]["name"]

    @property
    def source(self) -> str:
        return self.config["scenario"]["source"]["name"]

    @property
    def stream(self) -> str:
        return self.config["scenario"]["stream"]["type"]

    @property
    def seed(self) -> Optional[int]:
        return self.config.get("seed")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.objective}, {self.strategy})"

    def treatment(self, k: int) -> Dict[str, float]:
        """Task k's treatment from ``objective.regularizers``: ``position`` (k, its index in the stream),
        ``dose_dir`` / ``dose_orth`` (the dir_variance / orth_variance weight during its experience: its entry
        in ``doses``, 0 when unlisted, else ``weight``; summed over entries; 0 without one) and ``placebo``
        (1 when any regulariser is a placebo, else 0)."""
        regs = (self.config.get("objective") or {}).get("regularizers") or []
        name = self.tasks[k] if k < len(self.tasks) else None
        dose = {"dir_variance": 0.0, "orth_variance": 0.0}
        for r in regs:
            if isinstance(r, dict) and r.get("name") in dose:
                doses = r.get("doses")
                w = (doses.get(name, 0.0) if isinstance(doses, dict) else r.get("weight")) or 0.0
                dose[r["name"]] += float(w)
        placebo = any(isinstance(r, dict) and r.get("placebo") is True for r in regs)
        return {"position": k, "dose_dir": dose["dir_variance"], "dose_orth": dose["orth_variance"],
                "placebo": int(placebo)}

    # --- the configuration's settings the run report reads --------------------------------------------
    @property
    def paper_setting(self) -> str:
        """``output.paper``: when the report checks the paper's claims (always, never, auto)."""
        return (self.config.get("output") or {}).get("paper", "auto")

    @property
    def ways(self):
        """``analysis.ways``: classes per few-shot episode (2 when unset; as written, not validated)."""
        return (self.config.get("analysis") or {}).get("ways", 2)

    @property
    def estimator(self) -> Optional[str]:
        """``analysis.estimator`` (None when unset)."""
        return (self.config.get("analysis") or {}).get("estimator")

    @property
    def epochs(self) -> int:
        """``training.epochs``: epochs per experience (1 when unset)."""
        return int((self.config.get("training") or {}).get("epochs", 1))

    def configuration_key(self) -> str:
        """A key that runs of one configuration but for the seed, the name and the outputs share."""
        return json.dumps({k: v for k, v in self.config.items() if k not in ("seed", "name", "output")},
                          sort_keys=True, default=str)

    # --- the measurements ---------------------------------------------------------------------------
    @property
    def T(self) -> int:
        """Number of evaluation tasks."""
        return len(self.tasks)

    @property
    def experiences(self) -> int:
        """Number of training experiences (the accuracy matrices have one more row)."""
        return next(iter(self.matrices.values())).shape[0] - 1

    def learned(self, k: int) -> Optional[bool]:
        """Whether task k was learned (its ``learned`` row); None when the run did not decide it
        (a watched task, or a run written before the flag existed)."""
        from dncsim.analysis.names import LEARNED
        L = self.learned_at[k] if k < len(self.learned_at) else None
        v = None if L is None else self.value(LEARNED, L, k)
        return None if v is None else bool(v)

    @property
    def training_inputs(self) -> dict:
        """The manifest's record of the experiences' training inputs ({} for older runs)."""
        return self.manifest.get("training_inputs") or {}

    @property
    def last(self) -> int:
        """Index of the last experience measured."""
        return max(r["exp"] for r in self.rows)

    @property
    def probe_keys(self) -> List:
        """The ProbeKeys measured, in the run's order."""
        return list(self.matrices)

    def index(self) -> Dict[Tuple, float]:
        """(metric, exp, task, task_b, probe, protocol, shots) -> value, for fast lookups."""
        if self._index is None:
            self._index = {(r["metric"], r["exp"], r["task"], r["task_b"], r["probe"], r["protocol"], r["shots"]):
                           r["value"] for r in self.rows}
        return self._index

    def value(self, metric: str, exp: int, task=None, task_b=None, key=None, shots=None) -> Optional[float]:
        """One measurement (None when not measured); ``key`` a ProbeKey."""
        probe, protocol = (None, None) if key is None else (key.probe, key.protocol)
        return self.index().get((metric, exp, task, task_b, probe, protocol, shots))

    def series(self, metric: str, task=None, task_b=None, probe=None, protocol=None,
               shots=None) -> List[Tuple[int, float]]:
        """[(exp, value)] of one measurement along the stream, in order."""
        return sorted((r["exp"], r["value"]) for r in self.rows
                      if (r["metric"], r["task"], r["task_b"], r["probe"], r["protocol"], r["shots"]) ==
                      (metric, task, task_b, probe, protocol, shots))

    def task_scalars(self) -> List[str]:
        """Names of the per-task scalar metrics in the table (rows with a task and no second task,
        probe or shot count; the ``learned`` flag excepted), in order of first appearance."""
        from dncsim.analysis.names import LEARNED
        seen: Dict[str, None] = {}
        for r in self.rows:
            if r["task"] is not None and r["task_b"] is None and r["probe"] is None and r["shots"] is None \
                    and r["metric"] != LEARNED:
                seen.setdefault(r["metric"], None)
        return list(seen)

    def shots(self) -> List[int]:
        from dncsim.analysis.names import FEWSHOT_ERR
        return sorted({r["shots"] for r in self.rows if r["metric"] == FEWSHOT_ERR})

    def geometry(self, row: int = -1) -> Dict[int, object]:
        """Task index -> ClassGeometry at a geometry row (default: the last); each file is read once."""
        path = self.geometry_rows[row]
        if path not in self._geometry_cache:
            self._geometry_cache[path] = load_geometry(path)
        return self._geometry_cache[path]

    @property
    def feature_dim(self) -> int:
        return next(iter(self.geometry().values())).d


#: the config keys RunData's accessors read: dotted path -> what it must hold
_CONFIG_KEYS = ("objective.name", "strategy.name", "backbone.name", "scenario.source.name", "scenario.stream.type")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_json(path: Path, kind: type, what: str):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DncsimError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DncsimError(f"{path}: not a text file (expected {what})") from None
    except (ValueError, RecursionError) as exc:
        raise DncsimError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:100] if str(exc) else exc!r}); "
                          f"expected {what}") from None
    if not isinstance(data, kind):
        raise DncsimError(f"{path}: expected {what}; got a JSON {type(data).__name__}")
    return data


def _check_config(path: Path, config) -> dict:
    if not isinstance(config, dict):
        raise DncsimError(f"{path}: expected a run configuration (a YAML mapping)")
    for key in _CONFIG_KEYS:
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str):
            raise DncsimError(f"{path}: '{key}' is {'missing' if node is None else repr(node)[:60]}; expected a name")
    for key, ok in (("name", lambda v: isinstance(v, str)), ("seed", _is_int),
                    ("output", lambda v: isinstance(v, dict))):
        if config.get(key) is not None and not ok(config[key]):
            raise DncsimError(f"{path}: '{key}' is {repr(config[key])[:60]}, not a valid {key}")
    return config


def _check_manifest(path: Path, manifest: dict) -> dict:
    for key in ("versions", "training_inputs"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise DncsimError(f"{path}: '{key}' must be a mapping; got a {type(manifest[key]).__name__}")
    experiences = (manifest.get("training_inputs") or {}).get("experiences")
    if experiences is not None and not (isinstance(experiences, list)
                                        and all(isinstance(e, dict) for e in experiences)):
        raise DncsimError(f"{path}: 'training_inputs.experiences' must be a list of mappings")
    return manifest


def _read_rows(path: Path, n_tasks: int, experiences: int) -> List[dict]:
    """The rows of ``metrics.jsonl``, each checked: a mapping with every table column, of its type, task
    indices below ``n_tasks`` and experiences in [-1, ``experiences``)."""
    cols = _columns()
    kinds = {"exp": _is_int, "task": _is_int, "task_b": _is_int, "shots": _is_int, "value": _is_number}
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DncsimError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DncsimError(f"{path}: not a text file (expected JSON lines)") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except (ValueError, RecursionError):
            raise DncsimError(f"{path}: line {n} is not valid JSON") from None
        if not isinstance(r, dict):
            raise DncsimError(f"{path}: line {n} is a JSON {type(r).__name__}; expected a row (a mapping)")
        missing = [c for c in cols if c not in r]
        if missing:
            raise DncsimError(f"{path}: line {n} lacks {', '.join(missing)}")
        for c in cols:
            v = r[c]
            required = c in ("exp", "metric", "value")
            if v is None and not required:
                continue
            if not kinds.get(c, lambda x: isinstance(x, str))(v):
                expected = "an integer" if c in _INT_COLUMNS else "a number" if c == "value" else "a string"
                raise DncsimError(f"{path}: line {n}: '{c}' is {repr(v)[:40]}; expected {expected}")
        if not -1 <= r["exp"] < experiences or any(r[c] is not None and not 0 <= r[c] < n_tasks
                                                    for c in ("task", "task_b")):
            raise DncsimError(f"{path}: line {n}: experience {r['exp']}, task {r['task']}, task_b {r['task_b']} "
                              f"outside the run's {experiences} experiences and {n_tasks} tasks")
        rows.append(r)
    if not rows:
        raise DncsimError(f"{path}: is empty (no measurements)")
    return rows


def _read_accuracy(path: Path):
    """(tasks, learned_at, matrices) from ``accuracy.json``, checked: task names, one ``learned_at`` entry
    per task, and at least one matrix, all of the same (E+1, T) shape with numbers or null."""
    from dncsim.analysis.names import ProbeKey
    acc = _read_json(path, dict, "the accuracy matrices (a JSON object)")
    tasks, mats = acc.get("tasks"), acc.get("matrices")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise DncsimError(f"{path}: 'tasks' must be a non-empty list of task names")
    learned_at = acc.get("learned_at", list(range(len(tasks))))
    if not isinstance(learned_at, list) or len(learned_at) != len(tasks) or \
            not all(v is None or _is_int(v) for v in learned_at):
        raise DncsimError(f"{path}: 'learned_at' must list one experience (or null) per task ({len(tasks)})")
    if not isinstance(mats, dict) or not mats:
        raise DncsimError(f"{path}: 'matrices' must map probe/protocol keys to accuracy matrices; got "
                          f"{'an empty mapping' if mats == {} else 'nothing' if mats is None else type(mats).__name__}")
    matrices, shape = {}, None
    for k, m in mats.items():
        try:
            key = ProbeKey.parse(k)
        except DncsimError as exc:
            raise DncsimError(f"{path}: matrices: {exc}") from None
        ok = isinstance(m, list) and m and all(isinstance(row, list) and len(row) == len(tasks) and
                                                all(v is None or _is_number(v) for v in row) for row in m)
        if not ok or (shape is not None and len(m) != shape):
            raise DncsimError(f"{path}: matrix '{k}' is not a list of rows of {len(tasks)} numbers (or null)"
                              + (f", {shape} rows like the others" if shape is not None else ""))
        shape = len(m)
        matrices[key] = np.array([[np.nan if v is None else v for v in row] for row in m], dtype=np.float64)
    return tasks, learned_at, matrices


def load_run(path) -> RunData:
    """Load a run directory, checking every file against what the readers of a run need (the config keys
    of the accessors, the table's columns and types, the matrices' shapes, the geometry files' presence);
    DncsimError naming the file and what is wrong, so that a hand-edited or damaged run is one line."""
    import yaml

    p = Path(path)
    if not p.is_dir():
        raise DncsimError(f"{p}: no such run directory")
    missing = [f for f in REQUIRED_FILES if not (p / f).is_file()]
    if missing:
        raise DncsimError(f"{p}: missing {', '.join(missing)} (not a dncsim run directory, or one that never "
                          "finished an experience)")
    geometry_rows = sorted((p / GEOMETRY).glob("row_*.npz"))
    if not geometry_rows:
        raise DncsimError(f"{p}: missing {GEOMETRY}/row_*.npz")
    try:
        config = load_yaml_text((p / CONFIG).read_text(encoding="utf-8"), str(p / CONFIG))
    except OSError as exc:
        raise DncsimError(f"{p / CONFIG}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DncsimError(f"{p / CONFIG}: not a text file (expected YAML)") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise DncsimError(f"{p / CONFIG}: not valid YAML ({type(exc).__name__})") from None
    config = _check_config(p / CONFIG, config)
    manifest = _check_manifest(p / MANIFEST, _read_json(p / MANIFEST, dict, "the run's manifest (a JSON object)"))
    tasks, learned_at, matrices = _read_accuracy(p / ACCURACY)
    experiences = next(iter(matrices.values())).shape[0] - 1
    rows = _read_rows(p / METRICS_JSONL, len(tasks), experiences)
    for g in geometry_rows:
        if g.stat().st_size == 0:
            raise DncsimError(f"{g}: empty file (expected a geometry file)")
    return RunData(path=p, config=config, manifest=manifest, rows=rows, tasks=tasks, matrices=matrices,
                   geometry_rows=geometry_rows, learned_at=learned_at)
