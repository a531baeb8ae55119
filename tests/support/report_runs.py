"""Shared by test modules (and used by test_report.py)."""


from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.run import run

BASE = {"seed": 1, "scenario": {"source": {"name": "shapes", "image_size": 16, "train_repeats": 2, "test_repeats": 2},
                                "stream": {"type": "factor", "attributes": ["shape", "color", "size", "style"]}},
        "backbone": {"name": "convnet", "width": 8, "feature_dim": 16}, "training": {"epochs": 2, "batch_size": 64},
        "evaluation": {"linear_steps": 20}, "analysis": {"shots": [1, 5, 10], "episodes": 20},
        "output": {"report": False, "tensorboard": False}}


def make_run(path, **changes):
    cfg = {**BASE, **changes}
    run(run_from_mapping(cfg), path)
    return path
