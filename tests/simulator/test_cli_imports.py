"""A CLI that answers at once: `--help` of every command and every configuration error (run, study and
scenario files, `--set`, bad flags) import neither torch nor Avalanche nor a plotting library.
Validation first, heavy imports after.

Each check runs `python -m dncsim` (the `dncsim` command) or the validation functions the commands
call in a fresh interpreter and reads `sys.modules` afterwards: an `import torch` added back at the
top of any module on those paths fails here.
"""
import json
import textwrap

import pytest
from tests.support.cli import ROOT, dncsim, python

EXAMPLE = ROOT / "examples" / "multitask_features.npz"
#: top-level packages that cost seconds to import (torch alone about 2 s) or pull in plotting
COMMANDS = ("analyze", "scenario", "run", "report", "study", "stats")
RUN_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("study_"))
STUDY_CONFIGS = sorted((ROOT / "configs").glob("study_*.yaml"))


def test_help_of_every_command_imports_nothing_heavy():
    code = textwrap.dedent("""
        import contextlib, io, json, sys
        heavy = set(json.loads(sys.argv[1]))
        from dncsim.simulator.cli import build_parser, main
        import argparse
        sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        commands = sorted(sub.choices)
        imported = {}
        for argv in [["--help"], ["--version"], *[[c, "--help"] for c in commands]]:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                try:
                    main(argv)
                except SystemExit as exc:
                    assert exc.code == 0, (argv, exc.code)
            assert "usage: dncsim" in out.getvalue() or argv == ["--version"], argv
            imported[" ".join(argv)] = sorted({m.split(".")[0] for m in sys.modules} & heavy)
        print(json.dumps({"commands": commands, "imported": imported}))
    """)
    p = python(code)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert set(COMMANDS) <= set(result["commands"])
    assert len(result["imported"]) == len(result["commands"]) + 2
    assert result["imported"] == {k: [] for k in result["imported"]}


def test_the_help_command_itself_imports_nothing_heavy():
    status, out, err, imported = dncsim("run", "--help")
    assert status == 0 and "usage: dncsim run" in out and err == ""
    assert imported == []


def test_validating_every_shipped_config_imports_nothing_heavy():
    """The functions `dncsim run`, `dncsim study` and `dncsim scenario` validate with, on every shipped
    run and study file (with `--set` overrides; a study validates every run of its grid)."""
    assert RUN_CONFIGS and STUDY_CONFIGS
    code = textwrap.dedent("""
        import json, sys
        heavy = set(json.loads(sys.argv[1]))
        from dncsim.scenarios.config import load_scenario_config
        from dncsim.simulator.config import load_run_config
        from dncsim.simulator.study import expand_grid, load_study_config
        runs, studies = json.loads(sys.argv[2]), json.loads(sys.argv[3])
        for path in runs:
            cfg = load_run_config(path, ["training.epochs=2", "strategy={name: replay}"])
            assert cfg.training.epochs == 2 and cfg.scenario == load_scenario_config(path)
        grids = [len(expand_grid(load_study_config(path, {"workers": 1}))) for path in studies]
        print(json.dumps({"grids": grids, "imported": sorted({m.split(".")[0] for m in sys.modules} & heavy)}))
    """)
    p = python(code, json.dumps([str(p) for p in RUN_CONFIGS]), json.dumps([str(p) for p in STUDY_CONFIGS]))
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert min(result["grids"]) >= 2
    assert result["imported"] == []


@pytest.fixture
def files(tmp_path):
    """A directory of bad (and one good) run, study and scenario files."""
    write = {
        "bad_run.yaml": "training: {epochs: -1}\n",
        "typo_run.yaml": "trainig: {epochs: 2}\n",
        "bad_source.yaml": "scenario: {source: {name: shapez}}\n",
        "bad_watch.yaml": "scenario: {source: {name: digits}}\nevaluation: {watch: 3}\n",
        "good.yaml": "scenario: {source: {name: digits}, stream: {type: task_incremental, experiences: 5}}\n"
                     "objective: {name: supervised}\n",
        "bad_grid.yaml": "base: {objective: {name: supervised}}\nfactors: {training.epochs: [1, -1]}\n",
        "no_factors.yaml": "base: {}\nfactors: {}\n",
        "bad_engine.yaml": "base: {}\nfactors: {seed: [0, 1]}\nengine: spark\n",
        "not_yaml.yaml": "training: [epochs\n",
    }
    for name, text in write.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("args,message", [
    (["run", "bad_run.yaml"], "training.epochs: input should be greater than or equal to 1 (got -1)"),
    (["run", "typo_run.yaml"], "trainig"),
    (["run", "not_yaml.yaml"], "not_yaml.yaml"),
    (["run", "missing.yaml"], "missing.yaml"),
    (["run", "good.yaml", "--set", "trainig.epochs=2"], "--set trainig.epochs: unknown section 'trainig'"),
    (["run", "good.yaml", "--set", "training.epochs=0"], "training.epochs"),
    (["run", "good.yaml", "--set", "objective.name=simclrr"], "simclr"),
    (["study", "bad_grid.yaml"], "study run 001-epochs=-1: training.epochs"),
    (["study", "no_factors.yaml"], "factors: at least one factor is needed"),
    (["study", "bad_engine.yaml"], "engine"),
    (["study", "good.yaml"], "base: required key is missing"),
    (["study", "no_factors.yaml", "--scheduler", "tcp://h:1"], "factors: at least one factor is needed"),
    (["study", "bad_engine.yaml", "--engine", "local", "--scheduler", "tcp://h:1"], "--scheduler needs --engine dask"),
    (["scenario", "bad_source.yaml"], "scenario.source"),
    (["scenario", "bad_watch.yaml"], "evaluation.watch: expected a list of labeling names; got 3"),
    (["scenario", "good.yaml", "--png", "nowhere/grid.png"], "--png: directory"),
    (["analyze", str(EXAMPLE), "--json", "nowhere/out.json"], "--json: directory"),
    (["run", "good.yaml", "--frobnicate"], "dncsim: error: unrecognized arguments: --frobnicate"),
    (["stats", "x", "--permutations", "0"], "dncsim stats: error: argument --permutations: expected a positive "
                                             "integer, got '0'"),
])
def test_a_config_error_is_one_line_with_status_2_and_imports_nothing_heavy(files, args, message):
    status, out, err, imported = dncsim(*args, cwd=files)
    assert status == 2, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith(("dncsim: error: ", f"dncsim {args[0]}: error: ")) and message in err, err
    assert out == ""
    assert imported == []


def test_the_harness_sees_a_heavy_import():
    """The check is not vacuous: a command that gets past validation does import torch."""
    status, out, err, imported = dncsim("analyze", EXAMPLE, "--episodes", "1", "--shots", "1", "--labels", "color")
    assert status == 0 and "Prop. 4.2" not in err, err
    assert "torch" in imported
