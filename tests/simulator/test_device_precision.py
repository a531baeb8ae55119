"""The GPU path on any machine: the device, precision, compile and determinism keys (validated, one-line
errors), bf16 training on the CPU (deterministic, resumable, never leaking into the analysis's dtypes),
fp16's gradient scaler through the checkpoint, the per-iteration callback dispatch, and -- on a machine
with CUDA only -- data, augmentation and evaluation on the device. Nothing here compares floats across
machines: every equality is between two runs on this one."""
import json

import numpy as np
import pytest
import torch
import yaml

import dncsim.simulator.build as build_module
from dncsim.common import DncsimError
from dncsim.scenarios import build_scenario
from dncsim.simulator.build import build_run, build_strategy, resolve_device
from dncsim.simulator.cli import main
from dncsim.simulator.config import load_run_config, run_from_mapping
from dncsim.simulator.devices import on_device
from dncsim.analysis.probes import fit_ncc
from dncsim.analysis.metrics.base import pack_state, unpack_state
from dncsim.simulator.run import run
from dncsim.simulator.template import ITERATION_EVENTS, EvaluationPlugin, SupervisedPlugin, iteration_hooks
from tests.support.cli import dncsim as dncsim_fresh
from tests.support.reliability import TINY as RELIABILITY_TINY
from tests.support.reliability import StopAt, same_results

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY = {**RELIABILITY_TINY, "threads": 1}           # the reliability tests' tiny run, on one thread



def tiny(device="cpu", **training):
    return run_from_mapping({**TINY, "device": device, "training": {**TINY["training"], **training}})


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


# --- the config keys ------------------------------------------------------------------------------------

def test_the_new_keys_default_to_the_old_behaviour_and_set_works(config_file):
    training = load_run_config(config_file).training
    assert (training.precision, training.compile, training.deterministic) == ("fp32", False, True)
    cfg = load_run_config(config_file, ["training.precision=bf16", "training.compile=true",
                                        "training.deterministic=false"])
    assert (cfg.training.precision, cfg.training.compile, cfg.training.deterministic) == ("bf16", True, False)
    for name in ("precision", "compile", "deterministic"):
        assert type(training).model_fields[name].description, name


@pytest.mark.parametrize("override,message", [
    ("training.precision=fp8", "training.precision: 'fp8' is not one of fp32, bf16, fp16"),
    ("training.precision=bf61", "(did you mean 'bf16'?)"),
    ("training.compile=maybe", "training.compile: input should be a valid boolean"),
    ("training.deterministic=sometimes", "training.deterministic: input should be a valid boolean"),
    ("training.precison=bf16", "training: unknown key 'precison' (did you mean 'precision'?)"),
    ("training.precision=fp16", "training.precision: 'fp16' needs a CUDA device"),       # device: cpu in TINY
])
def test_a_bad_value_is_one_line_naming_the_field_exit_2(config_file, tmp_path, capsys, override, message):
    out = tmp_path / "never"
    assert main(["run", str(config_file), "--out", str(out), "--set", override]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not out.exists()


def test_the_error_comes_before_torch_is_imported(config_file):
    status, out, err, imported = dncsim_fresh("run", config_file, "--set", "training.precision=half",
                                              cwd=config_file.parent)
    assert status == 2 and len(err.splitlines()) == 1 and "training.precision: 'half' is not one of" in err
    assert imported == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="device auto resolves to CUDA here")
def test_fp16_with_device_auto_on_a_cpu_machine_is_one_line(config_file, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", str(config_file), "--out", str(out), "--set", "device=auto",
                 "--set", "training.precision=fp16"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "training.precision: 'fp16' needs a CUDA device" in err
    assert "device resolved to 'cpu'" in err and not out.exists()


def test_compile_without_a_compiler_is_one_line(config_file, tmp_path, capsys, monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def missing():
        raise RuntimeError("no C++ compiler found (tried g++, clang++)\nmore lines")
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    out = tmp_path / "never"
    assert main(["run", str(config_file), "--out", str(out), "--set", "training.compile=true"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "training.compile: torch.compile cannot work on this machine (no C++ compiler found" in err
    assert "set training.compile: false" in err and not out.exists()


# --- bf16 on the CPU --------------------------------------------------------------------------------------

class Dtypes(SupervisedPlugin):
    """The dtypes a training step's backbone produced and the loss had (forward hook on the backbone)."""

    def __init__(self):
        super().__init__()
        self.features, self.loss, self._hook = set(), set(), None

    def before_forward(self, strategy, **kw):
        self._hook = strategy.backbone.register_forward_hook(lambda m, i, o: self.features.add(o.dtype))

    def after_forward(self, strategy, **kw):
        self._hook.remove()

    def before_backward(self, strategy, **kw):
        self.loss.add(strategy.loss.dtype)


def test_bf16_trains_on_the_cpu_under_autocast():
    cfg = tiny(precision="bf16", epochs=3)
    sc = build_scenario(cfg.scenario)
    probe = Dtypes()
    s = build_strategy(cfg, sc, resolve_device("cpu"), extra_plugins=[probe])
    before = [p.detach().clone() for p in s.backbone.parameters()]
    s.train(next(iter(sc.benchmark.train_stream)))
    assert probe.features == {torch.bfloat16} and probe.loss == {torch.float32}
    assert all(p.dtype == torch.float32 for p in s.model.parameters())          # weights stay fp32
    assert all(torch.isfinite(p).all() for p in s.model.parameters())
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, s.backbone.parameters()))


def test_bf16_on_the_cpu_is_deterministic_and_differs_from_fp32(tmp_path):
    a = run(tiny(precision="bf16"), tmp_path / "a", quiet=True)
    b = run(tiny(precision="bf16"), tmp_path / "b", quiet=True)
    same_results(a, b)
    c = run(tiny(), tmp_path / "fp32", quiet=True)
    assert (a / "metrics.jsonl").read_bytes() != (c / "metrics.jsonl").read_bytes()    # autocast did something


def test_bf16_killed_and_resumed_gives_the_uninterrupted_results(tmp_path):
    whole = run(tiny(precision="bf16"), tmp_path / "whole", quiet=True)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run(tiny(precision="bf16"), cut, quiet=True, plugins=[StopAt(2)])
    assert json.loads((cut / "manifest.json").read_text())["experiences_done"] == 2
    run(tiny(precision="bf16"), cut, quiet=True)
    same_results(cut, whole)


def test_precision_never_reaches_the_analysis(tmp_path):
    """After bf16 training the evaluation's features are float32 and the geometry files float64."""
    cfg = tiny(precision="bf16")
    parts = build_run(cfg, None)
    parts.strategy.train(next(iter(parts.scenario.benchmark.train_stream)), eval_streams=[])
    feats = parts.evaluation.features(0, "test")
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()
    result = parts.evaluation.pending[-1]              # row 0, measured after the bf16 experience
    assert result.t == 0 and all(g.means.dtype == torch.float64 for g in result.geometries.values())
    out = run(cfg, tmp_path / "run", quiet=True)
    with np.load(out / "geometry" / "row_001.npz") as z:
        assert z["task0/means"].dtype == np.float64 and z["task0/dir_cdnv"].dtype == np.float64


# --- fp16's gradient scaler (exercised on the CPU, where the config refuses fp16 for its speed) ------------

@pytest.fixture
def fp16_on_cpu(monkeypatch):
    monkeypatch.setattr(build_module, "check_precision", lambda precision, device: None)

    def config():
        cfg = tiny()
        cfg.training.precision = "fp16"          # past the config's check, which needs CUDA for fp16
        return cfg
    return config


def test_the_gradient_scaler_goes_through_the_checkpoint(tmp_path, fp16_on_cpu):
    whole = run(fp16_on_cpu(), tmp_path / "whole", quiet=True)
    state = torch.load(whole / "checkpoint.pt", weights_only=True)["precision"]
    assert set(state) >= {"scale", "_growth_tracker"} and state["scale"] > 0
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run(fp16_on_cpu(), cut, quiet=True, plugins=[StopAt(2)])
    run(fp16_on_cpu(), cut, quiet=True)
    same_results(cut, whole)
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["precision"] == state
    assert torch.load(run(tiny(), tmp_path / "fp32", quiet=True) / "checkpoint.pt",
                      weights_only=True)["precision"] is None


# --- the loop's callbacks -----------------------------------------------------------------------------------

class Counts(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.n = 0

    def after_forward(self, strategy, **kw):
        self.n += 1


def test_iteration_callbacks_reach_exactly_the_plugins_that_implement_them():
    from avalanche.evaluation import PluginMetric

    class Quiet(PluginMetric):
        def reset(self):
            pass

        def result(self):
            return None

    class Listening(Quiet):
        def after_training_iteration(self, strategy):
            return None

    counts, guard = Counts(), SupervisedPlugin()
    quiet, listening = EvaluationPlugin(Quiet(), loggers=[]), EvaluationPlugin(Listening(), loggers=[])
    hooks = iteration_hooks([guard, counts, quiet, listening])
    assert set(hooks) == set(ITERATION_EVENTS)
    assert hooks["after_forward"] == [counts.after_forward]
    assert len(hooks["after_training_iteration"]) == 1          # the evaluation plugin whose metric listens
    assert all(hooks[e] == [] for e in ITERATION_EVENTS if e not in ("after_forward", "after_training_iteration"))
    # in a strategy: every iteration reaches the plugin once
    cfg = tiny(epochs=2)
    sc = build_scenario(cfg.scenario)
    s = build_strategy(cfg, sc, resolve_device("cpu"), extra_plugins=[counts])
    s.train(next(iter(sc.benchmark.train_stream)))
    batches = len(s.experience_tensors(0)[1]) // cfg.training.batch_size
    assert batches > 1 and counts.n == 2 * batches == s.clock.train_exp_iterations


# --- placement ------------------------------------------------------------------------------------------

def test_placement_helpers_on_the_cpu_copy_nothing():
    x = torch.arange(6.0)
    assert on_device(x, torch.device("cpu")) is x
    g = torch.Generator().manual_seed(0)
    packed = {"rows": [1.0], "acc": torch.zeros(2),
              "p": pack_state(fit_ncc(torch.randn(12, 3, generator=g), torch.arange(3).repeat(4)))}
    on_cpu = unpack_state(packed, torch.device("cpu"))
    assert on_cpu["p"].means.device.type == "cpu" and torch.equal(on_cpu["p"].means, packed["p"]["arrays"]["means"])
    moved = unpack_state(packed, torch.device("meta"))       # where a CUDA run puts what features gave
    assert moved["p"].means.device.type == "meta" and moved["p"].classes.device.type == "meta"
    assert moved["acc"].device.type == "cpu" and moved["rows"] == [1.0]    # the rest stays on the CPU


@pytest.mark.slow
def test_compile_trains_a_tiny_run_with_the_same_checkpoint_layout(tmp_path):
    """torch.compile works on this machine (a C++ compiler is here): a tiny run with a frozen teacher
    (distill deep-copies the compiled backbone) finishes, and the checkpoint keys are the eager ones."""
    cfg = run_from_mapping({**TINY, "strategy": {"name": "distill"}, "scenario": {
        **TINY["scenario"], "stream": {"type": "factor", "attributes": ["color", "style"]}},
        "training": {**TINY["training"], "compile": True}})
    out = run(cfg, tmp_path / "compiled", quiet=True)
    eager = run(cfg.model_copy(update={"training": cfg.training.model_copy(update={"compile": False})}),
                tmp_path / "eager", quiet=True)
    keys = list(torch.load(out / "checkpoint.pt", weights_only=True)["model"])
    assert keys == list(torch.load(eager / "checkpoint.pt", weights_only=True)["model"])
    assert not any("_orig_mod" in k for k in keys)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["value"] is None or np.isfinite(r["value"]) for r in rows)


# --- CUDA only ------------------------------------------------------------------------------------------

@CUDA
def test_cuda_data_augmentation_and_features_live_on_the_device():
    cfg = tiny(device="cuda")
    parts = build_run(cfg, None)
    s = parts.strategy
    x, y, t = s.experience_tensors(0)
    assert x.device.type == y.device.type == t.device.type == "cuda"
    assert s.augment(x[:4]).device.type == "cuda"
    s.train(next(iter(parts.scenario.benchmark.train_stream)), eval_streams=[])
    feats = parts.evaluation.features(0, "test")
    assert feats.device.type == "cuda" and feats.dtype == torch.float32
    assert all(v.device.type == "cuda" for v in parts.evaluation.features._inputs.values())


@CUDA
def test_cuda_deterministic_runs_are_identical_on_this_machine(tmp_path):
    import os
    a = run(tiny(device="cuda"), tmp_path / "a", quiet=True)
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (":4096:8", ":16:8")
    b = run(tiny(device="cuda"), tmp_path / "b", quiet=True)
    same_results(a, b)


@CUDA
def test_cuda_resume_is_identical_with_fp16(tmp_path):
    whole = run(tiny(device="cuda", precision="fp16"), tmp_path / "whole", quiet=True)
    assert torch.load(whole / "checkpoint.pt", weights_only=True)["rng"]["cuda"].numel() > 0
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run(tiny(device="cuda", precision="fp16"), cut, quiet=True, plugins=[StopAt(2)])
    run(tiny(device="cuda", precision="fp16"), cut, quiet=True)
    same_results(cut, whole)


@CUDA
@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()), reason="needs bf16 on CUDA")
def test_cuda_bf16_is_deterministic(tmp_path):
    a = run(tiny(device="cuda", precision="bf16"), tmp_path / "a", quiet=True)
    b = run(tiny(device="cuda", precision="bf16"), tmp_path / "b", quiet=True)
    same_results(a, b)


@CUDA
def test_cuda_nondeterministic_turns_the_autotuner_on():
    build_run(tiny(device="cuda", deterministic=False), None)
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    build_run(tiny(device="cuda"), None)
    assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()


def test_a_missing_cuda_device_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)      # as on a machine without CUDA
    with pytest.raises(DncsimError, match="device: 'cuda' requested but CUDA is not available"):
        build_run(tiny(device="cuda"), None)
