"""Reading a run directory: :func:`load_run` checks its files and gives :class:`RunData`, whose accessors
are the only readers of the config's layout and the metric rows."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from dncsim.common import DncsimError, load_yaml_text
from dncsim.rundir.layout import ACCURACY, CONFIG, GEOMETRY, MANIFEST, METRICS_JSONL, REQUIRED_FILES
from dncsim.rundir.tables import INT_COLUMNS, metric_columns
from dncsim.rundir.geometry import load_geometry



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
    cols = metric_columns()
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
                expected = "an integer" if c in INT_COLUMNS else "a number" if c == "value" else "a string"
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


def run_status(run_dir) -> Optional[str]:
    """The ``status`` its manifest records for the run directory ``run_dir``; None without a readable one."""
    try:
        status = json.loads((Path(run_dir) / MANIFEST).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


def is_run_directory(path) -> bool:
    """Whether ``path`` holds a run's manifest (a run directory, finished or not)."""
    return (Path(path) / MANIFEST).is_file()

