"""Read a run directory into memory: config, manifest, metrics table, accuracy matrices, geometry.

Reports and studies read only these files, never the model (ARCHITECTURE: contracts).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml

from analysis import names as N
from analysis.errors import DncsimError
from analysis.geometry import ClassGeometry

__all__ = ["RunData", "load_run", "load_geometry", "REQUIRED_FILES"]

REQUIRED_FILES = ("config.yaml", "manifest.json", "metrics.jsonl", "accuracy.json")
_GEOMETRY_FIELDS = ("classes", "counts", "means", "var", "m4", "d2", "cdnv", "dir_cdnv", "theta")


def load_geometry(path: Path) -> Dict[int, ClassGeometry]:
    """Task index -> ClassGeometry from a ``geometry/row_<r>.npz`` file of a run directory."""
    out: Dict[int, ClassGeometry] = {}
    with np.load(path) as z:
        tasks = sorted({int(k.split("/")[0][4:]) for k in z.files})
        for k in tasks:
            missing = [f for f in _GEOMETRY_FIELDS + ("ddof",) if f"task{k}/{f}" not in z.files]
            if missing:
                raise DncsimError(f"{path}: no {', '.join(f'task{k}/{f}' for f in missing)} "
                                  "(written by another dncsim version?)")
            kw = {f: torch.from_numpy(z[f"task{k}/{f}"]) for f in _GEOMETRY_FIELDS}
            mav = z[f"task{k}/mean_axis_var"] if f"task{k}/mean_axis_var" in z.files else None
            out[k] = ClassGeometry(**kw, mean_axis_var=None if mav is None else torch.from_numpy(mav),
                                   ddof=int(z[f"task{k}/ddof"]))
    return out


@dataclass
class RunData:
    """A run directory's contents. ``rows``: the metrics table (dicts with ``analysis.names.TABLE_COLUMNS``);
    ``matrices``: "<protocol>/<probe>" -> (T+1, T) float64 (NaN where undefined); ``geometry_rows``:
    the sorted geometry files (row 0 before training)."""

    path: Path
    config: dict
    manifest: dict
    rows: List[dict]
    tasks: List[str]
    matrices: Dict[str, np.ndarray]
    geometry_rows: List[Path] = field(default_factory=list)
    _geometry_cache: Dict[Path, Dict[int, ClassGeometry]] = field(default_factory=dict, repr=False)

    @property
    def T(self) -> int:
        return len(self.tasks)

    @property
    def last(self) -> int:
        """Index of the last experience measured."""
        return max(r["exp"] for r in self.rows)

    @property
    def label(self) -> str:
        c = self.config
        return f"{c.get('name') or self.path.name} ({c['objective']['name']}, {c['strategy']['name']})"

    def index(self) -> Dict[Tuple, float]:
        """(metric, exp, task, task_b, probe, protocol, shots) -> value, for fast lookups."""
        return {(r["metric"], r["exp"], r["task"], r["task_b"], r["probe"], r["protocol"], r["shots"]): r["value"]
                for r in self.rows}

    def series(self, metric: str, task=None, task_b=None, probe=None, protocol=None, shots=None) -> List[Tuple[int, float]]:
        """[(exp, value)] of one measurement along the stream, in order."""
        return sorted((r["exp"], r["value"]) for r in self.rows
                      if (r["metric"], r["task"], r["task_b"], r["probe"], r["protocol"], r["shots"]) ==
                      (metric, task, task_b, probe, protocol, shots))

    def geometry(self, row: int = -1) -> Dict[int, ClassGeometry]:
        """Geometry of every task at a geometry row (default: the last); each file is read once."""
        path = self.geometry_rows[row]
        if path not in self._geometry_cache:
            self._geometry_cache[path] = load_geometry(path)
        return self._geometry_cache[path]

    @property
    def feature_dim(self) -> int:
        g = self.geometry()
        return next(iter(g.values())).d

    def shots(self) -> List[int]:
        return sorted({r["shots"] for r in self.rows if r["metric"] == N.FEWSHOT_ERR})


def load_run(path) -> RunData:
    """Load a run directory; DncsimError naming the directory and the missing file otherwise."""
    p = Path(path)
    if not p.is_dir():
        raise DncsimError(f"{p}: no such run directory")
    missing = [f for f in REQUIRED_FILES if not (p / f).is_file()]
    if missing:
        raise DncsimError(f"{p}: missing {', '.join(missing)} (not a dncsim run directory, or one that never "
                          "finished an experience)")
    geometry_rows = sorted((p / "geometry").glob("row_*.npz"))
    if not geometry_rows:
        raise DncsimError(f"{p}: missing geometry/row_*.npz")
    try:
        config = yaml.safe_load((p / "config.yaml").read_text())
        manifest = json.loads((p / "manifest.json").read_text())
        rows = [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines() if line.strip()]
        acc = json.loads((p / "accuracy.json").read_text())
    except (ValueError, yaml.YAMLError) as exc:
        raise DncsimError(f"{p}: a run file is not readable ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not rows:
        raise DncsimError(f"{p}: metrics.jsonl is empty")
    matrices = {k: np.array([[np.nan if v is None else v for v in row] for row in m], dtype=np.float64)
                for k, m in acc["matrices"].items()}
    return RunData(path=p, config=config, manifest=manifest, rows=rows, tasks=list(acc["tasks"]), matrices=matrices,
                   geometry_rows=geometry_rows)
