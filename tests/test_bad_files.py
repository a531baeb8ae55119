"""Files that are damaged, forged or hand-edited -- feature files, tables, run directories -- and outputs that
cannot be written: each is one line on stderr naming the file and what is wrong (exit status 2 for a bad
input, 1 for an output that cannot be written), nothing half-written, never a traceback."""
import errno
import io
import json
import math
import os
import re
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from dncsim.scenarios.features import load_feature_file
from dncsim.simulator.cli import main
from tests.forge import (TINY_RUN, corrupt_member, finished_run, good_arrays, npy_bytes, npy_with_header,
                         zip_bytes)

ROOT = Path(__file__).resolve().parents[1]


def one_line(capsys, code, expected_code=2):
    """The one stderr line of a refused command (asserting the exit status, no traceback, no more lines)."""
    captured = capsys.readouterr()
    err = captured.err
    assert code == expected_code and "Traceback" not in err, (code, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("dncsim "), err
    return err


def analyze(path, *extra):
    return main(["analyze", str(path), "--episodes", "3", "--shots", "1,3", *map(str, extra)])


# --- dncsim analyze: feature files ------------------------------------------------------------------

FEATURE_HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (24, 3), }"


@pytest.mark.parametrize("name,content,message", [
    ("plain .npy", lambda: npy_bytes(good_arrays()["features"]), "a single .npy array, not an .npz archive"),
    ("corrupt deflate stream", lambda: corrupt_member(zip_bytes(good_arrays(), compressed=True), "features"),
     "array 'features' is damaged"),
    ("malformed header (tokenizer error)",
     lambda: zip_bytes({"features": npy_with_header(FEATURE_HEADER[:-20]), "labels": np.arange(24) % 3}),
     "array 'features' is damaged"),
    ("header that is not a dict", lambda: zip_bytes({"features": npy_with_header("[1, 2]"),
                                                     "labels": np.arange(24) % 3}), "array 'features' is damaged"),
    ("declared shape 10^6 x 10^6",
     lambda: zip_bytes({"features": npy_with_header(FEATURE_HEADER.replace("(24, 3)", "(1000000, 1000000)"),
                                                    b"\0" * 64), "labels": np.arange(10**6) % 3}),
     r"array 'features' declares shape \(1000000, 1000000\) of float64 \(8.0 TB\) but the file holds 192 bytes"),
    ("object array", lambda: zip_bytes({"features": np.array([[{"a": 1}] * 3] * 24, dtype=object),
                                        "labels": np.arange(24) % 3}),
     r"'features' must be real numbers \(float or integer\); got dtype object"),
    ("object label array", lambda: zip_bytes({**good_arrays(), "labels": np.array([1] * 24, dtype=object)}),
     "no label array found"),
    ("string features", lambda: zip_bytes({**good_arrays(), "features": np.full((24, 3), "ab")}),
     "'features' must be real numbers"),
    ("truncated member", lambda: zip_bytes({**good_arrays(), "features": npy_bytes(np.ones((24, 3)))[:-40]}),
     "array 'features' is damaged"),
    ("empty file", lambda: b"", "empty file"),
])
def test_damaged_feature_files_are_one_line(tmp_path, capsys, name, content, message):
    path = tmp_path / "f.npz"
    path.write_bytes(content())
    out = tmp_path / "out.json"
    err = one_line(capsys, analyze(path, "--json", out))
    assert str(path) in err and re.search(message, err), err
    assert not out.exists()


def test_object_arrays_are_never_unpickled(tmp_path):
    import dncsim.npzfile as npzfile
    path = tmp_path / "f.npz"
    path.write_bytes(zip_bytes({"features": np.array([{"a": 1}, None], dtype=object)}))
    with npzfile.NpzArchive(path) as z:
        assert z.header("features") == ((2,), np.dtype(object))
        with pytest.raises(ValueError, match=r"f.npz: array 'features' holds Python objects \(dtype object\)"):
            z.read("features")


def test_a_declared_size_beyond_the_memory_available_is_refused_before_allocating(tmp_path, monkeypatch):
    import dncsim.npzfile as npzfile
    path = tmp_path / "f.npz"
    path.write_bytes(zip_bytes(good_arrays()))
    monkeypatch.setattr(npzfile, "available_memory", lambda: 500)
    with pytest.raises(ValueError, match=r"array 'features' \(shape \(24, 3\), float64\) needs 576 bytes of "
                                         r"memory; 500 bytes is available"):
        load_feature_file(path)


def test_members_that_are_not_asked_for_are_never_loaded(tmp_path):
    """A 64 MB metadata member (zeros, deflated to 64 kB) next to a small feature file: only 'features' and
    the label arrays are read."""
    arrays = good_arrays()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in arrays.items():
            z.writestr(f"{k}.npy", npy_bytes(v))
        with z.open("metadata.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (64 << 20,)})
            for _ in range(64):
                f.write(bytes(1 << 20))
    path = tmp_path / "f.npz"
    path.write_bytes(buf.getvalue())
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        ff = load_feature_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert list(ff.labelings) == ["labels"] and ff.features.shape == (24, 3)
    assert peak < 4 << 20, peak


def test_huge_and_tiny_features_give_the_tables_of_the_features_as_given(tmp_path, capsys):
    """Scale-free results are exactly those of the unscaled features; the mean gap scales with them; the JSON
    is strict (no NaN) and holds no null."""
    arrays = good_arrays(n=60, d=4)
    results = {}
    for scale in (1.0, 1e200, 1e-200):
        path = tmp_path / f"f{scale:g}.npz"
        np.savez(path, **{**arrays, "features": arrays["features"] * scale})
        out = tmp_path / f"f{scale:g}.json"
        assert analyze(path, "--json", out) == 0, capsys.readouterr().err
        assert "nan" not in capsys.readouterr().out
        results[scale] = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    base = results[1.0]["labelings"]["labels"]
    for scale in (1e200, 1e-200):
        got = results[scale]["labelings"]["labels"]
        assert "non_finite" not in results[scale]
        for key in ("cdnv", "dir_cdnv", "ratio", "bound_limit"):
            assert got[key] == pytest.approx(base[key], rel=1e-12), key
        assert [r["error"] for r in got["fewshot"]] == [r["error"] for r in base["fewshot"]]
        assert got["mean_gap"] == pytest.approx(base["mean_gap"] * scale, rel=1e-9)


def test_the_features_data_source_refuses_values_beyond_float32(tmp_path):
    from dncsim.scenarios.features import FeaturesSourceConfig, load_features_source
    path = tmp_path / "f.npz"
    arrays = good_arrays(n=60)
    np.savez(path, **{**arrays, "features": arrays["features"] * 1e200})
    with pytest.raises(ValueError, match=r"f.npz features: values up to .*e\+200 are beyond float32's range"):
        load_features_source(FeaturesSourceConfig(name="features", path=path), seed=0)
    path.write_bytes(zip_bytes({**arrays, "features": npy_with_header(FEATURE_HEADER[:-20])}))
    with pytest.raises(ValueError, match="array 'features' is damaged"):
        load_features_source(FeaturesSourceConfig(name="features", path=path), seed=0)


# --- the one JSON encoder ---------------------------------------------------------------------------

def test_non_finite_numbers_are_null_with_a_note():
    from dncsim.common import json_text
    text = json_text({"a": [1.0, float("nan")], "b": {"c": np.float32("inf"), "d": np.int64(3)}, "e": (2, -math.inf)})
    data = json.loads(text, parse_constant=lambda c: pytest.fail(c))
    assert data == {"a": [1.0, None], "b": {"c": None, "d": 3}, "e": [2, None],
                    "non_finite": {"note": "NaN or infinite values written as null", "count": 3,
                                   "paths": ["a[1]", "b.c", "e[1]"]}}
    assert "non_finite" not in json.loads(json_text({"a": 1.5}))


# --- dncsim stats: tables ---------------------------------------------------------------------------

@pytest.fixture
def tasks_rows():
    from tests.support.study_tables import tables
    return tables(effect=1.0, unlearned=2)[0]


def write_csv(path, rows, bom=False):
    from dncsim.analysis.aggregate import rows_to_csv
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + rows_to_csv(rows).encode())
    return path


def test_stats_reads_a_table_with_a_byte_order_mark(tmp_path, capsys, tasks_rows):
    plain, marked = write_csv(tmp_path / "a.csv", tasks_rows), write_csv(tmp_path / "b.csv", tasks_rows, bom=True)
    assert main(["stats", str(plain), "--permutations", "100", "--bootstrap", "100"]) == 0
    expected = capsys.readouterr().out
    assert main(["stats", str(marked), "--permutations", "100", "--bootstrap", "100"]) == 0
    assert capsys.readouterr().out == expected.replace(str(plain), str(marked))


def test_stats_json_of_a_constant_1e308_column_is_strict_json_with_nulls(tmp_path, capsys, tasks_rows):
    """cdnv_learned of 1e308 everywhere: a constant column, whose Spearman rho is undefined (NaN)."""
    for r in tasks_rows:
        if r["cdnv_learned"] is not None:
            r["cdnv_learned"] = 1e308
    out = tmp_path / "s.json"
    assert main(["stats", str(write_csv(tmp_path / "t.csv", tasks_rows)), "--permutations", "100", "--bootstrap", "100",
                 "--json", str(out)]) == 0, capsys.readouterr().err
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert data["non_finite"]["count"] >= 1
    for p in data["non_finite"]["paths"]:
        node = data
        for part in p.replace("[", ".").replace("]", "").split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        assert node is None, p


@pytest.mark.parametrize("cell", ["nan", "-inf", "1e308"])
def test_stats_with_non_finite_cells_analyses_or_refuses_in_one_line(tmp_path, capsys, tasks_rows, cell):
    for r in tasks_rows[::5]:
        r["dir_cdnv_learned"] = cell
        r["forgetting_max/linear/frozen"] = cell
    out = tmp_path / "s.json"
    code = main(["stats", str(write_csv(tmp_path / "t.csv", tasks_rows, bom=True)), "--permutations", "100",
                 "--bootstrap", "100", "--json", str(out)])
    if code:
        one_line(capsys, code)
        assert not out.exists()
    else:
        json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
        assert "Verdict:" in capsys.readouterr().out


# --- outputs that cannot be written -----------------------------------------------------------------

@pytest.fixture
def read_only(monkeypatch):
    """``read_only(root)``: from then on, creating, opening for writing, renaming or deleting anything under
    ``root`` fails as on a read-only file system (EROFS), at the os functions every writer goes through."""
    roots = []

    def under(p):
        p = os.path.abspath(os.fspath(p))
        return any(p == r or p.startswith(r + os.sep) for r in roots)

    def refuse(p):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(p))

    real = {name: getattr(os, name) for name in ("mkdir", "open", "unlink", "rmdir", "replace", "rename")}
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC

    def mkdir(p, *a, **k):
        return refuse(p) if under(p) else real["mkdir"](p, *a, **k)

    def open_(p, flags, *a, **k):
        return refuse(p) if flags & writing and under(p) else real["open"](p, flags, *a, **k)

    def remove(name):
        return lambda p, *a, **k: refuse(p) if under(p) else real[name](p, *a, **k)

    def move(name):
        return lambda s, d, *a, **k: refuse(d) if under(s) or under(d) else real[name](s, d, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "unlink", remove("unlink"))
    monkeypatch.setattr(os, "rmdir", remove("rmdir"))
    monkeypatch.setattr(os, "replace", move("replace"))
    monkeypatch.setattr(os, "rename", move("rename"))
    return lambda root: roots.append(os.path.abspath(root))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return finished_run(tmp_path_factory)


def tree(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def test_run_into_a_read_only_place_is_one_line_exit_1(tmp_path, capsys, read_only, tiny_run):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    shutil.copytree(tiny_run, tmp_path / "finished")
    before = tree(tmp_path / "finished")
    read_only(tmp_path)
    err = one_line(capsys, main(["run", str(config), "--out", str(tmp_path / "new")]), 1)
    assert f"{tmp_path / 'new'}: cannot create the run directory (Read-only file system)" in err
    err = one_line(capsys, main(["run", str(config), "--out", str(tmp_path / "finished"), "--force"]), 1)
    assert f"{tmp_path / 'finished' / '.dncsim.lock'}: cannot create the lock file (Read-only file system)" in err
    assert tree(tmp_path / "finished") == before and not (tmp_path / "new").exists()


def test_force_where_a_file_cannot_be_deleted_is_one_line_exit_1(tmp_path, capsys, read_only, tiny_run):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    shutil.copytree(tiny_run, tmp_path / "finished")
    read_only(tmp_path / "finished" / "geometry")
    err = one_line(capsys, main(["run", str(config), "--out", str(tmp_path / "finished"), "--force"]), 1)
    assert "cannot prepare the run directory (Read-only file system)" in err and "geometry" in err


def test_report_into_a_read_only_place_is_one_line_exit_1(tmp_path, capsys, read_only, tiny_run):
    shutil.copytree(tiny_run, tmp_path / "run")
    before = tree(tmp_path / "run")
    read_only(tmp_path)
    err = one_line(capsys, main(["report", str(tmp_path / "run")]), 1)
    assert f"{tmp_path / 'run' / '.dncsim.lock'}: cannot create the lock file" in err
    err = one_line(capsys, main(["report", str(tiny_run), "--out", str(tmp_path / "rep")]), 1)
    assert f"{tmp_path / 'rep'}: cannot create the report directory (Read-only file system)" in err
    assert tree(tmp_path / "run") == before and not (tmp_path / "rep").exists()


# --- dncsim report: hand-edited run directories -----------------------------------------------------

def edit_json(name, change):
    def apply(d):
        data = json.loads((d / name).read_text())
        (d / name).write_text(json.dumps(change(data)))
    return apply


def edit_config(change):
    def apply(d):
        data = yaml.safe_load((d / "config.yaml").read_text())
        change(data)
        (d / "config.yaml").write_text(yaml.safe_dump(data))
    return apply


def append_line(text):
    def apply(d):
        with open(d / "metrics.jsonl", "a") as f:
            f.write(text + "\n")
    return apply


def geometry(change):
    def apply(d):
        for p in sorted((d / "geometry").glob("*.npz")):
            p.write_bytes(change(p.read_bytes()))
    return apply


HAND_EDITS = {
    "empty matrices": (edit_json("accuracy.json", lambda a: {**a, "matrices": {}}),
                       "accuracy.json: 'matrices' must map probe/protocol keys"),
    "ragged matrix": (edit_json("accuracy.json", lambda a: {**a, "matrices": {"ncc/refit": [[0.5], [0.5, 0.5]]}}),
                      "accuracy.json: matrix 'ncc/refit' is not a list of rows of 2 numbers"),
    "config without objective": (edit_config(lambda c: c.pop("objective")),
                                 "config.yaml: 'objective.name' is missing; expected a name"),
    "config that is a list": (lambda d: (d / "config.yaml").write_text("[1, 2]\n"),
                              "config.yaml: expected a run configuration"),
    "empty geometry file": (geometry(lambda b: b""), "row_000.npz: empty file"),
    "geometry of another kind": (geometry(lambda b: zip_bytes({"x": np.ones(3)})),
                                 "row_002.npz: array 'x' is not task<k>/<field>"),
    "metrics line that is a list": (append_line("[1, 2]"), "metrics.jsonl: line {appended} is a JSON list"),
    "metrics line lacking keys": (append_line('{"metric": "acc"}'), "metrics.jsonl: line {appended} lacks exp, task"),
    "metrics line with a task out of range": (
        append_line(json.dumps({"exp": 0, "task": 7, "task_name": "x", "task_b": None, "metric": "acc",
                                "probe": "ncc", "protocol": "refit", "shots": None, "value": 0.5})),
        "metrics.jsonl: line {appended}: experience 0, task 7, task_b None outside the run's 2 experiences and "
        "2 tasks"),
    "metrics value that is text": (
        append_line(json.dumps({"exp": 0, "task": 0, "task_name": "x", "task_b": None, "metric": "acc",
                                "probe": "ncc", "protocol": "refit", "shots": None, "value": "high"})),
        "metrics.jsonl: line {appended}: 'value' is 'high'; expected a number"),
    "manifest that is a list": (lambda d: (d / "manifest.json").write_text("[1]"),
                                "manifest.json: expected the run's manifest (a JSON object); got a JSON list"),
    "manifest versions that are a list": (edit_json("manifest.json", lambda m: {**m, "versions": [1]}),
                                          "manifest.json: 'versions' must be a mapping"),
    "accuracy tasks that are numbers": (edit_json("accuracy.json", lambda a: {**a, "tasks": [1, 2]}),
                                        "accuracy.json: 'tasks' must be a non-empty list of task names"),
}


@pytest.mark.parametrize("case", list(HAND_EDITS))
def test_report_on_a_hand_edited_run_is_one_line_naming_the_file(tmp_path, capsys, tiny_run, case):
    edit, message = HAND_EDITS[case]
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    appended = len((run_dir / "metrics.jsonl").read_text().splitlines()) + 1   # the line an edit appends
    edit(run_dir)
    err = one_line(capsys, main(["report", str(run_dir), "--out", str(tmp_path / "rep")]))
    message = message.replace("{appended}", str(appended))
    assert f"{run_dir}/" in err and message in err, err
    assert not (tmp_path / "rep").exists()


def test_label_names_with_escape_sequences_never_reach_the_terminal_raw():
    """A table cell holding ESC / CSI sequences (a label name from a user's file) prints them escaped."""
    from dncsim.analysis.text_table import format_table

    text = format_table(["task", "value"], [["\x1b[2Jred\u202e", 1.0]], title="t\x1b]0;x\x07")
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "\\x1b[2Jred\\u202e" in text and text.splitlines()[0] == "t\\x1b]0;x\\x07"
