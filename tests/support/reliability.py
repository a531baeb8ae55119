"""Shared by test modules (and used by test_reliability.py)."""
import json
import time
from pathlib import Path

import numpy as np
import yaml

from dncsim.simulator.template import SupervisedPlugin  # Avalanche's plugin base, imported quietly
from tests.support.tiny import DROP, tiny_config

ROOT = Path(__file__).resolve().parents[2]


TINY = tiny_config({"scenario.source.probe_repeats": 1, "scenario.stream.attributes": ["color", "style", "size"],
                    "output.checkpoints": DROP}, name="tiny", seed=1, objective={"name": "simclr"})


def same_results(a, b):
    for name in ("metrics.csv", "metrics.jsonl", "accuracy.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ga, gb = sorted((a / "geometry").glob("*.npz")), sorted((b / "geometry").glob("*.npz"))
    assert [p.name for p in ga] == [p.name for p in gb]
    for fa, fb in zip(ga, gb):
        with np.load(fa) as za, np.load(fb) as zb:
            assert za.files == zb.files and all(np.array_equal(za[k], zb[k], equal_nan=True) for k in za.files)


class StopAt(SupervisedPlugin):
    """Interrupts a run as experience ``at`` starts (the checkpoints of the earlier ones are written)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def before_training_exp(self, strategy, **kwargs):
        if strategy.experience.current_experience == self.at:
            raise KeyboardInterrupt


STUDY = {"base": {**TINY, "training": {"epochs": 3, "batch_size": 16},
                  "scenario": {**TINY["scenario"], "source": {**TINY["scenario"]["source"], "train_repeats": 2}}},
         "factors": {"seed": [0, 1]}, "workers": 2, "statistics": {"bootstrap": 100, "permutations": 100}}


def study_file(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "out": str(tmp_path / name)}))
    return path


def wait_for_progress(study_dir: Path, timeout=300) -> dict:
    """The manifest of the first run that finished an experience and is still running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for m in study_dir.glob("runs/*/manifest.json"):
            try:
                manifest = json.loads(m.read_text())
            except ValueError:
                continue
            if manifest["status"] == "running" and manifest["experiences_done"] >= 1:
                return manifest
        time.sleep(0.02)
    raise AssertionError("no run made progress")
