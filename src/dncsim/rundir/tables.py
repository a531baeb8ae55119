"""The metrics table: ``metrics.csv`` text, reading it back, and the accuracy matrices of ``accuracy.json``."""
from __future__ import annotations

import csv
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from dncsim.common import DncsimError, csv_text



INT_COLUMNS = ("exp", "task", "task_b", "shots")


def metric_columns():
    from dncsim.analysis.names import TABLE_COLUMNS
    return TABLE_COLUMNS


def metrics_csv_text(rows: Iterable[dict]) -> str:
    """The metrics table as CSV (``dncsim.common.csv_text``: quoted where needed, floats as ``repr``,
    None as an empty field)."""
    cols = metric_columns()
    return csv_text(cols, ([r[c] for c in cols] for r in rows))


def read_metrics_csv(path) -> List[dict]:
    """The rows of a ``metrics.csv``, typed as the writer had them (ints, floats, None for empty)."""
    cols = metric_columns()
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
            for c in INT_COLUMNS:
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
