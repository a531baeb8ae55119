"""Writing a run directory: :class:`RunDirectory` plans (new, resume, force), prepares, locks and writes
its files atomically."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from dncsim.common import (DncsimError, WriteFailed, atomic_write_bytes, atomic_write_json, atomic_write_text,
                           csv_lines, is_atomic_temporary, load_yaml_text)
from dncsim.rundir.layout import (ACCURACY, CONFIG, GEOMETRY, LOCK, MANIFEST, METRICS_CSV, METRICS_JSONL, OWNED,
                                   is_run_manifest)
from dncsim.rundir.tables import accuracy_matrices, metric_columns, metrics_csv_text
from dncsim.rundir.geometry import geometry_npz_bytes
from dncsim.rundir.lock import RunLock
from dncsim.rundir.checkpoints import CheckpointGenerations



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


class RunDirectory(CheckpointGenerations):
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
        cols = metric_columns()
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
