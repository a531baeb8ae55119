"""Shared by test modules (and used by test_study_statistics.py)."""
import numpy as np


def tables(effect, seed=0, runs_per_objective=8, tasks=3, unlearned=0):
    """Runs of ``tasks`` tasks; forgetting rises with log dir-CDNV by ``effect``; CDNV is unrelated noise."""
    rng = np.random.default_rng(seed)
    task_rows, pair_rows = [], []
    for obj in ("simclr", "supervised"):
        for r in range(runs_per_objective):
            run = f"{obj}-{r}"
            shift = rng.normal() * 2
            for k in range(tasks):
                d = float(np.exp(rng.normal() + shift))
                c = float(np.exp(rng.normal()))
                f = effect * np.log(d) + rng.normal() * 0.5 + shift
                task_rows.append({"run": run, "objective": obj, "strategy": "naive", "task_name": f"t{k}",
                                  "learned_at": k, "learned": not (k == 0 and r < unlearned),
                                  "dir_cdnv_learned": d, "cdnv_learned": c, "forgetting_max/linear/frozen": float(f)})
            for a in range(tasks):
                for b in range(a + 1, tasks):
                    o = float(rng.uniform())
                    pair_rows.append({"run": run, "objective": obj, "strategy": "naive", "name_a": f"t{a}",
                                      "name_b": f"t{b}", "learned_a": True, "learned_b": True, "overlap": o,
                                      "interference/linear/frozen": effect * o + float(rng.normal()) * 0.3})
    return task_rows, pair_rows
