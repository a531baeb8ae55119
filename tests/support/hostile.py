"""Shared by test modules (and used by test_report_escaping.py)."""
from pathlib import Path

import numpy as np
from PIL import Image

from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.run import run

# names are plain names (no "/"); the attribute values may hold anything
TASK_A = "<img src=x onerror=alert(1)>"


TASK_B = "*b*|`c`_[l](y) &amp; #h"


RUN_NAME = "<img src=x onerror=alert(2)>"


VALUES_A = ["<script>alert(3)</script>", "plain & <b onmouseover=alert(4)>bold</b>"]


VALUES_B = ["<svg onload=alert(5)>", "<b onmouseover=alert(10)>x|y</b>"]


def hostile_run(path: Path) -> Path:
    """A finished two-task run (factor stream over an image_table) whose names and values are payloads."""
    data = path.parent / f"{path.name}_data"
    (data / "img").mkdir(parents=True)
    quote = '"{}"'.format
    lines = [",".join(["path", quote(TASK_A), quote(TASK_B)])]
    noise = np.random.default_rng(0).integers(0, 50, 64)
    for i in range(64):
        a, b = i % 2, (i // 2) % 2
        img = np.zeros((8, 8, 3), np.uint8)
        img[..., 0], img[..., 1], img[..., 2] = 200 * a, 200 * b, noise[i]
        Image.fromarray(img).save(data / "img" / f"{i}.png")
        lines.append(",".join([f"img/{i}.png", quote(VALUES_A[a]), quote(VALUES_B[b])]))
    (data / "t.csv").write_text("\n".join(lines) + "\n")
    cfg = {"name": RUN_NAME, "seed": 0,
           "scenario": {"source": {"name": "image_table", "root": str(data), "table": str(data / "t.csv")},
                        "stream": {"type": "factor"}},
           "backbone": {"name": "convnet", "width": 4, "feature_dim": 8}, "objective": {"name": "supervised"},
           "training": {"epochs": 1, "batch_size": 32}, "evaluation": {"linear_steps": 5},
           "analysis": {"shots": [1, 2], "episodes": 5}, "output": {"report": False, "tensorboard": False}}
    run(run_from_mapping(cfg), path)
    return path
