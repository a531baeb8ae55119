"""Metric objects and their collection: declared state that round-trips through a weights-only
checkpoint, a restored collection that continues exactly, the contract checks, and the random-direction
reference levels of |cos|."""
import io
import json
import math

import pytest
import torch

from dncsim.analysis.geometry import class_geometry
from dncsim.analysis.metrics import (DEFAULT_METRICS, AnalysisConfig, EvaluationConfig, EvaluationTask, Metric,
                                     MetricCollection, build_collection)
from dncsim.analysis.metrics.base import Row, pack_state, unpack_state
from dncsim.analysis.metrics.forgetting_transfer import ForgettingTransfer
from dncsim.analysis.orthogonality import random_abs_cos
from dncsim.analysis.probes import fit_linear, fit_ncc
from dncsim.common import DncsimError

N_TRAIN, N_TEST, D = 48, 40, 6


def make_tasks():
    """Two tasks on the same samples (learned at experiences 0 and 1) and a watched one."""
    y = torch.arange(N_TRAIN + N_TEST)
    labels = [y % 2, (y // 2) % 3, (y // 6) % 2]
    return [EvaluationTask(index=k, name=f"task {k}, part", train_labels=lab[:N_TRAIN], test_labels=lab[N_TRAIN:],
                           group="same", learned_at=(k if k < 2 else None)) for k, lab in enumerate(labels)]


def features_at(t: int):
    """Deterministic features that drift with the row t: class structure plus noise."""
    def features(k, split):
        g = torch.Generator().manual_seed(100 * (t + 2) + (split == "test"))
        n = N_TRAIN if split == "train" else N_TEST
        offset = 0 if split == "train" else N_TRAIN
        y = torch.arange(offset, offset + n)
        signal = torch.stack([(y % 2) * 2.0, ((y // 2) % 3) * 1.5, ((y // 6) % 2) * (1.0 + t)], dim=1)
        return torch.cat([signal, torch.zeros(n, D - 3)], dim=1) + torch.randn(n, D, generator=g)
    return features


def collection():
    return build_collection(make_tasks(), EvaluationConfig(linear_steps=15),
                            AnalysisConfig(shots=[1, 5], episodes=10), seed=4)


def test_state_packs_into_plain_tensors_and_back():
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(30) % 3
    state = {"g": class_geometry(x, y, mean_axis_var=True), "probes": [fit_ncc(x, y), fit_linear(x, y, steps=5)],
             "n": 3, "name": "a", "none": None}
    buf = io.BytesIO()
    torch.save(pack_state(state), buf)
    buf.seek(0)
    back = unpack_state(torch.load(buf, weights_only=True))
    for field, value in state["g"].to_arrays().items():
        torch.testing.assert_close(back["g"].to_arrays()[field], value, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(back["probes"][0].predict(x), state["probes"][0].predict(x))
    assert torch.equal(back["probes"][1].logits(x), state["probes"][1].logits(x))
    assert (back["n"], back["name"], back["none"]) == (3, "a", None)
    with pytest.raises(TypeError, match="cannot be checkpointed"):
        pack_state({"bad": object()})


def test_a_restored_collection_continues_exactly():
    whole = collection()
    for t in (-1, 0, 1, 2):
        whole.evaluate(t, features_at(t))
    first = collection()
    for t in (-1, 0):
        first.evaluate(t, features_at(t))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = collection()
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for t in (1, 2):
        resumed.evaluate(t, features_at(t))
    assert resumed.rows == whole.rows and resumed.done == [-1, 0, 1, 2]
    # the rows' JSON is encoded row by row once, and stays exactly json.dumps of the table
    assert resumed.state_dict()["rows_json"] == json.dumps(whole.rows) == whole.state_dict()["rows_json"]
    whole.rows[3] = dict(whole.rows[3], value=0.125)
    assert whole.state_dict()["rows_json"] == json.dumps(whole.rows)
    # the frozen probes and the geometry when learned were state: without them the rows would differ
    fresh = collection()
    for t in (1, 2):
        fresh.evaluate(t, features_at(t))
    assert fresh.rows != [r for r in whole.rows if r["exp"] >= 1]


def test_what_the_collection_measures():
    c = collection()
    rows = []
    for t in (-1, 0, 1):
        rows += c.evaluate(t, features_at(t)).rows
    assert {r["metric"] for r in rows} <= set(c.emits)
    frozen = [r for r in rows if r["metric"] == "acc" and r["protocol"] == "frozen"]
    assert sorted({(r["exp"], r["task"]) for r in frozen}) == [(0, 0), (1, 0), (1, 1)]   # the watched task never
    drift = [(r["exp"], r["task"]) for r in rows if r["metric"] == "axis_drift"]
    assert drift == [(1, 0)]
    pairs = {(r["task"], r["task_b"]) for r in rows if r["metric"] == "prop42_frac"}
    assert pairs == {(0, 1), (0, 2), (1, 2)}
    v = {(r["task"], r["task_b"]): r["value"] for r in rows if r["metric"] == "labels_cramers_v" and r["exp"] == 1}
    assert v[(0, 1)] == 0.0 and v[(0, 2)] == 0.0 and 0 < v[(1, 2)] < 0.1     # 40 test samples: not exactly balanced
    assert all(r["task_name"] == f"task {r['task']}, part" for r in rows if r["task"] is not None)
    result = c.evaluate(2, features_at(2))
    assert sorted(result.geometries) == [0, 1, 2] and result.t == 2


def test_dependent_labelings_get_no_prop42_rows():
    """y % 4 determines y % 2 (Cramer's V = 1): Prop. 4.2 assumes independence, so that pair has no
    Prop. 4.2 rows, while its orthogonality is still measured."""
    from dncsim.analysis.metrics.axis_orthogonality import AxisOrthogonality
    y = torch.arange(N_TRAIN + N_TEST)
    tasks = [EvaluationTask(index=k, name=n, train_labels=lab[:N_TRAIN], test_labels=lab[N_TRAIN:], group="same",
                            learned_at=None)
             for k, (n, lab) in enumerate([("fine", y % 4), ("coarse", y % 2), ("other", (y // 4) % 2)])]
    rows = AxisOrthogonality()(Row(0, tasks, features_at(0)))
    by = {(r["metric"], r["task"], r["task_b"]): r["value"] for r in rows}
    assert by[("labels_cramers_v", 0, 1)] == pytest.approx(1.0)
    assert by[("labels_cramers_v", 0, 2)] == 0.0 and by[("labels_cramers_v", 1, 2)] == 0.0
    for metric in ("prop42_frac", "prop42_tightness", "prop42_bound_vs_random"):
        assert {(a, b) for m, a, b in by if m == metric} == {(0, 2), (1, 2)}
    assert ("axis_cos_median", 0, 1) in by
    assert all(by[("prop42_tightness", a, b)] >= 1.0 for a, b in ((0, 2), (1, 2)))   # exactly balanced: bound holds


def test_the_contract_is_checked():
    class Loose(Metric):
        name, emits = "loose", ("declared",)

        def update(self, row):
            self.measure(row, "undeclared", 1.0, task=0)

    row = Row(0, make_tasks(), features_at(0))
    with pytest.raises(ValueError, match="does not declare 'undeclared'"):
        Loose()(row)
    with pytest.raises(ValueError, match="needs probe_accuracy earlier"):
        ForgettingTransfer()(row)
    with pytest.raises(ValueError, match="repeated: \\['loose'\\]"):
        MetricCollection([Loose(), Loose()], make_tasks())
    m = DEFAULT_METRICS[0].from_config(EvaluationConfig(), AnalysisConfig(), 0)
    with pytest.raises(ValueError, match="state has"):
        m.load_state_dict({"accuracy": {}})


def test_the_collection_measures_providers_before_what_needs_them():
    """needs/provides order the collection: a consumer given before its provider comes after it, ties keep
    their given order (the default order is kept as it is), and a need without provider is refused."""
    def metric(label, needs=(), provides=()):
        return type(label, (Metric,), {"name": label, "needs": needs, "provides": provides,
                                       "update": lambda self, row: None})()

    a, b, c, d = metric("a", needs=("x",)), metric("b"), metric("c", provides=("x",)), metric("d", needs=("x",))
    assert [m.name for m in MetricCollection([a, b, c, d], make_tasks()).metrics] == ["b", "c", "a", "d"]
    defaults = [cls.from_config(EvaluationConfig(), AnalysisConfig(), 0) for cls in DEFAULT_METRICS]
    assert [m.name for m in MetricCollection(defaults, make_tasks()).metrics] == [m.name for m in defaults]
    assert [m.name for m in MetricCollection(defaults[::-1], make_tasks()).metrics].index("probe_accuracy") < \
        [m.name for m in MetricCollection(defaults[::-1], make_tasks()).metrics].index("forgetting_transfer")
    with pytest.raises(DncsimError, match=r"^metric 'forgetting_transfer' needs 'accuracy' \(row.products\), which "
                                          r"no metric of the collection provides"):
        MetricCollection([ForgettingTransfer()], make_tasks())
    with pytest.raises(DncsimError, match="metrics need each other in a cycle: "):
        MetricCollection([metric("e", needs=("y",), provides=("z",)), metric("f", needs=("z",), provides=("y",))],
                         make_tasks())


@pytest.mark.parametrize("d,exact", [(2, math.cos(math.pi / 4)), (3, 0.5)])
def test_random_median_abs_cos_is_exact_in_low_dimensions(d, exact):
    """d = 2: |cos| of a uniform angle has median cos(pi/4); d = 3: |cos| is uniform on [0, 1]."""
    assert random_abs_cos(d)["median"] == pytest.approx(exact, rel=1e-12)
    assert random_abs_cos(d)["rms"] == pytest.approx(1 / math.sqrt(d), rel=1e-12)


@pytest.mark.parametrize("d", [16, 128, 512])
def test_random_abs_cos_levels_match_simulation(d):
    g = torch.Generator().manual_seed(d)
    u = torch.nn.functional.normalize(torch.randn(40_000, d, generator=g, dtype=torch.float64), dim=1)
    v = torch.nn.functional.normalize(torch.randn(40_000, d, generator=g, dtype=torch.float64), dim=1)
    cos = (u * v).sum(1).abs()
    ref = random_abs_cos(d)
    assert float(cos.median()) == pytest.approx(ref["median"], rel=0.02)
    assert float(cos.square().mean().sqrt()) == pytest.approx(ref["rms"], rel=0.02)
    assert ref["median"] == pytest.approx(0.674 / math.sqrt(d), rel=0.05)       # the large-d approximation
    assert ref["median"] < 0.71 * ref["rms"]           # the RMS is no reference for a median


def test_the_learned_flag_on_a_hand_made_matrix():
    """Chance + 0.2 x (1 - chance): 0.4 for a balanced 4-class task, 0.6 for a 2-class one."""
    from dncsim.analysis.metrics import TaskLearned
    from dncsim.analysis.names import ProbeKey
    y4, y2 = torch.arange(8) % 4, torch.arange(8) % 2
    tasks = [EvaluationTask(0, "four", y4, y4, "g", 0), EvaluationTask(1, "two", y2, y2, "g", 1),
             EvaluationTask(2, "watched", y2, y2, "g", None)]
    R = torch.full((3, 3), float("nan"), dtype=torch.float64)
    R[1, 0], R[2, 1], R[1, 2], R[2, 2] = 0.41, 0.59, 0.9, 0.9
    flags = {}
    for t in (0, 1):
        row = Row(t, tasks, features_at(t), experiences=2)
        row.products["accuracy"] = {ProbeKey("linear", "refit"): R}
        flags.update({r["task"]: r["value"] for r in TaskLearned(margin=0.2)(row)})
    assert flags == {0: 1.0, 1: 0.0}                    # the watched task is never decided
    assert tasks[0].chance == 0.25 and tasks[1].chance == 0.5


def test_accuracy_over_the_seen_classes_on_a_hand_made_case():
    """Classes 0, 1 (task 0) sit at x = 0 and 4; classes 2, 3 (task 1) at x = 1 and 5, one query each at
    its centre plus one shifted by 0.6 towards the other task's class. Within a task every query is
    right; over the union the shifted queries of classes 0 and 1 (at 0.6 and 4.6) go to 2 and 3."""
    from dncsim.analysis.metrics import SeenClassesAccuracy
    centre = {0: 0.0, 1: 4.0, 2: 1.0, 3: 5.0}
    shift = {0: 0.6, 1: 0.6, 2: -0.3, 3: -0.3}

    def split(classes, test):
        y = torch.tensor([c for c in classes for _ in range(2)])
        x = torch.tensor([centre[c] + (shift[c] if test and i else 0.0) for c in classes for i in range(2)])
        return torch.stack([x, torch.zeros_like(x)], 1).double(), y

    tasks, data = [], {}
    for k, classes in enumerate(([0, 1], [2, 3])):
        (ftr, ytr), (fte, yte) = split(classes, False), split(classes, True)
        tasks.append(EvaluationTask(k, f"t{k}", ytr, yte, f"g{k}", k, labeling="shape", classes=tuple(classes)))
        data[(k, "train")], data[(k, "test")] = ftr, fte
    metric = SeenClassesAccuracy(probes=("ncc",))
    first = metric(Row(0, tasks, lambda k, s: data[(k, s)], experiences=2))
    assert [(r["metric"], r["probe"], r["protocol"], r["task"], r["value"]) for r in first] == [
        ("acc_seen", "ncc", "refit", None, 1.0)]                      # one task seen: its own two classes
    second = metric(Row(1, tasks, lambda k, s: data[(k, s)], experiences=2))
    assert second[0]["value"] == 6 / 8                                # 0.6 -> class 2, 4.6 -> class 3
    assert metric(Row(-1, tasks, lambda k, s: data[(k, s)], experiences=2)) == []
    multilabel = [EvaluationTask(k, f"m{k}", t.train_labels, t.test_labels, "same", k, labeling=f"lab{k}",
                                 classes=t.classes) for k, t in enumerate(tasks)]
    assert metric(Row(1, multilabel, lambda k, s: data[(k, s)], experiences=2)) == []   # not a class split


def test_the_linear_probe_says_whether_its_solve_converged():
    """``probe_converged`` is 1 exactly when L-BFGS stopped by a tolerance within ``linear_steps``: where it
    says 0 a larger budget moves the probe, where it says 1 it does not; one row per task and row, under
    linear/refit, and none without a linear probe. The counts and the sentence follow the rows."""
    from dncsim.analysis.metrics import ProbeAccuracy
    from dncsim.analysis.metrics.probe_accuracy import convergence_finding, probe_convergence
    from dncsim.analysis.probes import fit_linear_tasks
    tasks = make_tasks()
    for steps, expect in ((2, 0.0), (3000, 1.0)):
        metric, rows = ProbeAccuracy(linear_steps=steps), []
        for t in (-1, 0, 1):
            rows += metric(Row(t, tasks, features_at(t), experiences=2))
        flags = [r for r in rows if r["metric"] == "probe_converged"]
        assert sorted((r["exp"], r["task"]) for r in flags) == [(t, k) for t in (-1, 0, 1) for k in range(3)]
        assert {(r["probe"], r["protocol"]) for r in flags} == {("linear", "refit")}
        assert {r["value"] for r in flags} == {expect}
        stats = probe_convergence(rows, learned_at=[0, 1, None])
        assert (stats["fits"], stats["at_budget"]) == (9, 0 if expect else 9)
        if expect:
            assert stats["tasks_at_budget"] == {} and convergence_finding(stats) is None
        else:
            assert stats["tasks_at_budget"] == {task.name: 3 for task in tasks}
            assert list(stats["tasks_at_budget"]) == [task.name for task in tasks]
            assert stats["frozen_at_budget"] == ["task 0, part", "task 1, part"]   # the watched task has none
            assert convergence_finding(stats).startswith("9 of 9 linear-probe fits stopped at the step budget")
    f = features_at(1)("k", "train")
    labels = torch.stack([task.train_labels for task in tasks])
    acc = {}
    for steps in (2, 3000, 6000):
        probes, info = fit_linear_tasks(f, labels, steps=steps)
        acc[steps] = [p.logits(f) for p in probes]
    for k in range(3):
        assert not torch.allclose(acc[2][k], acc[3000][k], atol=1e-3)          # stopped at the budget: it moves
        torch.testing.assert_close(acc[3000][k], acc[6000][k], rtol=0, atol=0)   # converged: it stays
    no_linear = ProbeAccuracy(probes=("ncc",))(Row(0, tasks, features_at(0), experiences=2))
    assert not [r for r in no_linear if r["metric"] == "probe_converged"] and probe_convergence(no_linear) is None


def test_the_convergence_sentence_names_a_few_tasks_in_their_order():
    from dncsim.analysis.metrics.probe_accuracy import convergence_finding
    stats = {"fits": 40, "at_budget": 9, "tasks_at_budget": {f"t{k}": 1 for k in (3, 10, 1, 7, 2, 8, 9, 4, 5)}}
    text = convergence_finding(stats)
    assert "9 of 40 linear-probe fits" in text and "in 9 task(s) (t3, t10, t1, t7, t2, t8 and 3 more)" in text


def test_solves_at_the_budget_are_counted_in_task_order():
    from dncsim.analysis.metrics.probe_accuracy import probe_convergence
    from dncsim.analysis.names import ProbeKey, table_row
    key = ProbeKey("linear", "refit")
    rows = [table_row(-1, "probe_converged", 0.0, task=2, task_name="c", key=key),
            table_row(-1, "probe_converged", 1.0, task=0, task_name="a", key=key),
            table_row(0, "probe_converged", 0.0, task=0, task_name="a", key=key),
            table_row(1, "probe_converged", 0.0, task=2, task_name="c", key=key),
            table_row(1, "acc", 0.5, task=1, task_name="b", key=key)]
    stats = probe_convergence(rows, learned_at=[0, 1, 1])
    assert list(stats["tasks_at_budget"].items()) == [("a", 1), ("c", 2)]
    assert (stats["fits"], stats["at_budget"], stats["frozen_at_budget"]) == (4, 3, ["a", "c"])


def test_every_pair_on_the_same_samples_is_tested_against_the_permutation_null_at_every_row():
    """axis_cos_null_* and axis_beyond_null: ``permutation_null_tasks`` on the row's geometry features, seeded
    from the run seed and the row; its observed median is the row's axis_cos_median; ``null_draws: 0`` is off."""
    from dncsim.analysis.metrics.axis_orthogonality import AxisOrthogonality
    from dncsim.analysis.orthogonality import permutation_null_tasks

    tasks = make_tasks()
    metric = AxisOrthogonality.from_config(EvaluationConfig(), AnalysisConfig(null_draws=30), seed=4)
    for t in (-1, 0, 1):
        rows = metric(Row(t, tasks, features_at(t)))
        by = {(r["metric"], r["task"], r["task_b"]): r["value"] for r in rows}
        labels = torch.stack([task.test_labels for task in tasks])
        ref = permutation_null_tasks(features_at(t)(0, "test"), labels, draws=30,
                                     seed=4 * 1_000_003 + (t + 1) * 1009 + 500_009)
        for a, b in ((0, 1), (0, 2), (1, 2)):
            assert by[("axis_cos_null_median", a, b)] == pytest.approx(float(ref["null_median_abs_cos"][a, b]))
            assert by[("axis_cos_null_q05", a, b)] == pytest.approx(float(ref["null_q05"][a, b]))
            assert by[("axis_cos_null_p", a, b)] == pytest.approx(float(ref["null_p"][a, b]))
            assert by[("axis_beyond_null", a, b)] == float(ref["beyond_null"][a, b])
            assert by[("axis_cos_median", a, b)] == pytest.approx(float(ref["median_abs_cos"][a, b]), rel=1e-9)
    off = AxisOrthogonality.from_config(EvaluationConfig(), AnalysisConfig(null_draws=0), seed=4)
    assert not [r for r in off(Row(0, tasks, features_at(0))) if "null" in r["metric"]]
    assert AnalysisConfig().null_draws == 200


def test_axis_overlap_pre_fixes_the_earlier_axes_and_measures_before_the_later_task_trains():
    """axis_cos_pre (a, b) sits at the row before b's experience: a's axes from the row a was learned
    against b's axes in that row's features; its state (a's geometry) survives a checkpoint."""
    from dncsim.analysis.medians import true_median
    from dncsim.analysis.metrics.axis_overlap_pre import AxisOverlapPre
    from dncsim.analysis.orthogonality import cross_task_cosines
    tasks = [EvaluationTask(index=t.index, name=t.name, train_labels=t.train_labels, test_labels=t.test_labels,
                            group=t.group, learned_at=t.index) for t in make_tasks()]     # learned at 0, 1, 2
    metric, rows = AxisOverlapPre(), {}
    for t in (-1, 0, 1, 2):
        for r in metric(Row(t, tasks, features_at(t))):
            rows[(r["exp"], r["task"], r["task_b"])] = r["value"]
    assert sorted(rows) == [(0, 0, 1), (1, 0, 2), (1, 1, 2)]

    def geom(t, k):
        return class_geometry(features_at(t)(k, "test"), tasks[k].test_labels)

    def med(ga, gb):
        return float(true_median(cross_task_cosines(ga, gb).flatten()))
    assert rows[(0, 0, 1)] == pytest.approx(med(geom(0, 0), geom(0, 1)), abs=1e-12)
    assert rows[(1, 0, 2)] == pytest.approx(med(geom(0, 0), geom(1, 2)), abs=1e-12)   # task 0 fixed at row 0
    assert rows[(1, 1, 2)] == pytest.approx(med(geom(1, 1), geom(1, 2)), abs=1e-12)
    assert rows[(1, 0, 2)] != pytest.approx(med(geom(1, 0), geom(1, 2)), abs=1e-6)    # not the current axes
    buf = io.BytesIO()
    torch.save(pack_state(metric.state_dict()), buf)
    buf.seek(0)
    restored = AxisOverlapPre()
    restored.load_state_dict(unpack_state(torch.load(buf, weights_only=True)))
    assert sorted(restored.learned) == [0, 1, 2]
    again = {(r["task"], r["task_b"]): r["value"] for r in restored(Row(1, tasks, features_at(1)))}
    assert again == {(0, 2): rows[(1, 0, 2)], (1, 2): rows[(1, 1, 2)]}
