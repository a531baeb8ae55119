"""`dncsim analyze` end to end: the shipped example, JSON output, and one-line errors with exit 2."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dncsim
from dncsim.analysis import class_geometry
from dncsim.simulator.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "multitask_features.npz"


def run_cli(*args):
    """Run the CLI in a subprocess, as a user does; returns (status, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "dncsim", *args],
                       capture_output=True, text=True, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr


def test_example_file_is_reproduced_by_its_script():
    """Labels exactly; features to float32 rounding (other CPUs and BLAS builds round differently, and
    the script uses no LAPACK choice that could change more than the last bits)."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import make_multitask_features as mk
    finally:
        sys.path.pop(0)
    made = mk.make(seed=0)
    with np.load(EXAMPLE) as z:
        assert sorted(z.files) == sorted(made)
        for k in z.files:
            if k == "features":
                np.testing.assert_allclose(z[k], made[k], rtol=1e-5, atol=1e-5)
            else:
                np.testing.assert_array_equal(z[k], made[k])


def test_analyze_example_prints_tables_and_writes_json(tmp_path, capsys):
    out = tmp_path / "res.json"
    assert main(["analyze", str(EXAMPLE), "--shots", "5,10", "--episodes", "50", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for heading in ("Geometry", "Few-shot nearest-centre error", "Prop. 4.2 check", "color / shape"):
        assert heading in text
    res = json.loads(out.read_text())
    assert list(res["labelings"]) == ["color", "shape", "size", "style"]
    assert len(res["pairs"]) == 6
    with np.load(EXAMPLE) as z:
        s = class_geometry(z["features"], z["color"]).summary()
        others = np.stack([z[k] for k in ("shape", "size", "style")])
        e = dncsim.estimate_geometry(z["features"], z["color"], strata=others).summary()
    color = res["labelings"]["color"]
    assert color["plugin"]["dir_cdnv"] == pytest.approx(s["dir_cdnv"], rel=1e-12)
    assert color["plugin"]["cdnv"] == pytest.approx(s["cdnv"], rel=1e-12)
    # the default estimator, the other labelings of the file its strata: the Python API's default numbers
    assert color["estimator"] == "debiased" and color["design"] == "strata"
    assert color["dir_cdnv"] == pytest.approx(e["dir_cdnv"], rel=1e-12)
    assert color["cdnv"] == pytest.approx(e["cdnv"], rel=1e-12)
    assert color["dir_cdnv_ci"][0] < color["dir_cdnv"] < color["dir_cdnv_ci"][1]
    assert color["cdnv_ci"][0] < color["cdnv"] < color["cdnv_ci"][1]
    assert color["barely_resolved_pairs"] == color["negative_numerator_pairs"] == color["undefined_pairs"] == 0
    assert [r["shots"] for r in color["fewshot"]] == [5, 10]
    assert color["fewshot"][0]["note"].startswith("m < 10")
    assert color["fewshot"][1]["bound_in_range"] is True
    assert color["fewshot"][1]["bound"] > color["fewshot"][1]["error"]
    # the example's labelings are exactly independent and balanced, so Prop. 4.2 must hold everywhere
    assert all(p["independent"] and p["frac_under_bound"] == 1.0 for p in res["pairs"])
    assert "NaN" not in out.read_text()


def test_analyze_is_deterministic(tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"r{k}.json"
        assert main(["analyze", str(EXAMPLE), "--labels", "style,size", "--episodes", "20", "--json", str(out)]) == 0
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    assert list(json.loads(outs[0])["labelings"]) == ["style", "size"]


def test_single_labels_array_and_skipped_shots(tmp_path, capsys):
    p = tmp_path / "one.npz"
    rng = np.random.default_rng(0)
    np.savez(p, features=rng.normal(size=(30, 4)), labels=np.repeat([0, 1, 2], 10))
    assert main(["analyze", str(p), "--shots", "5,10", "--json", str(tmp_path / "o.json")]) == 0
    res = json.loads((tmp_path / "o.json").read_text())
    assert res["pairs"] == []
    rows = res["labelings"]["labels"]["fewshot"]
    assert rows[1]["error"] is None and "smallest class has 10 samples" in rows[1]["note"]
    assert "Prop. 4.2" not in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["analyze", "missing.npz"], "missing.npz: no such file"),
    (["analyze", str(EXAMPLE), "--labels", "colour"], "label key 'colour' not in the file; available label arrays: "
                                                      "color, shape, size, style"),
    (["analyze", str(EXAMPLE), "--shots", "a,b"], "argument --shots: expected comma-separated positive integers, got "
                                                  "'a,b'"),
    (["analyze", str(EXAMPLE), "--ways", "1"], "argument --ways: expected an integer >= 2"),
    (["analyze", str(EXAMPLE), "--json", "/nonexistent/dir/out.json"], "--json: directory /nonexistent/dir does not "
                                                                       "exist"),
    (["analyse", str(EXAMPLE)], "invalid choice: 'analyse'"),
])
def test_user_errors_are_one_line_with_status_2(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as exc:           # argparse usage errors exit from inside the parser
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_a_user_error_in_a_real_process_has_no_traceback():
    code, out, err = run_cli("analyze", "missing.npz")
    assert code == 2 and err.strip() == "dncsim analyze: error: missing.npz: no such file" and out == ""


@pytest.mark.parametrize("make,message", [
    (lambda: {"features": np.full((4, 2), np.nan), "labels": np.array([0, 0, 1, 1])}, "NaN or inf values in 4 of 4 "
                                                                                      "rows"),
    (lambda: {"features": np.zeros((4, 2)), "labels": np.array([0, 0, 1, 1])}, "labeling 'labels': classes 0 and 1 "
                                                                               "have coincident means"),
    (lambda: {"features": np.eye(4), "labels": np.zeros(4, int)}, "need at least 2 classes"),
])
def test_bad_data_is_one_line_with_status_2(tmp_path, make, message, capsys):
    p = tmp_path / "bad.npz"
    np.savez(p, **make())
    out = tmp_path / "o.json"
    code = main(["analyze", str(p), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()                       # nothing half-written
