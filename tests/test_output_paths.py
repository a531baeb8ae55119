"""Writes respect what is there: the atomic writer replaces only a regular file (or creates one); a
user-chosen output file (`analyze --json`, `stats --json`, `scenario --png`, `report --out`) that is
a device, a FIFO, a directory or a symbolic link is refused in one line naming the path and what it
is (exit 2), and afterwards is exactly what it was; `-` and `/dev/stdout` write to standard output."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dncsim.common import DncsimError, WriteFailed, atomic_write_bytes, atomic_write_json, output_file
from dncsim.simulator.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "multitask_features.npz"
ANALYZE = ["analyze", str(EXAMPLE), "--labels", "color,shape", "--shots", "5", "--episodes", "5"]


def state(path: Path):
    """What is at ``path``, to compare before and after: its kind, and a link's target or a file's bytes."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "link", os.readlink(path), Path(path).resolve().read_bytes()
    if stat.S_ISDIR(st.st_mode):
        return "dir", sorted(p.name for p in Path(path).iterdir())
    if stat.S_ISREG(st.st_mode):
        return "file", Path(path).read_bytes()
    return stat.S_IFMT(st.st_mode), st.st_ino, getattr(st, "st_rdev", 0)


def make(kind: str, tmp_path: Path) -> Path:
    """A path in tmp_path that is ``kind``: a symlink to a file, a directory, a FIFO, or a character
    device (the same device as /dev/null, made with mknod: the tests run as root in CI)."""
    p = tmp_path / f"out_{kind}"
    if kind == "symlink":
        (tmp_path / "target.json").write_text('{"keep": true}\n')
        p.symlink_to(tmp_path / "target.json")
    elif kind == "directory":
        p.mkdir()
        (p / "inside.txt").write_text("inside\n")
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "device":
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return p


KINDS = {"symlink": "a symbolic link", "directory": "a directory", "fifo": "a FIFO (named pipe)",
         "device": "a character device"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_atomic_writer_replaces_nothing_but_a_regular_file(tmp_path, kind):
    p = make(kind, tmp_path)
    before = state(p)
    for write in (lambda: atomic_write_bytes(p, b"new"), lambda: atomic_write_json(p, {"new": 1})):
        with pytest.raises(WriteFailed) as err:
            write()
        assert str(err.value) == f"{p}: is {KINDS[kind]}, not a regular file; not replaced (dncsim writes only " \
                                 f"regular files)"
        assert err.value.exit_code == 1
    assert state(p) == before
    if kind == "symlink":
        assert (tmp_path / "target.json").read_text() == '{"keep": true}\n'
    assert not [q for q in tmp_path.iterdir() if q.name.endswith(".tmp")]        # no temporary file left


def test_the_atomic_writer_still_replaces_a_regular_file_and_creates_a_new_one(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2} and stat.S_ISREG(os.lstat(p).st_mode)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.json"]


def test_output_file_reads_standard_output_names_and_refuses_the_rest(tmp_path):
    assert output_file("-", "--json") is None and output_file("/dev/stdout", "--json") is None
    assert output_file(tmp_path / "new.json", "--json") == tmp_path / "new.json"
    for kind, what in KINDS.items():
        p = make(kind, tmp_path)
        with pytest.raises(DncsimError) as err:
            output_file(p, "--json")
        assert str(err.value) == f"--json: {p} is {what}, not a regular file; give a file path (or - for standard " \
                                 f"output)"
        assert err.value.exit_code == 2
    with pytest.raises(DncsimError, match="^--json: an empty path"):
        output_file("", "--json")
    with pytest.raises(DncsimError, match="^--json: directory .*nowhere does not exist"):
        output_file(tmp_path / "nowhere" / "x.json", "--json")


def refused(capsys, argv, path, what):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"{path} is {what}, not a regular file" in err[0] and "Traceback" not in captured.err


@pytest.mark.parametrize("kind", list(KINDS))
def test_analyze_and_stats_refuse_a_json_path_that_is_not_a_regular_file(tmp_path, study_dir, capsys,  # noqa: F811
                                                                          kind):
    p = make(kind, tmp_path)
    before = state(p)
    refused(capsys, [*ANALYZE, "--json", str(p)], p, KINDS[kind])
    refused(capsys, ["stats", str(study_dir), "--json", str(p)], p, KINDS[kind])
    refused(capsys, ["scenario", str(ROOT / "configs" / "quickstart.yaml"), "--png", str(p)], p, KINDS[kind])
    assert state(p) == before


def test_dev_null_stays_a_character_device(study_dir, capsys):  # noqa: F811
    before = os.lstat("/dev/null")
    try:
        refused(capsys, [*ANALYZE, "--json", "/dev/null"], "/dev/null", "a character device")
        refused(capsys, ["stats", str(study_dir), "--json", "/dev/null"], "/dev/null", "a character device")
        with pytest.raises(WriteFailed, match="^/dev/null: is a character device"):
            atomic_write_json("/dev/null", {"x": 1})
    finally:
        after = os.lstat("/dev/null")
        if not stat.S_ISCHR(after.st_mode):        # a regression must not leave the machine without /dev/null
            os.remove("/dev/null")
            os.mknod("/dev/null", stat.S_IFCHR | 0o666, before.st_rdev)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


def test_report_out_that_is_not_a_directory_and_report_files_that_are_links(tmp_path, capsys):
    (tmp_path / "file").write_text("keep\n")
    assert main(["report", str(tmp_path / "norun"), "--out", str(tmp_path / "file")]) == 2
    assert "no such run directory" in capsys.readouterr().err          # the run is checked first
    from tests.support.hostile import hostile_run
    run = hostile_run(tmp_path / "run")
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out: {tmp_path / 'file'} is a regular file, not a directory" in err[0]
    assert (tmp_path / "file").read_text() == "keep\n"
    out = tmp_path / "rep"
    out.mkdir()
    (tmp_path / "victim.html").write_text("victim\n")
    (out / "index.html").symlink_to(tmp_path / "victim.html")
    assert main(["report", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out / 'index.html'} is a symbolic link, not a regular file" in err[0]
    assert (tmp_path / "victim.html").read_text() == "victim\n" and (out / "index.html").is_symlink()
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]        # nothing half-written


def run_cli(cwd, *args):
    p = subprocess.run([sys.executable, "-m", "dncsim", *args], capture_output=True, cwd=cwd, timeout=300)
    return p.returncode, p.stdout, p.stderr.decode()


@pytest.mark.parametrize("command", ["analyze", "stats"])
@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_json_to_standard_output_on_purpose(name, command, study_dir, tmp_path):  # noqa: F811
    link = os.readlink("/dev/stdout")
    try:
        if command == "analyze":
            code, out, err = run_cli(tmp_path, *ANALYZE, "--json", name)
            assert code == 0, err
            result = json.loads(out)                         # standard output is the JSON alone
            assert list(result["labelings"]) == ["color", "shape"] and result["file"] == str(EXAMPLE)
            assert "Geometry" in err                         # the tables went to stderr
        else:
            code, out, err = run_cli(tmp_path, "stats", str(study_dir), "--json", name)
            assert code == 0, err
            assert json.loads(out)["primary"]["n_runs"] == 16 and err.startswith("Verdict: ")
        assert "wrote" not in err + out.decode()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]          # no file named "-"
    finally:
        if not os.path.islink("/dev/stdout"):       # a regression must not leave the machine without it
            os.remove("/dev/stdout")
            os.symlink(link, "/dev/stdout")
    assert os.readlink("/dev/stdout") == link                  # the link was not replaced
