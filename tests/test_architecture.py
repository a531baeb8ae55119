"""The shape of the code, read from its own imports: one dncsim namespace, the import rules between
the parts, no import cycles, and an install that cannot collide with a user's own modules."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> the dotted package it installs as (setup.cfg, package_dir)
PACKAGES = {"src/dncsim": "dncsim", "analysis": "dncsim.analysis", "scenarios": "dncsim.scenarios",
            "simulator": "dncsim.simulator"}
PLOTTING = ("matplotlib", "seaborn", "networkx", "jinja2")


def module_files():
    """Dotted module name -> file, for every module of the installed packages."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = module_files()


def imports_of(path: Path):
    """Every module name imported anywhere in the file (module level or inside functions):
    ``from a.b import c`` gives ``a.b.c`` when that is a module of ours, else ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (use the dncsim.* name)"
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return found


IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}


def is_core(name):
    return name.startswith("dncsim.analysis") and not name.startswith("dncsim.analysis.report")


def test_every_package_folder_is_listed_in_setup_cfg():
    cfg = (ROOT / "setup.cfg").read_text()
    listed = cfg.split("packages =", 1)[1].split("include_package_data", 1)[0].split()
    packages = sorted(name for name, path in MODULES.items() if path.name == "__init__.py")
    assert sorted(listed) == packages


def test_nothing_imports_the_card_folders_by_their_bare_names():
    bare = {n: sorted(i for i in imps if i.split(".")[0] in ("analysis", "scenarios", "simulator"))
            for n, imps in IMPORTS.items()}
    assert not {n: b for n, b in bare.items() if b}
    for path in sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py")):
        found = {i for i in imports_of(path) if i.split(".")[0] in ("analysis", "scenarios", "simulator")}
        assert not found, f"{path} imports {found}"


def test_the_analysis_core_is_pure():
    """No simulator, scenarios, report, Avalanche or plotting in analysis/ outside analysis/report/."""
    outside = ("dncsim.simulator", "dncsim.scenarios", "dncsim.analysis.report", "dncsim.rundir")
    for name in filter(is_core, IMPORTS):
        bad = sorted(i for i in IMPORTS[name] if i.startswith(outside) or i.split(".")[0] in ("avalanche", *PLOTTING))
        assert not bad, f"{name} imports {bad}"


def test_scenarios_know_nothing_of_training_and_shared_modules_nothing_of_the_parts():
    for name, imps in IMPORTS.items():
        if name.startswith("dncsim.scenarios"):
            bad = sorted(i for i in imps if i.startswith(("dncsim.simulator", "dncsim.analysis.report")))
            assert not bad, f"{name} imports {bad}"
            private = sorted(i for i in imps if i.startswith("dncsim.") and not i.startswith("dncsim.scenarios")
                             and any(part.startswith("_") for part in i.split(".")))
            assert not private, f"{name} imports private modules {private}"
    assert not {i for i in IMPORTS["dncsim.common"] if i.startswith("dncsim")}
    # nothing below the report imports it, apart from the report itself and the commands that write one
    for name, imps in IMPORTS.items():
        if any(i.startswith("dncsim.analysis.report") for i in imps):
            assert name.startswith(("dncsim.analysis.report", "dncsim.simulator.run", "dncsim.simulator.study",
                                    "dncsim.simulator.cli")), name


#: what the run-directory layer (dncsim.rundir.*) may import of dncsim beyond itself: the base layer, the npz
#: reader, and of the analysis core the metric names and the class geometry it stores
RUNDIR_MAY_IMPORT = ("dncsim.common", "dncsim.npzfile", "dncsim.analysis.names", "dncsim.analysis.geometry")


def test_the_run_directory_is_a_layer_above_common():
    """common <- rundir <- (analysis.report, simulator): the run directory imports only the base layer and
    two leaf modules of the analysis core; nothing below it (common, npzfile, the analysis core) imports it."""
    layer = [n for n in IMPORTS if n == "dncsim.rundir" or n.startswith("dncsim.rundir.")]
    assert {"dncsim.rundir", "dncsim.rundir.writer", "dncsim.rundir.reader", "dncsim.rundir.lock"} <= set(layer)
    for name in layer:
        bad = sorted(i for i in IMPORTS[name] if i.startswith("dncsim.") and not i.startswith("dncsim.rundir")
                     and not i.startswith(RUNDIR_MAY_IMPORT))
        assert not bad, f"{name} imports {bad}"
    below = ["dncsim.common", "dncsim.npzfile", *filter(is_core, IMPORTS)]
    for name in below:
        assert not [i for i in IMPORTS[name] if i.startswith("dncsim.rundir")], f"{name} imports the run directory"


def test_no_import_cycles_between_modules():
    graph = nx.DiGraph()
    graph.add_nodes_from(MODULES)
    for name, imps in IMPORTS.items():
        graph.add_edges_from((name, i) for i in imps if i in MODULES and i != name)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"
    assert graph.number_of_edges() > 100            # the graph really was read


def test_the_install_holds_one_top_level_package():
    """Seen from a neutral directory (not a checkout, whose build metadata may lie around): the
    distribution declares one top-level package, and the bare names resolve to nothing it installed."""
    code = ("import importlib.metadata as m, importlib.util as u; "
            "print(m.distribution('dncsim').read_text('top_level.txt').split(), "
            "[u.find_spec(n) is None for n in ('analysis', 'scenarios', 'simulator')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "['dncsim'] [True, True, True]", out.stderr


@pytest.fixture
def users_project(tmp_path):
    """A researcher's project folder with its own analysis.py, scenarios/ and simulator.py."""
    (tmp_path / "analysis.py").write_text("MINE = 'analysis'\ndef class_geometry(*a, **k):\n    raise SystemExit(9)\n")
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "__init__.py").write_text("MINE = 'scenarios'\n")
    (tmp_path / "simulator.py").write_text("MINE = 'simulator'\n")
    return tmp_path


def test_the_python_api_works_next_to_the_users_own_modules(users_project):
    script = users_project / "study.py"
    script.write_text(textwrap.dedent("""
        import analysis, scenarios, simulator
        import numpy as np
        import dncsim
        assert (analysis.MINE, scenarios.MINE, simulator.MINE) == ("analysis", "scenarios", "simulator")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(40, 3)) + np.repeat(np.eye(3)[:2] * 4, 20, axis=0)
        y = np.repeat([0, 1], 20)
        g = dncsim.class_geometry(x, y)
        assert g.C == 2 and 0 < g.summary()["dir_cdnv"] < g.summary()["cdnv"]
        print(round(float(dncsim.ncc_error_bound(g, 10).value), 6) >= 0, dncsim.DncsimError.__module__)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=users_project)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "dncsim.common"]


def test_the_commands_work_in_the_users_project(users_project):
    dncsim = [sys.executable, "-m", "dncsim"]
    p = subprocess.run([*dncsim, "analyze", str(ROOT / "examples" / "multitask_features.npz"), "--episodes", "5",
                        "--labels", "color,shape"], capture_output=True, text=True, cwd=users_project)
    assert p.returncode == 0 and "Prop. 4.2" in p.stdout, p.stderr
    cfg = users_project / "tiny.yaml"
    cfg.write_text(textwrap.dedent("""
        scenario: {source: {name: shapes, image_size: 16, train_repeats: 1, test_repeats: 1},
                   stream: {type: multilabel, labelings: [color, style]}}
        backbone: {name: convnet, width: 4, feature_dim: 8}
        objective: {name: supervised}
        evaluation: {linear_steps: 5, probes: [ncc]}
        analysis: {shots: [1], episodes: 2}
        output: {report: false, tensorboard: false, checkpoints: false}
    """))
    p = subprocess.run([*dncsim, "run", str(cfg), "--out", "run"], capture_output=True, text=True, cwd=users_project)
    assert p.returncode == 0, p.stderr
    assert (users_project / "run" / "manifest.json").is_file() and "After the last experience" in p.stdout


def test_no_test_module_imports_another():
    """Test modules share helpers through tests/conftest.py fixtures and helper modules (tests/forge.py,
    tests/support/), never by importing each other (which runs the other's tests' module code too)."""
    tests = ROOT / "tests"
    modules = sorted(tests.rglob("test_*.py"))
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in modules}
    assert "tests.analysis.test_metrics" in names and len(names) > 50
    for path in modules:
        found = sorted(i for i in imports_of(path) if i in names or any(i.startswith(n + ".") for n in names))
        assert not found, f"{path.relative_to(ROOT)} imports test module(s) {found}"
