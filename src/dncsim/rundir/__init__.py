"""The run directory: the layer that writes and reads it (docs, Reference, Outputs), above ``dncsim.common``.

Files, each written atomically: ``config.yaml``, ``manifest.json`` (status; only ``finished`` means
complete), ``metrics.csv`` / ``metrics.jsonl``, ``accuracy.json``, ``geometry/row_<r>.npz`` (row 0 =
before training), ``checkpoint.pt`` / ``checkpoint.previous.pt`` (two generations, SHA-256 in the manifest;
a failed one goes to ``checkpoint.damaged.pt``), ``.dncsim.lock`` (an OS file lock), ``tb/``, ``report/``.

Writing: :class:`RunDirectory` (``writer``; checkpoints in ``checkpoints``, the lock in ``lock``). Reading:
:func:`load_run` -> :class:`RunData` (``reader``). File names: ``layout``; the metrics table: ``tables``;
geometry files: ``geometry``.
"""
from dncsim.rundir.checkpoints import CheckpointGenerations
from dncsim.rundir.geometry import geometry_npz_bytes, load_geometry
from dncsim.rundir.layout import (ACCURACY, CHECKPOINT, CHECKPOINT_DAMAGED, CHECKPOINT_PREVIOUS, CONFIG, GEOMETRY, LOCK,
                                  MANIFEST, METRICS_CSV, METRICS_JSONL, OWNED, REPORT, REQUIRED_FILES, STATUSES,
                                  TENSORBOARD, is_run_manifest, now, plain_name, provenance)
from dncsim.rundir.lock import DYING_HOLDER_WAIT, RunLock
from dncsim.rundir.reader import RunData, is_run_directory, load_run, run_status
from dncsim.rundir.tables import accuracy_matrices, metrics_csv_text, read_metrics_csv
from dncsim.rundir.writer import RunDirectory

__all__ = ["RunDirectory", "RunLock", "RunData", "load_run", "load_geometry", "read_metrics_csv", "accuracy_matrices",
           "REQUIRED_FILES", "CONFIG", "MANIFEST", "METRICS_CSV", "METRICS_JSONL", "ACCURACY", "GEOMETRY",
           "CHECKPOINT", "TENSORBOARD", "REPORT", "plain_name", "CHECKPOINT_PREVIOUS", "CHECKPOINT_DAMAGED", "LOCK",
           "OWNED", "STATUSES", "is_run_manifest", "now", "provenance", "metrics_csv_text", "geometry_npz_bytes",
           "CheckpointGenerations", "DYING_HOLDER_WAIT", "run_status", "is_run_directory"]
