"""Configs and command-line values that once gave a traceback (issue 35): each is refused in one line on
stderr naming the key, file or flag and what is expected, with exit status 2, before anything is written.
Validation only: nothing trains."""
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import dncsim.simulator.run as run_module
from dncsim.common import MESSAGE_LIMIT, YAML_LIMITS, DncsimError, load_yaml_text, printable
from dncsim.simulator.cli import main
from dncsim.simulator.config import RunConfig, check_memory, memory_needed, run_from_mapping

ROOT = Path(__file__).resolve().parents[1]
QUICK = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """`dncsim run` validates, then records instead of training (a study's runs would call it)."""
    calls = []
    monkeypatch.setattr(run_module, "run", lambda cfg, out, **kw: calls.append(cfg) or Path(out))
    return calls


def refused(capsys, argv, *expected, out=None):
    """Run the CLI; assert exit 2, one line on stderr holding every ``expected`` text, no traceback,
    nothing at ``out``; returns the line."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:                     # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and err.startswith("dncsim ") and "Traceback" not in err, err
    for text in expected:
        assert text in err, (text, err)
    if out is not None:
        assert not Path(out).exists()
    return err.strip()


def run_refused(tmp_path, capsys, config, *expected, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, allow_unicode=True))
    out = tmp_path / "never"
    args = ["run", path, "--out", out]
    for o in overrides:
        args += ["--set", o]
    return refused(capsys, args, *expected, out=out)


def deep(n: int) -> str:
    return "[" * n + "]" * n


def laughs(levels: int, width: int = 10) -> str:
    """A YAML billion-laughs: ``width ** levels`` leaves through ``levels`` anchors of ``width`` aliases."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


# --- YAML depth, aliases, values, integers -------------------------------------------------------------------

def test_deep_nesting_in_a_config_file_is_one_line(tmp_path, capsys):
    run_refused(tmp_path, capsys, f"seed: 0\nbackbone: {{name: timm, model: resnet18, options: {{a: {deep(5000)}}}}}\n",
                "c.yaml: YAML nested deeper than 64 levels (line 2")


def test_deep_nesting_in_a_set_value_is_one_line(tmp_path, capsys):
    run_refused(tmp_path, capsys, QUICK, "--set backbone.options: YAML nested deeper than 64 levels",
                overrides=[f"backbone.options={{a: {deep(5000)}}}"])


def test_deep_nesting_in_a_study_base_and_in_a_study_read_by_stats(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(f"base: {{seed: {deep(3000)}}}\nfactors: {{seed: [0, 1]}}\nout: {tmp_path / 'never'}\n")
    refused(capsys, ["study", study], "s.yaml: YAML nested deeper than 64 levels", out=tmp_path / "never")
    d = tmp_path / "study"
    d.mkdir()
    (d / "tasks.csv").write_text("run,task_name\n")
    (d / "study.yaml").write_text(f"statistics: {deep(3000)}\n")
    refused(capsys, ["stats", d], "study.yaml: YAML nested deeper than 64 levels")


def test_an_integer_of_thousands_of_digits_is_one_line(tmp_path, capsys):
    run_refused(tmp_path, capsys, "seed: " + "9" * 5000 + "\n",
                "c.yaml: YAML has an integer of 5000 digits (at most 100)")
    run_refused(tmp_path, capsys, QUICK, "--set seed: YAML has an integer of 4400 digits",
                overrides=["seed=" + "7" * 4400])


def test_a_billion_laughs_through_a_free_mapping_is_refused_at_once(tmp_path, capsys):
    text = laughs(9) + "backbone: {name: timm, model: resnet18, options: {x: *l8}}\n"
    start = time.perf_counter()
    line = run_refused(tmp_path, capsys, text, "c.yaml: YAML has more than 100000 values (an alias counts as every "
                                               "value it repeats)")
    assert time.perf_counter() - start < 5 and len(line) < 300
    # what the limit counts: 10**4 leaves + 1111 lists pass, one level more (10**5 leaves) does not
    assert len(load_yaml_text(laughs(4), "x")["l3"]) == 10
    with pytest.raises(DncsimError, match="more than 100000 values"):
        load_yaml_text(laughs(5) + "top: [*l4, *l4]\n", "x")


def test_aliases_beyond_the_count_and_a_structure_that_contains_itself(tmp_path, capsys):
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * (YAML_LIMITS["aliases"] + 1)) + "]\n"
    run_refused(tmp_path, capsys, many, "c.yaml: YAML has more than 1000 aliases")
    run_refused(tmp_path, capsys, "seed: 0\nbackbone: {name: timm, model: resnet18, options: &o {self: *o}}\n",
                "c.yaml: YAML has an alias inside the node it names")


def test_a_value_that_does_not_fit_its_tag_is_one_line(tmp_path, capsys):
    run_refused(tmp_path, capsys, "seed: !!int abc\n", "c.yaml: a YAML value does not fit its tag (ValueError")
    run_refused(tmp_path, capsys, "seed: !!bool maybe\n", "c.yaml: a YAML value does not fit its tag")


def test_an_error_message_is_cut_to_its_limit_and_escapes_control_characters(tmp_path, capsys):
    line = run_refused(tmp_path, capsys, {**QUICK, "seed": "x" * 600_000}, "seed: input should be a valid integer",
                       "more characters)")
    assert len(line) < MESSAGE_LIMIT + 100
    # C1 controls (CSI \x9b), bidi overrides and ESC are shown escaped, never sent to the terminal
    line = run_refused(tmp_path, capsys, {**QUICK, "seed\x9b31m\u202e\x1b[2J": 0}, r"'seed\x9b31m\u202e\x1b[2J'")
    assert not any(c in line for c in "\x9b\u202e\x1b")
    assert printable("a\u2028b\x85c", None) == r"a\u2028b\x85c"


# --- seeds ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [("seed", 2 ** 32), ("seed", 2 ** 64), ("scenario.seed", 2 ** 32), ("seed", -1)])
def test_seeds_outside_32_bits_are_refused_in_the_schema(tmp_path, capsys, key, value):
    run_refused(tmp_path, capsys, QUICK, f"{key}: input should be", overrides=[f"{key}={value}"])


def test_a_study_over_seeds_outside_32_bits_is_refused_before_any_run(tmp_path, capsys, no_training):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"base": str(ROOT / "configs" / "quickstart.yaml"),
                                     "factors": {"seed": [0, 2 ** 32]}, "out": str(tmp_path / "never")}))
    refused(capsys, ["study", study], "study run 001-seed=4294967296: seed: input should be less than 4294967296",
            out=tmp_path / "never")
    assert no_training == []


@pytest.mark.parametrize("seed", [str(2 ** 32), str(2 ** 64), "-1", "1e3", "٣"])
def test_analyze_seed_outside_32_bits_is_a_usage_error(tmp_path, capsys, seed):
    np.savez(tmp_path / "f.npz", features=np.zeros((8, 2)), labels=np.arange(8) % 2)
    refused(capsys, ["analyze", tmp_path / "f.npz", "--seed", seed], "--seed: expected an integer in [0, 2**32)")


# --- --set list indices ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("index,shown", [("²", "'evaluation.probes' is a list of 2; '²' is not an index into it"),
                                         ("١", "'evaluation.probes' is a list of 2; '١' is not an index into it"),
                                         ("9" * 5000, "more characters)")])
def test_set_list_indices_are_ascii_digits(tmp_path, capsys, index, shown):
    run_refused(tmp_path, capsys, QUICK, f"--set evaluation.probes.{index[:10]}", shown,
                overrides=[f"evaluation.probes.{index}=ncc"])


# --- sizes ---------------------------------------------------------------------------------------------------

def test_sizes_beyond_the_machines_memory_are_refused_saying_what_they_need(tmp_path, capsys):
    run_refused(tmp_path, capsys, QUICK, "scenario.source.train_repeats: the run would need at least",
                "96000001920 images of 3x32x32 float32", "more than this machine's",
                overrides=["scenario.source.train_repeats=1000000000"])
    run_refused(tmp_path, capsys, QUICK, "backbone.width: the run would need at least", "parameters with their "
                "gradients", overrides=["backbone.width=100000000"])
    run_refused(tmp_path, capsys, QUICK, "threads: input should be less than or equal to 1024",
                overrides=["threads=100000"])


def test_the_memory_estimate_counts_the_images_and_the_parameters_torch_builds():
    import torch

    from dncsim.simulator.models import build_backbone
    cfg = run_from_mapping(QUICK)
    needed = {key: (b, what) for key, b, what in memory_needed(cfg)}
    images = 4 * 4 * 3 * 2 * (30 + 10 + 10)                 # shapes x colors x sizes x styles x repeats
    assert needed["scenario.source.train_repeats"] == (images * 3 * 32 * 32 * 4, f"{images} images of 3x32x32 float32")
    params = sum(p.numel() for p in build_backbone(cfg.backbone, (3, 32, 32)).parameters())
    heads = 128 * 256 + 256 * 64                            # SimCLR projection head's weights
    counted = needed["backbone.width"][0] // 8
    assert params <= counted <= params + heads + 256 + 64 and counted >= params + heads
    with pytest.raises(DncsimError, match=r"^scenario.source.train_repeats: the run would need at least 59.8 MiB"):
        check_memory(cfg, available=2 ** 20)
    check_memory(cfg, available=2 ** 30)
    del torch


# --- study grids and files -------------------------------------------------------------------------------------

def test_a_grid_of_a_million_runs_is_refused_at_once_with_its_size(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    factors = {f"training.k{i}": list(range(10)) for i in range(6)}
    study.write_text(yaml.safe_dump({"base": str(ROOT / "configs" / "quickstart.yaml"), "factors": factors,
                                     "out": str(tmp_path / "never")}))
    start = time.perf_counter()
    refused(capsys, ["study", study], "factors: the grid has 1000000 runs (10 x 10 x 10 x 10 x 10 x 10); at most "
                                      "100000", out=tmp_path / "never")
    assert time.perf_counter() - start < 5
    assert math.prod([10] * 6) == 1_000_000


def test_a_study_out_that_is_a_file_is_one_line_and_the_file_survives(tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("thesis\n")
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"base": str(ROOT / "configs" / "quickstart.yaml"), "factors": {"seed": [0]},
                                     "out": str(out)}))
    refused(capsys, ["study", study], f"out: {out} exists and is not a directory")
    assert out.read_text() == "thesis\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "s.yaml"]


def test_a_base_that_is_neither_a_file_name_nor_a_mapping_is_one_plain_line(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("base: 5\nfactors: {seed: [0]}\n")
    line = refused(capsys, ["study", study], "base: expected a run config file name or an inline run config mapping; "
                                             "got int 5")
    assert "lax-or-strict" not in line and "json-or-python" not in line


# --- finite floats and strict types --------------------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("training.lr=.inf", "training.lr: input should be a finite number (got inf)"),
    ("training.lr=.nan", "training.lr: input should be a finite number"),
    ("training.weight_decay=.inf", "training.weight_decay: input should be a finite number"),
    ("evaluation.linear_weight_decay=.inf", "evaluation.linear_weight_decay: input should be a finite number"),
    ("objective={name: vicreg, lambda_param: .inf}", "objective.lambda_param: input should be a finite number"),
    ("strategy={name: ewc, strength: .inf}", "strategy.strength: input should be a finite number"),
    ("objective.regularizers=[{name: dir_variance, weight: .nan}]", "objective.regularizers[0].weight: input should "
                                                                    "be a finite number"),
    ("training.epochs=true", "training.epochs: input should be a valid integer (got True)"),
    ("training.epochs=2.0", "training.epochs: input should be a valid integer (got 2.0)"),
    ("training.batch_size='128'", "training.batch_size: input should be a valid integer (got '128')"),
    ("training.compile=1", "training.compile: input should be a valid boolean (got 1)"),
    ("augment.flip='yes'", "augment.flip: input should be a valid boolean (got 'yes')"),
    ("training.lr=true", "training.lr: input should be a valid number (got True)"),
    ("backbone.hidden=[true]", "backbone.hidden[0]: input should be a valid integer"),
])
def test_floats_are_finite_and_integers_and_booleans_strict(tmp_path, capsys, override, message):
    data = {**QUICK, "backbone": {"name": "mlp"}} if "hidden" in override else QUICK
    run_refused(tmp_path, capsys, data, message, overrides=[override])


def test_strict_types_still_take_what_yaml_writes(tmp_path, no_training):
    """Paths are strings in YAML, integers count as floats; a saved config validates again."""
    cfg = run_from_mapping({**QUICK, "training": {"lr": 1, "epochs": 2}, "output": {"dir": "runs/x"},
                            "scenario": {"source": {"name": "features", "path": "f.npz"}}})
    assert cfg.training.lr == 1.0 and isinstance(cfg.training.lr, float) and cfg.output.dir == Path("runs/x")
    assert RunConfig.model_validate(cfg.model_dump(mode="json")) == cfg


# --- command-line values ---------------------------------------------------------------------------------------

def test_permutations_below_the_minimum_name_the_flag_for_a_bare_table(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("run,task_name,x\n")
    line = refused(capsys, ["stats", table, "--permutations", "99"], "--permutations: input should be greater than or "
                                                                     "equal to 100 (got 99)")
    assert "study.yaml" not in line


def test_negative_labels_are_named_as_such(tmp_path, capsys):
    np.savez(tmp_path / "f.npz", features=np.random.default_rng(0).normal(size=(40, 4)), labels=np.arange(40) % 2 - 2)
    refused(capsys, ["analyze", tmp_path / "f.npz"], "f.npz: label array 'labels' holds -2; label ids must be "
                                                     "integers >= 0")


@pytest.mark.parametrize("command", ["analyze", "stats"])
def test_an_empty_json_path_is_a_usage_error(tmp_path, capsys, command):
    np.savez(tmp_path / "f.npz", features=np.zeros((8, 2)), labels=np.arange(8) % 2)
    target = tmp_path / "f.npz" if command == "analyze" else tmp_path
    refused(capsys, [command, target, "--json", ""], "--json: expected a file name, got an empty one")


def test_an_integer_literal_is_no_boolean_and_its_options_are_listed(tmp_path, capsys):
    run_refused(tmp_path, capsys, QUICK, "analysis.ddof: expected 0 or 1, not a boolean; got True",
                overrides=["analysis.ddof=true"])
    run_refused(tmp_path, capsys, QUICK, "analysis.ddof: 2 is not one of 0, 1", overrides=["analysis.ddof=2"])


def test_the_scenario_command_checks_the_memory_too(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"scenario": {**QUICK["scenario"], "source": {"name": "shapes",
                                                                                "train_repeats": 10 ** 9}}}))
    refused(capsys, ["scenario", path, "--png", tmp_path / "never.png"], "scenario.source.train_repeats: the "
            "scenario would need at least", "96000001920 images of 3x32x32 float32", out=tmp_path / "never.png")


def test_a_set_key_path_of_thousands_of_parts_is_one_line(tmp_path, capsys):
    """A 50,000-part key made a mapping too deep for pydantic to write back (ValueError at run start)."""
    run_refused(tmp_path, capsys, {**QUICK, "backbone": {"name": "timm", "model": "resnet18"}},
                "a key path of 50003 parts (at most 32)", overrides=["backbone.options." + "a." * 50_000 + "b=1"])


def test_yaml_builds_json_data_only(tmp_path, capsys, no_training):
    """A date in an inline study base stopped expand_grid's JSON copy with a TypeError; binary data and sets
    have no config key to go to."""
    study = tmp_path / "s.yaml"
    study.write_text(f"base: {{seed: 2001-12-14}}\nfactors: {{training.epochs: [1]}}\nout: {tmp_path / 'never'}\n")
    refused(capsys, ["study", study], "seed: input should be a valid integer (got '2001-12-14')",
            out=tmp_path / "never")
    run_refused(tmp_path, capsys, "seed: 0\nbackbone: {name: timm, model: x, options: {a: !!binary /w==}}\n",
                "c.yaml: YAML has a binary value, which no config key takes (line 2")
    run_refused(tmp_path, capsys, "seed: !!set {a}\n", "c.yaml: YAML has a set value")
    assert load_yaml_text("when: 2001-12-14", "x") == {"when": "2001-12-14"} and no_training == []
