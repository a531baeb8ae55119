"""benchmarks/bench_estimators.py: its factor model is the example file's population, its quick mode runs
in seconds and gives the table the documentation holds, and ``--docs`` rewrites only its own section."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dncsim.common import DncsimError

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_estimators", ROOT / "benchmarks" / "bench_estimators.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_factor_model_is_the_population_of_the_example_file():
    """Cell means plus noise drawn as make() draws it give examples/make_multitask_features.py's features."""
    ex = bench._example()
    z = ex.make(0)
    names, levels, cells, cell_means, q, scales = bench.factor_model(0)
    rng = np.random.default_rng(0)               # replay make()'s draws up to its noise
    rng.normal(size=(ex.DIM, ex.DIM))
    for k in levels:
        rng.normal(size=(ex.SIGNAL_DIMS, ex.SIGNAL_DIMS))
        rng.normal(size=(k, ex.SIGNAL_DIMS))
    rng.normal(size=(ex.DIM, ex.DIM - len(levels) * ex.SIGNAL_DIMS))
    n = len(cells) * ex.REPS
    x = np.repeat(cell_means, ex.REPS, axis=0) + (rng.normal(size=(n, ex.DIM)) * scales) @ q.T
    perm = rng.permutation(n)
    assert names == ["color", "shape", "size", "style"]
    np.testing.assert_array_equal(x[perm].astype(np.float32), z["features"])
    for a, name in enumerate(names):
        np.testing.assert_array_equal(np.repeat(cells[:, a], ex.REPS)[perm], z[name])


def test_population_values_of_the_isotropic_design():
    design = bench.gaussian("iso", 0, C=4, d=64, n=16, gap2=10.0)
    assert design.truth == pytest.approx((1 / 10, 2 * 64 / 10))
    x, y, strata = design.draw(0)
    assert x.shape == (64, 64) and strata is None and np.bincount(y).tolist() == [16] * 4
    np.testing.assert_array_equal(design.draw(0)[0], x)          # seeded per draw


def test_quick_table(tmp_path, capsys):
    out = tmp_path / "table.md"
    assert bench.main(["--quick", "--designs", "iso,factorial", "--out", str(out)]) == 0
    table = out.read_text()
    assert capsys.readouterr().out == table
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == (3 + 8) * 3                         # (3 isotropic + 8 factorial designs) x 3 estimators
    by = {(r[0].lstrip("| "), r[2]): r for r in rows}
    plug = float(by[("isotropic, n/d = 0.25", "plugin")][4].split(" ± ")[0])
    assert plug < -30                                       # the plug-in's known small-sample bias (about -45%)
    debiased = float(by[("factorial, 6 per cell: shape", "debiased")][4].split(" ± ")[0])
    assert abs(debiased) < 15
    assert all(r[3].startswith("3") for r in rows)          # 3 draws each


def test_docs_section_replaced_in_place(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nbefore\n{bench.BEGIN}\nold table\n{bench.END}\nafter\n")
    bench.write_docs(page, "| new |\n")
    assert page.read_text() == f"# Title\n\nbefore\n{bench.BEGIN}\n| new |\n{bench.END}\nafter\n"
    plain = tmp_path / "plain.md"
    plain.write_text("# no section\n")
    with pytest.raises(DncsimError, match="no generated section"):
        bench.write_docs(plain, "| new |\n")
    assert plain.read_text() == "# no section\n"
