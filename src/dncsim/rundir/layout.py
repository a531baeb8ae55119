"""The run directory's layout: its file names, which of them a run owns, run names, the manifest's
provenance."""
from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional




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
