"""Study figures: points coloured by task, a fit within each task, and the pooled fit labelled as pooled.

The data are built so that the pooled and within-task slopes have opposite signs (tasks with lower
directional CDNV forget more across tasks, less within each task): the figure must draw both, each
with its own sign, and keep unlearned tasks out of the fits."""
import numpy as np
import pytest

from dncsim.analysis.report.study import _overlap_figure, _scatter_by_task

Y = "forgetting_max/linear/frozen"


def simpson_rows(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for k, (name, level, shift) in enumerate([("color", 0.01, 0.6), ("size", 0.1, 0.3), ("shape", 1.0, 0.0)]):
        for run in range(6):
            x = level * 10 ** rng.uniform(-0.3, 0.3)
            y = shift + 0.2 * np.log10(x / level) + rng.normal(0, 0.002)   # within a task: slope +0.2 per decade
            rows.append({"objective": "simclr", "strategy": ("naive", "replay")[run % 2], "task_name": name,
                         "task": k, "learned": True, "dir_cdnv_learned": x, Y: y})
    rows.append({"objective": "simclr", "strategy": "naive", "task_name": "style", "task": 3, "learned": False,
                 "dir_cdnv_learned": 5.0, Y: 0.9})
    return rows


def _slope(line):
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    return (y[-1] - y[0]) / (np.log10(x[-1]) - np.log10(x[0]))


def test_within_task_fits_and_a_labelled_pooled_fit():
    rows = simpson_rows()
    fig = _scatter_by_task(rows, "dir_cdnv_learned", Y, "x", "y", "t", include_unlearned=False)
    ax = fig.axes[0]
    fits = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 20]
    pooled = [ln for ln in fits if ln.get_linestyle() == "--"]
    within = [ln for ln in fits if ln.get_linestyle() == "-"]
    assert len(pooled) == 1 and len(within) == 3
    for ln in within:
        assert _slope(ln) == pytest.approx(0.2, abs=0.02)
    kept = [r for r in rows if r["learned"]]
    expected = np.polyfit(np.log10([r["dir_cdnv_learned"] for r in kept]), [r[Y] for r in kept], 1)[0]
    assert _slope(pooled[0]) == pytest.approx(expected, rel=1e-6) and expected < 0   # opposite sign: Simpson
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "pooled fit (all tasks)" in labels and "not learned (excluded)" in labels
    assert {f"task {n} (within-task fit)" for n in ("color", "size", "shape")} <= set(labels)
    assert "task style (within-task fit)" not in labels
    # with include_unlearned the fourth task joins the fits
    fig = _scatter_by_task(rows, "dir_cdnv_learned", Y, "x", "y", "t", include_unlearned=True)
    assert len([ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 20]) == 4   # style: one point, no fit


def test_overlap_figure_fits_within_each_pair_and_pooled():
    rng = np.random.default_rng(1)
    pairs = []
    for a, b, base in (("color", "size", 0.0), ("color", "shape", 0.3), ("size", "shape", 0.6)):
        for _ in range(5):
            x = rng.uniform(0.05, 0.3)
            pairs.append({"name_a": a, "name_b": b, "objective": "simclr", "overlap": x + base,
                          "interference/linear/frozen": -x + 2 * base})
    ax = _overlap_figure(pairs, "interference/linear/frozen").axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "pooled fit (all pairs)" in labels and "color / size (within-pair fit)" in labels
    fits = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 20]
    slopes = sorted((np.diff(ln.get_ydata())[0] / np.diff(ln.get_xdata())[0]) for ln in fits)
    assert slopes[0] == pytest.approx(-1.0, abs=1e-9) and slopes[-1] > 0     # within: -1; pooled: positive
