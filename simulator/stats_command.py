"""``dncsim stats``: every statistic of a study recomputed from its tidy tables, without rerunning
anything -- the same code the study runs (``analysis.stats.study_statistics``).

``dncsim stats STUDY_DIR_OR_TASKS_CSV [--outcome forgetting_max/linear/frozen] [--predictor
dir_cdnv_learned] [--include-unlearned] [--paper auto|always|never] [--json OUT]``. A study directory
gives ``tasks.csv`` and, when present, ``pairs.csv``, the study's own statistics settings
(``study.yaml``) and its finished runs (the paper's claims over seeds); a CSV file is a tasks table
alone (the pairs analysis is skipped with a note).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from dncsim.analysis.names import PROBES, PROTOCOLS
from dncsim.analysis.stats import study_statistics
from pydantic import ValidationError

from dncsim.common import DncsimError, atomic_write_json, json_text, one_line_error, read_yaml

__all__ = ["read_table", "load_tables", "stats_for", "format_statistics"]

TASK_COLUMNS = ("run", "task_name")
FORGETTINGS = ("forgetting_max", "forgetting_last", "forgetting_norm")


def _value(text: str):
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text


def read_table(path: Path) -> List[dict]:
    """A tidy table written by ``dncsim study`` (CSV): empty -> None, True/False -> bool, numbers -> float,
    anything else a string; a byte-order mark (as spreadsheet programs write) is skipped. DncsimError
    naming the file when it is not a readable table."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise DncsimError(f"{path}: empty file (expected a CSV table with a header row)")
            rows = []
            for n, fields in enumerate(reader, start=2):
                if len(fields) != len(header):
                    raise DncsimError(f"{path}: line {n} has {len(fields)} fields; the header has {len(header)}")
                rows.append({k: _value(v) for k, v in zip(header, fields)})
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DncsimError(f"{path}: not a readable CSV table ({type(exc).__name__})") from None
    return rows


def load_tables(path) -> Tuple[List[dict], Optional[List[dict]], Optional[dict], List[str]]:
    """(task rows, pair rows or None, the study's statistics settings or None, notes) from a study
    directory or a tasks CSV."""
    p = Path(path)
    notes = []
    if p.is_dir():
        tasks_csv = p / "tasks.csv"
        if not tasks_csv.is_file():
            raise DncsimError(f"{p}: no tasks.csv (a study directory holds one once a run has finished)")
        tasks = read_table(tasks_csv)
        pairs = read_table(p / "pairs.csv") if (p / "pairs.csv").is_file() else None
        settings = None
        if (p / "study.yaml").is_file():
            settings = read_yaml(p / "study.yaml").get("statistics")
        if pairs is None:
            notes.append(f"{p}: no pairs.csv: the pairs analysis is skipped")
        return tasks, pairs, settings if isinstance(settings, dict) else None, notes
    if p.is_file():
        return read_table(p), None, None, [f"{p} is a tasks table alone: the pairs analysis is skipped"]
    raise DncsimError(f"{p}: no such study directory or tasks table")


def _outcome(text: str) -> dict:
    parts = text.split("/")
    if len(parts) != 3 or parts[0] not in FORGETTINGS or parts[1] not in PROBES or parts[2] not in PROTOCOLS:
        raise DncsimError(f"--outcome: '{text}' is not <forgetting>/<probe>/<protocol> (forgetting: "
                          f"{', '.join(FORGETTINGS)}; probe: {', '.join(PROBES)}; protocol: {', '.join(PROTOCOLS)})")
    return {"forgetting": parts[0], "probe": parts[1], "protocol": parts[2]}


def _paper(path, setting: str) -> Optional[dict]:
    p = Path(path)
    if setting == "never" or not (p.is_dir() and (p / "study.json").is_file()):
        return None
    from dncsim.simulator.study import paper_claims_of_study
    return paper_claims_of_study(p, setting)


def stats_for(path, *, outcome: Optional[str] = None, predictor: str = "dir_cdnv_learned",
              include_unlearned: bool = False, permutations: Optional[int] = None,
              bootstrap: Optional[int] = None, paper: Optional[str] = None) -> dict:
    """Every statistic of the study at ``path`` (see the module docstring), and the paper's claims over
    its runs (``paper``: statistics.paper); DncsimError with one line for tables that cannot carry the
    analysis (missing columns, no runs, one run) unless the paper's claims stand in for it."""
    from dncsim.analysis.study import StatisticsConfig
    tasks, pairs, settings, notes = load_tables(path)
    values = dict(settings or {})
    if outcome:
        values.update(_outcome(outcome))
    if include_unlearned:
        values["include_unlearned"] = True
    given = (("permutations", permutations), ("bootstrap", bootstrap), ("paper", paper))
    values.update({k: v for k, v in given if v is not None})
    flags = {k: f"--{k}" for k, v in given if v is not None}
    try:
        cfg = StatisticsConfig.model_validate(values)
    except ValidationError as exc:
        loc = exc.errors(include_url=False)[0]["loc"]
        if loc and loc[0] in flags:                           # a flag's value, whatever the study says
            raise DncsimError(one_line_error(exc, StatisticsConfig).replace(str(loc[0]), flags[loc[0]], 1)) from None
        raise DncsimError(f"{path}: study.yaml has statistics settings this dncsim does not read "
                          f"({one_line_error(exc, StatisticsConfig, 'statistics')})") from None
    y = f"{cfg.forgetting}/{cfg.probe}/{cfg.protocol}"
    if not tasks:
        raise DncsimError(f"{path}: the tasks table has no rows (no finished runs)")
    claims = _paper(path, cfg.paper)
    missing = [c for c in TASK_COLUMNS + (y, predictor) if c not in tasks[0]]
    if missing and claims is not None:
        return {"primary": None, "verdict": [], "paper": claims, "excluded": {"task_rows": 0, "reason": ""},
                "notes": notes + [f"no forgetting test: the tasks table has no column {', '.join(missing)} (a joint "
                                  "stream has nothing to forget)"]}
    if missing:
        raise DncsimError(f"{path}: the tasks table has no column {', '.join(missing)} (its columns: "
                          f"{', '.join(list(tasks[0])[:12])}{', ...' if len(tasks[0]) > 12 else ''})")
    runs = {r["run"] for r in tasks if r.get("run") is not None}
    if len(runs) < 2:
        raise DncsimError(f"{path}: {len(runs)} run in the tasks table; statistics over runs need several")
    if pairs is not None and pairs and not {"overlap", f"interference/{cfg.probe}/frozen", "run"} <= set(pairs[0]):
        notes.append("pairs.csv lacks overlap or interference columns: the pairs analysis is skipped")
        pairs = None
    result = study_statistics(tasks, pairs or [], cfg, predictor=predictor)
    result["notes"] = notes + result["notes"]
    if claims is not None:
        result["paper"] = claims
    if result["primary"] is None:
        why = next((n[len("primary test: "):] for n in result["notes"] if n.startswith("primary test: ")), "")
        raise DncsimError(f"{path}: no primary test possible: {why}")
    return result


def format_statistics(result: dict) -> str:
    """The verdict sentences and notes (and the paper's claims over runs), for the terminal."""
    lines = []
    for g in (result.get("paper") or {}).get("groups", []):
        lines.append(f"The paper's claims, {g['setting']} ({len(g['runs'])} runs):")
        lines += [f"- {f}" for f in g["findings"]]
    if result["primary"] is None:
        return "\n".join(lines + [f"note: {n}" for n in result["notes"]])
    lines += [f"Verdict: {result['primary']['verdict']}"] + [f"- {v}" for v in result["verdict"]]
    ex = result["excluded"]
    lines.append(f"({result['primary']['n_rows']} task rows in {result['primary']['n_runs']} runs; {ex['task_rows']} "
                 f"excluded: {ex['reason']})" if ex["task_rows"] else
                 f"({result['primary']['n_rows']} task rows in {result['primary']['n_runs']} runs)")
    causal = result.get("causal")
    if causal and causal.get("strategies"):
        def ci(v):
            if v["mean"] is None:
                return "n/a"
            return (f"{v['mean']:.3f}" if v["ci_low"] is None else
                    f"{v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]")
        lines.append("Per strategy (mean over runs, 95% t interval over runs):")
        lines.append(f"  {'strategy':<14} {'runs':>4}  {'forgetting of earlier tasks':<30} accuracy when learned")
        for row in causal["strategies"]:
            lines.append(f"  {row['strategy']:<14} {row['runs']:>4}  {ci(row['forgetting']):<30} {ci(row['accuracy'])}")
    lines += [f"note: {n}" for n in result["notes"] if not n.endswith(ex["reason"])]
    return "\n".join(lines)


def write_json(result: dict, out) -> None:
    """``result`` as JSON (``dncsim.common.json_text``: non-finite numbers null, with a note) into the file
    ``out`` (atomically), or onto standard output when ``out`` is None."""
    data = json.loads(json.dumps(result, default=str))
    if out is None:
        sys.stdout.write(json_text(data))
        sys.stdout.flush()
    else:
        atomic_write_json(out, data)
