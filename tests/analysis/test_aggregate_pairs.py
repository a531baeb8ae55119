"""The pair table's pre-treatment overlap: read at the row before the later task's experience."""
from pathlib import Path

from dncsim.analysis.aggregate import pair_rows
from dncsim.analysis.names import table_row
from dncsim.rundir import RunData


def test_overlap_pre_is_read_at_the_row_before_the_later_task_trains():
    rows = [table_row(t, "axis_cos_median", 100.0 * t + 10 * a + b, task=a, task_b=b)
            for t in (-1, 0, 1, 2) for a, b in ((0, 1), (0, 2), (1, 2))]
    rows += [table_row(0, "axis_cos_pre", 0.25, task=0, task_b=1), table_row(1, "axis_cos_pre", 0.5, task=0, task_b=2),
             table_row(1, "axis_cos_pre", 0.75, task=1, task_b=2)]
    run = RunData(path=Path("r"), config={"objective": {"name": "o"}, "strategy": {"name": "s"}, "seed": 0},
                  manifest={}, rows=rows, tasks=["x", "y", "z"], matrices={}, learned_at=[0, 1, 2])
    got = {(r["task_a"], r["task_b"]): (r["overlap_pre"], r["overlap"]) for r in pair_rows(run, {})}
    assert got == {(0, 1): (0.25, 101.0), (0, 2): (0.5, 202.0), (1, 2): (0.75, 212.0)}
    old = RunData(path=Path("r"), config=run.config, manifest={}, rows=rows[:-3], tasks=run.tasks, matrices={},
                  learned_at=[0, 1, 2])                                     # a run written without axis_cos_pre
    assert [r["overlap_pre"] for r in pair_rows(old, {})] == [None, None, None]
