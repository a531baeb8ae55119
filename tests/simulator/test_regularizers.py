"""objective.regularizers: the directional-variance penalty in a run -- validation, the labelled
fraction, the weight-0 control, resume, and the dose response it exists for."""
import json

import numpy as np
import pytest
import torch
import yaml
from avalanche.core import SupervisedPlugin

from dncsim.rundir import load_geometry, load_run
from dncsim.simulator.cli import main
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.regularizers import labelled_mask
from dncsim.simulator.run import run

SOURCE = {"name": "shapes", "image_size": 16, "train_repeats": 4, "probe_repeats": 2, "test_repeats": 2}


def config(weight=None, objective="simclr", fraction=1.0, epochs=2, seed=0, **extra):
    obj = {"name": objective}
    if weight is not None:
        obj["regularizers"] = [{"name": "dir_variance", "weight": weight, "labelled_fraction": fraction}]
    return {"seed": seed, "scenario": {"source": SOURCE, "stream": {"type": "factor", "attributes": ["color", "size"]}},
            "objective": obj, "backbone": {"name": "convnet", "width": 8, "feature_dim": 32},
            "training": {"epochs": epochs, "batch_size": 64}, "evaluation": {"linear_steps": 20},
            "analysis": {"shots": [1], "episodes": 4},
            "output": {"report": False, "tensorboard": False, "checkpoints": False}, "threads": 1, **extra}


def assert_refused_in_one_line(cfg, tmp_path, capsys, message):
    """``dncsim run`` on ``cfg`` exits 2 with one line naming ``message`` and creates no run directory."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("objective,reg,message", [
    ("simclr", {"name": "dir_variance", "weight": -0.5},
     "objective.regularizers[0].weight: must be a finite number >= 0"),
    ("supervised", {"name": "dir_variance", "weight": 1, "labelled_fraction": 0.5},
     "a supervised objective reads every label, so labelled_fraction must be 1; got 0.5"),
    ("simclr", {"name": "dir_variance", "weight": 1, "labelled_fraction": 0},
     "objective.regularizers[0].labelled_fraction: input should be greater than 0"),
    ("simclr", {"name": "dir_variance"}, "objective.regularizers[0].weight: required key is missing"),
    ("none", {"name": "dir_variance", "weight": 1}, "objective: unknown key 'regularizers'; accepted keys: name"),
])
def test_bad_regularizers_are_one_line_exit_2(tmp_path, capsys, objective, reg, message):
    cfg = config(objective=objective)
    cfg["objective"]["regularizers"] = [reg]
    assert_refused_in_one_line(cfg, tmp_path, capsys, message)


def test_a_regularizer_appears_once():
    cfg = config(1.0)
    cfg["objective"]["regularizers"] *= 2
    with pytest.raises(Exception, match="each regularizer may appear once"):
        run_from_mapping(cfg)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
def test_the_labelled_subset_is_stratified_seeded_and_exact(fraction):
    y = torch.arange(4).repeat_interleave(40)[torch.randperm(160, generator=torch.Generator().manual_seed(0))]
    state = torch.get_rng_state()
    mask = labelled_mask(y, fraction, seed=7)
    assert torch.equal(torch.get_rng_state(), state)                    # the global RNG is untouched
    assert torch.equal(mask, labelled_mask(y, fraction, seed=7))
    assert [int(mask[y == c].sum()) for c in range(4)] == [max(2, round(fraction * 40))] * 4
    if fraction < 1:
        assert not torch.equal(mask, labelled_mask(y, fraction, seed=8))


def test_weight_zero_is_bit_identical_to_no_regularizer_and_a_label_free_run_hides_labels(tmp_path):
    plain = run(run_from_mapping(config()), tmp_path / "plain", quiet=True)
    zero = run(run_from_mapping(config(0.0, fraction=0.1)), tmp_path / "zero", quiet=True)
    assert (plain / "metrics.csv").read_bytes() == (zero / "metrics.csv").read_bytes()
    from dncsim.scenarios import build_scenario
    from dncsim.simulator.build import ExperienceTensors
    sc = build_scenario(run_from_mapping(config(3.0, fraction=0.25)).scenario)
    for k in range(2):
        x, y, t = ExperienceTensors(sc, labelled_fraction=0.25, seed=0)(k)
        full = sc.experience_data(k, "train")[1]
        assert torch.equal(y[y >= 0], full[y >= 0]) and set(y[y < 0].tolist()) <= {-1}
        assert int((y >= 0).sum()) == sum(max(2, round(0.25 * int(n))) for n in torch.bincount(full))
        assert torch.equal(y, ExperienceTensors(sc, labelled_fraction=0.25, seed=0)(k)[1])


def _dir_and_orth(out):
    """Task 0 right after its experience: directional CDNV (the run's estimator) and, from the stored
    plug-in geometry, the mean over ordered pairs of the within-class variance along the axis and
    orthogonal to it (v_i - Vtilde_ij d2_ij), both raw and over d2_ij."""
    r = load_run(out)
    g = load_geometry(out / "geometry" / "row_001.npz")[0]
    var, d2, dc = g.var.double(), g.d2.double(), g.dir_cdnv.double()
    off = ~torch.eye(len(var), dtype=torch.bool)
    orth = var[:, None] - dc * d2
    return {"dir": r.value("dir_cdnv", 0, 0), "along": float((dc * d2)[off].mean()), "orth": float(orth[off].mean()),
            "orth_cdnv": float((orth / d2)[off].mean())}


@pytest.mark.slow
def test_directional_cdnv_falls_monotonically_with_the_weight_while_the_orthogonal_variance_does_not(tmp_path):
    """Dose response (docs: Guide, Objectives). Two seeds averaged per weight, SimCLR, every label known."""
    res = {}
    for w in (0, 0.3, 3, 30):
        per_seed = [_dir_and_orth(run(run_from_mapping(config(w, epochs=3, seed=s)), tmp_path / f"w{w}_{s}",
                                      quiet=True)) for s in (0, 1)]
        res[w] = {k: float(np.mean([p[k] for p in per_seed])) for k in per_seed[0]}
    dirs = [res[w]["dir"] for w in (0, 0.3, 3, 30)]
    assert all(a > b for a, b in zip(dirs, dirs[1:])), dirs
    fall_dir = res[30]["dir"] / res[0]["dir"]
    assert fall_dir < 0.75, res
    # the variance orthogonal to the axes is not what the penalty pushes down: it does not fall
    assert res[30]["orth"] / res[0]["orth"] > 0.9, res
    assert res[30]["along"] / res[0]["along"] < res[30]["orth"] / res[0]["orth"], res


def test_quickstart_style_run_with_a_tenth_of_the_labels_lowers_the_first_tasks_dir_cdnv_and_resumes(tmp_path):
    base = config(0.0, epochs=2)
    reg = config(3.0, fraction=0.1, epochs=2)
    reg["output"]["checkpoints"] = True
    a = _dir_and_orth(run(run_from_mapping(base), tmp_path / "w0", quiet=True))["dir"]
    out = run(run_from_mapping(reg), tmp_path / "w3", quiet=True)
    b = _dir_and_orth(out)["dir"]
    assert b < a
    # interrupted after experience 0, then resumed: the same files as the uninterrupted run
    class Stop(SupervisedPlugin):
        def before_training_exp(self, strategy, **kwargs):
            if strategy.experience.current_experience == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(run_from_mapping(reg), tmp_path / "again", quiet=True, plugins=[Stop()])
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["experiences_done"] == 1
    run(run_from_mapping(reg), tmp_path / "again", quiet=True, resume=True)
    for f in ("metrics.csv", "accuracy.json"):
        assert (tmp_path / "again" / f).read_bytes() == (out / f).read_bytes(), f


# --- axis_distill ------------------------------------------------------------------------------------

def test_axis_penalty_is_free_orthogonal_to_the_axes_and_matches_distill_over_a_full_basis():
    from dncsim.simulator.plugins import AxisDistillation
    g = torch.Generator().manual_seed(0)
    d = 16
    plugin = AxisDistillation(1.0, lambda k: [])
    old = torch.randn(64, d, generator=g, dtype=torch.float64)
    plugin.axes = torch.eye(d, dtype=torch.float64)[:3]
    orth = old.clone()
    orth[:, 3:] += torch.randn(64, d - 3, generator=g, dtype=torch.float64)
    assert float(plugin.penalty(orth, old)) == 0.0
    along = old.clone()
    along[:, 0] += 0.1
    assert float(plugin.penalty(along, old)) == pytest.approx(0.5 * d * (0.01 / 3) / float(old.square().sum(1).mean()))
    # every direction stored: the penalty is distill's mean(1 - cos) for a small rotation at fixed norm
    plugin.axes = torch.eye(d, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.eye(d, dtype=torch.float64) + 0.01 * torch.randn(d, d, generator=g,
                                                                                  dtype=torch.float64))
    unit = old / old.norm(dim=1, keepdim=True)
    moved = unit @ q
    cos = torch.nn.functional.cosine_similarity(moved, unit, dim=1)
    assert float(plugin.penalty(moved, unit)) == pytest.approx(float((1 - cos).mean()), rel=1e-3)


def test_unit_axes_are_the_normalised_mean_differences_in_pair_order():
    from dncsim.simulator.plugins import unit_axes
    net = torch.nn.Identity()
    net.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))      # a device to find
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    axes = unit_axes(net, x, y)
    s = 1 / 13 ** 0.5
    assert torch.allclose(axes, torch.tensor([[1.0, 0.0], [0.0, 1.0], [-2 * s, 3 * s]]))


def test_axis_distill_state_survives_an_interruption_and_the_run_is_deterministic(tmp_path):
    cfg = config(epochs=2)
    cfg["strategy"] = {"name": "axis_distill", "weight": 5.0}
    cfg["output"]["checkpoints"] = True
    whole = run(run_from_mapping(cfg), tmp_path / "whole", quiet=True)
    again = run(run_from_mapping(cfg), tmp_path / "again", quiet=True)
    assert (whole / "metrics.csv").read_bytes() == (again / "metrics.csv").read_bytes()
    naive = run(run_from_mapping(config(epochs=2)), tmp_path / "naive", quiet=True)
    assert (whole / "metrics.csv").read_bytes() != (naive / "metrics.csv").read_bytes()   # it does something

    class Stop(SupervisedPlugin):
        def before_training_exp(self, strategy, **kwargs):
            if strategy.experience.current_experience == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(run_from_mapping(cfg), tmp_path / "cut", quiet=True, plugins=[Stop()])
    run(run_from_mapping(cfg), tmp_path / "cut", quiet=True, resume=True)
    for f in ("metrics.csv", "accuracy.json"):
        assert (tmp_path / "cut" / f).read_bytes() == (whole / f).read_bytes(), f


# --- orth_variance, doses, placebo ---------------------------------------------------------------------

@pytest.mark.parametrize("reg,message", [
    ({"name": "dir_variance", "weight": 3, "doses": {"size": 5}},
     "objective.regularizers[0].doses: doses replaces weight, so weight must be 0 (or left out); got weight 3"),
    ({"name": "orth_variance", "doses": {"size": -1}},
     "objective.regularizers[0].doses: the dose of task 'size' must be a finite number >= 0; got -1"),
    ({"name": "orth_variance", "doses": {"size": float("inf")}},
     "objective.regularizers[0].doses.size: input should be a finite number"),
    ({"name": "orth_variance", "doses": {"sise": 5}},
     "objective.regularizers[0].doses: 'sise' is not a task taught by this stream (tasks: color, size)"),
    ({"name": "orth_variance", "weight": 1, "placebo": "yes"},
     "objective.regularizers[0].placebo: input should be a valid boolean"),
    ({"name": "orth_variance", "weight": -1}, "objective.regularizers[0].weight: must be a finite number >= 0"),
])
def test_bad_doses_and_placebo_are_one_line_exit_2(tmp_path, capsys, reg, message):
    cfg = config()
    cfg["objective"]["regularizers"] = [reg]
    assert_refused_in_one_line(cfg, tmp_path, capsys, message)


def test_doses_schedule_the_weight_per_experience():
    from dncsim.simulator.regularizers import build_regularizers, experience_weights
    cfg = run_from_mapping(config()).objective.model_copy(update={"regularizers": []})
    spec = run_from_mapping(config(objective="simclr") | {"objective": {
        "name": "simclr", "regularizers": [{"name": "orth_variance", "doses": {"size": 5, "style": 0}}]}}
    ).objective.regularizers[0]
    assert spec.weight == 0 and spec.active and spec.dose("size") == 5 and spec.dose("color") == 0
    learned = [["color"], ["size"], ["shape"], ["style"]]
    assert experience_weights(spec, learned) == [0, 5, 0, 0]
    assert experience_weights(spec.model_copy(update={"doses": None, "weight": 2.0}), learned) == [2.0] * 4
    with pytest.raises(Exception, match="experience 0 teaches a, size, which have different doses"):
        experience_weights(spec.model_copy(update={"doses": {"a": 1.0, "size": 5.0}}), [["a", "size"]])
    # all doses 0: the control, nothing installed and no label hidden
    zero = spec.model_copy(update={"doses": {"size": 0.0}})
    assert not zero.active and build_regularizers(cfg.model_copy(update={"regularizers": [zero]}), learned) == []
    from dncsim.simulator.regularizers import labelled_fraction
    assert labelled_fraction(cfg.model_copy(update={"regularizers": [
        zero.model_copy(update={"labelled_fraction": 0.1})]})) == 1.0
    assert labelled_fraction(cfg.model_copy(update={"regularizers": [
        spec.model_copy(update={"labelled_fraction": 0.1})]})) == 0.1


class _Fake:
    """The parts of a strategy that a penalty plugin reads."""

    def __init__(self, k, x, y):
        self.backbone = torch.nn.Linear(x.shape[1], 4, bias=False)
        with torch.no_grad():
            self.backbone.weight.copy_(torch.eye(4, x.shape[1]))
        self.experience = type("E", (), {"current_experience": k, "task_labels": [0]})()
        self.mb_x, self.mb_y, self.mb_task_id, self.mb_views = x, y, torch.zeros_like(y), None
        self.loss = torch.zeros(())


def _step(plugin, k, x, y):
    s = _Fake(k, x, y)
    plugin.before_training_exp(s)
    plugin.before_forward(s)
    s.backbone(s.mb_x)
    plugin.after_forward(s)
    plugin.before_backward(s)
    return float(s.loss.detach())


@pytest.mark.parametrize("name", ["dir_variance", "orth_variance"])
def test_a_scheduled_dose_applies_only_in_its_tasks_experience(name):
    from dncsim.simulator.regularizers import penalty_plugin
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(8)
    x = torch.randn(24, 6, generator=g) + 2 * torch.randn(3, 6, generator=g)[y]
    plugin = penalty_plugin(name, [0.0, 5.0, 0.0])
    expected = 5.0 * float(plugin.penalty(x[:, :4], y))
    assert expected > 0
    if name == "orth_variance":      # the matched normalisation: (d - r) / r = (6 - 2) / 2 the per-dimension value
        from dncsim.analysis.penalties import orthogonal_variance_penalty
        assert float(plugin.penalty(x, y)) == pytest.approx(2 * float(orthogonal_variance_penalty(x, y)), rel=1e-6)
    assert [_step(plugin, k, x, y) for k in range(3)] == [0.0, pytest.approx(expected, rel=1e-6), 0.0]


def test_placebo_permutes_labels_within_the_batch_keeping_class_sizes_seeded():
    from dncsim.simulator.regularizers import penalty_plugin, permute_labelled
    y = torch.tensor([0, 0, 0, 1, 1, -1, 2, 2, 2, 2, -1, 1])
    state = torch.get_rng_state()
    a = permute_labelled(y, 3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, permute_labelled(y, 3)) and not torch.equal(a, y)
    assert not torch.equal(a, permute_labelled(y, 4))
    assert torch.equal(a == -1, y == -1) and torch.equal(torch.bincount(a[a >= 0]), torch.bincount(y[y >= 0]))
    # in a run: the permutation changes per batch and is the same on a second run with the same seed
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat_interleave(20)
    x = torch.randn(40, 6, generator=g) * 0.3
    x[:, 0] += 4 * y
    real = penalty_plugin("orth_variance", [1.0])
    seen = []
    for _ in range(2):
        placebo = penalty_plugin("orth_variance", [1.0], placebo_seed=11)
        seen.append([_step(placebo, 0, x, y)] + [_step_same_exp(placebo, x, y) for _ in range(2)])
    assert seen[0] == seen[1] and len(set(seen[0])) == 3
    # no class structure: the permuted classes' means nearly coincide, so the penalty is far larger
    assert min(seen[0]) > 20 * _step(real, 0, x, y)


def _step_same_exp(plugin, x, y):
    """One more batch in the current experience (no before_training_exp)."""
    s = _Fake(0, x, y)
    plugin.before_forward(s)
    s.backbone(s.mb_x)
    plugin.after_forward(s)
    plugin.before_backward(s)
    return float(s.loss.detach())


def _two_experience(tmp_path, name, regs):
    cfg = config(epochs=1)
    cfg["objective"]["regularizers"] = regs
    return (run(run_from_mapping(cfg), tmp_path / name, quiet=True) / "metrics.csv").read_text().splitlines()


def test_a_dose_on_size_leaves_colors_experience_as_in_the_control_and_changes_sizes(tmp_path):
    plain = _two_experience(tmp_path, "plain", [])
    reg = {"name": "orth_variance", "labelled_fraction": 0.5}
    zero = _two_experience(tmp_path, "zero", [reg | {"doses": {"size": 0}}])
    dosed = _two_experience(tmp_path, "dosed", [reg | {"doses": {"size": 5}}])
    assert zero == plain
    upto0 = [ln for ln in plain if not ln.startswith("1,")]
    assert [ln for ln in dosed if not ln.startswith("1,")] == upto0 and len(upto0) > 50
    assert [ln for ln in dosed if ln.startswith("1,")] != [ln for ln in plain if ln.startswith("1,")]


def test_the_recorded_config_names_doses_and_placebo_only_when_set_and_reads_back():
    plain = run_from_mapping(config(3.0)).model_dump(mode="json")["objective"]["regularizers"]
    assert plain == [{"name": "dir_variance", "weight": 3.0, "labelled_fraction": 1.0}]
    assert list(plain[0]) == ["name", "weight", "labelled_fraction"]          # config.yaml as before
    cfg = config()
    cfg["objective"]["regularizers"] = [{"name": "orth_variance", "doses": {"size": 5}, "placebo": True}]
    dumped = run_from_mapping(cfg).model_dump(mode="json")
    assert dumped["objective"]["regularizers"] == [{"name": "orth_variance", "weight": 0.0, "labelled_fraction": 1.0,
                                                    "doses": {"size": 5.0}, "placebo": True}]
    assert run_from_mapping(dumped).model_dump(mode="json") == dumped
