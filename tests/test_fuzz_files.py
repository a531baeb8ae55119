"""Damaged files tried by the hundred (hypothesis): .npz feature files with bad headers, corrupt streams, huge
declared shapes, object arrays, extra members and wrong dtypes (``dncsim analyze``); tables with byte-order
marks and NaN/inf/1e308 cells (``dncsim stats``); a finished run directory with each file removed, emptied,
truncated, corrupted or replaced by the wrong JSON type (``dncsim report``). Each is analysed (strict JSON out)
or refused with one line on stderr and exit status 2, writing nothing; never a traceback.

The suite runs the ``deterministic`` hypothesis profile (seconds); ``HYPOTHESIS_PROFILE=explore`` draws fresh
inputs and ten times as many, for a hand run. Each test prints its counts (``pytest -s``)."""
import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dncsim.analysis.report.build as report_build
from dncsim.simulator.cli import main
from tests.forge import corrupt_member, finished_run, npy_bytes, npy_with_header

EXPLORE = os.environ.get("HYPOTHESIS_PROFILE") == "explore"


def fuzz(n):
    return settings(max_examples=n * (10 if EXPLORE else 1), deadline=None, suppress_health_check=list(HealthCheck))


def strict_json(path):
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {path}"))


def check_outcome(code, err, out, counts):
    """Accepted (exit 0, strict JSON written when asked) or refused (exit 2, one line, nothing written)."""
    assert code in (0, 2) and "Traceback" not in err, (code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("dncsim "), err
        assert out is None or not out.exists()
    elif out is not None:
        strict_json(out)
        out.unlink()
    counts["accepted" if code == 0 else "refused"] += 1


# --- feature files ----------------------------------------------------------------------------------

HEADERS = st.sampled_from([
    "", "{", "{'descr': '<f8', 'fortran_order': False, 'shape': (24, 3", "[1, 2]", "{'descr': '<f8'}",
    "{'descr': 'xyz', 'fortran_order': False, 'shape': (24, 3), }",
    "{'descr': '<f8', 'fortran_order': 'no', 'shape': (24, 3), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (24, -3), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (24, 3.5), }",
    "{'descr': [('a', '<f8'), ('b', 'O')], 'fortran_order': False, 'shape': (24,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': " + "(" * 300 + ")" * 300 + ", }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (24, 3), 'x': 1}",
])
HUGE = st.sampled_from([10**6, 10**9, 2**31, 2**40, 2**62, 2**63 - 1, 2**64 + 3, 10**30])
DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint64, np.int64, bool, np.complex64,
                          "U3", "S2", "V8", "M8[s]", object])


def array_of(dtype, shape):
    if dtype is object:
        return np.full(shape, None, dtype=object)
    with np.errstate(all="ignore"):
        return np.random.default_rng(0).normal(size=shape).astype(dtype) if dtype != "V8" else np.zeros(shape, "V8")


@st.composite
def npz_files(draw):
    """(kind of damage, the bytes of an .npz): a valid feature file, then one or two kinds of damage."""
    n, d = draw(st.integers(6, 30)), draw(st.integers(1, 5))
    x = np.random.default_rng(draw(st.integers(0, 3))).normal(size=(n, d)) * draw(
        st.sampled_from([1.0, 1e-200, 1e200, 1e300, 1e-300, 1e38]))
    members = {"features": npy_bytes(x), "labels": npy_bytes(np.arange(n) % draw(st.integers(2, 3)))}
    kinds = draw(st.lists(st.sampled_from(["header", "huge", "dtype", "object", "extra", "corrupt", "truncate",
                                           "label_dtype", "none"]), min_size=1, max_size=2, unique=True))
    target = draw(st.sampled_from(["features", "labels"]))
    for kind in kinds:
        if kind == "header":
            members[target] = npy_with_header(draw(HEADERS), members[target][128:])
        elif kind == "huge":
            shape = tuple(draw(st.lists(HUGE | st.integers(0, 40), min_size=1, max_size=3)))
            members[target] = npy_with_header(
                "{'descr': '<f8', 'fortran_order': False, 'shape': %r, }" % (shape,), b"\0" * draw(st.integers(0, 64)))
        elif kind == "dtype":
            members["features"] = npy_bytes(array_of(draw(DTYPES), (n, d)))
        elif kind == "label_dtype":
            members["labels"] = npy_bytes(array_of(draw(DTYPES), (n,)))
        elif kind == "object":
            members[draw(st.sampled_from(["features", "labels", "meta"]))] = npy_bytes(
                np.array([{"k": 1}] * n, dtype=object))
        elif kind == "extra":
            for i in range(draw(st.integers(1, 3))):
                name = draw(st.sampled_from([f"meta{i}", f"raw{i}.bin", f"dir/x{i}", f"color{i}"]))
                members[name] = draw(st.sampled_from([
                    npy_bytes(np.arange(n) % 2), npy_bytes(np.zeros((n, 2))), b"not an array",
                    npy_bytes(array_of(draw(DTYPES), (n,))), npy_with_header(draw(HEADERS))]))
    buf = io.BytesIO()
    compressed = "corrupt" in kinds or draw(st.booleans())
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name if "." in name or "/" in name else f"{name}.npy", data)
    data = buf.getvalue()
    if "corrupt" in kinds:
        data = corrupt_member(data, target, at=draw(st.floats(0, 0.95)), length=draw(st.integers(1, 16)))
    if "truncate" in kinds:
        data = data[:draw(st.integers(0, len(data) - 1))]
    return kinds, data


def test_feature_files_damaged_by_the_hundred(tmp_path, capsys):
    counts = {"accepted": 0, "refused": 0}

    @fuzz(150)
    @given(npz_files())
    def check(case):
        kinds, data = case
        path = tmp_path / "f.npz"
        path.write_bytes(data)
        out = tmp_path / "out.json"
        code = main(["analyze", str(path), "--episodes", "2", "--shots", "1", "--json", str(out)])
        captured = capsys.readouterr()
        check_outcome(code, captured.err, out, counts)
        if code == 0:
            assert "nan" not in captured.out
    check()
    print(f"feature files: {counts}")
    assert counts["refused"] >= 100 and counts["accepted"] >= 10, counts


# --- tables -----------------------------------------------------------------------------------------

CELLS = st.sampled_from(["nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e-320", "", "x", "True", "0"])


@st.composite
def damaged_tables(draw):
    from dncsim.analysis.aggregate import rows_to_csv
    from tests.support.study_tables import tables
    rows = [dict(r) for r in tables(effect=1.0, unlearned=2)[0]]
    columns = list(rows[0])
    for _ in range(draw(st.integers(0, 12))):
        r = draw(st.integers(0, len(rows) - 1))
        rows[r][draw(st.sampled_from(columns))] = draw(CELLS)
    if draw(st.integers(0, 4)) == 0:
        column = draw(st.sampled_from(columns[5:]))
        value = draw(CELLS)
        for r in rows:
            r[column] = value
    text = rows_to_csv(rows)
    if draw(st.booleans()):
        text = "\ufeff" + text
    if draw(st.integers(0, 5)) == 0:
        text = text[:draw(st.integers(0, len(text)))]
    return text.encode("utf-8")


def test_tables_damaged_by_the_hundred(tmp_path, capsys):
    counts = {"accepted": 0, "refused": 0}

    @fuzz(25)
    @given(damaged_tables())
    def check(data):
        path = tmp_path / "tasks.csv"
        path.write_bytes(data)
        out = tmp_path / "s.json"
        code = main(["stats", str(path), "--permutations", "100", "--bootstrap", "100", "--json", str(out)])
        check_outcome(code, capsys.readouterr().err, out, counts)
    check()
    print(f"tables: {counts}")
    assert counts["accepted"] >= 10 and counts["refused"] >= 3, counts


# --- run directories --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return finished_run(tmp_path_factory)


WRONG_JSON = st.sampled_from([[], [1, 2], 0, 3.5, "text", None, True, {}, {"tasks": "x"}, [{"a": 1}]])
FILES = ["config.yaml", "manifest.json", "metrics.jsonl", "accuracy.json", "metrics.csv", "geometry/row_000.npz",
         "geometry/row_002.npz", "geometry", "checkpoint.pt"]


def _paths(node, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def run_damage(draw):
    """(file, what to do with it, a function that does it to a copy of the run directory)."""
    name = draw(st.sampled_from(FILES))
    how = draw(st.sampled_from(["remove", "empty", "truncate", "corrupt", "wrong_json", "retype", "line"]))
    cut, seed = draw(st.floats(0, 0.99)), draw(st.integers(0, 2**16))
    odd = draw(WRONG_JSON | st.sampled_from([-1, 10**6, "acc", float("nan"), 1e308]))
    delete = draw(st.booleans())
    pick = draw(st.integers(0, 10**6))

    def apply(d):
        p = d / name
        if how == "remove" or (p.is_dir() and how != "empty"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        elif p.is_dir():
            for f in p.iterdir():
                f.write_bytes(b"")
        elif how == "empty":
            p.write_bytes(b"")
        elif how == "truncate":
            data = p.read_bytes()
            p.write_bytes(data[:int(len(data) * cut)])
        elif how == "corrupt":
            data = bytearray(p.read_bytes())
            rng = np.random.default_rng(seed)
            for i in rng.integers(0, len(data), size=4):
                data[i] ^= int(rng.integers(1, 256))
            p.write_bytes(bytes(data))
        elif how == "wrong_json" and name.endswith((".json", ".yaml")):
            p.write_text(json.dumps(odd))
        elif how == "retype" and name.endswith((".json", ".yaml")):
            data = yaml.safe_load(p.read_text()) if name.endswith(".yaml") else json.loads(p.read_text())
            paths = _paths(data)
            path = paths[pick % len(paths)]
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            if delete:
                del parent[path[-1]]
            else:
                parent[path[-1]] = odd
            p.write_text(json.dumps(data, allow_nan=True))
        elif how == "line" and name == "metrics.jsonl":
            lines = p.read_text().splitlines()
            row = json.loads(lines[pick % len(lines)])
            key = sorted(row)[pick % len(row)]
            if delete:
                del row[key]
            else:
                row[key] = odd
            lines[pick % len(lines)] = json.dumps(row if seed % 5 else [row])
            p.write_text("\n".join(lines) + "\n")
        else:
            p.write_bytes(b"\x00" * (seed % 64))
    return name, how, apply


def test_run_directories_damaged_by_the_hundred(tmp_path, capsys, monkeypatch, tiny_run):
    """The report reads the damaged run and computes its summary (the figures and files are left out: they read
    nothing the summary does not)."""
    from dncsim.analysis.report.summary import prop42_points, run_summary
    monkeypatch.setattr(report_build, "_build", lambda run, others, out, paper=False:
                        run_summary(run, prop42_points(run)) and out)
    counts = {"accepted": 0, "refused": 0}

    @fuzz(120)
    @given(run_damage())
    def check(case):
        name, how, apply = case
        d = tmp_path / "run"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(tiny_run, d)
        apply(d)
        code = main(["report", str(d), "--out", str(tmp_path / "rep")])
        check_outcome(code, capsys.readouterr().err, None, counts)
        assert not (tmp_path / "rep").exists()
    check()
    print(f"run directories: {counts}")
    assert counts["refused"] >= 60 and counts["accepted"] >= 10, counts
