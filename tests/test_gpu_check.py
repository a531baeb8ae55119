"""benchmarks/gpu_check.sh's CPU path (--dry-run: no install, two tiny CPU runs that must agree exactly, the
log), its refusal without wheels, and the metrics comparison it prints."""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


@pytest.mark.slow
def test_the_cpu_path_runs_every_stage_and_writes_the_log(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--skip-tests", "--out",
                           str(tmp_path / "runs"), "--log", str(tmp_path / "check.log")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "check.log").read_text()
    stages = [ln.split()[0] for ln in done.stdout.splitlines() if " s  exit " in ln]
    assert stages == ["environment", "quickstart-cpu", "quickstart-cpu-again"], done.stdout
    assert all(" s  exit 0 " in ln for ln in done.stdout.splitlines() if " s  exit " in ln)
    assert "max |difference| of metrics.csv, cpu against cpu-again: 0\n" in log
    assert "every stage passed" in log and " available " in log
    for run in ("quickstart-cpu", "quickstart-cpu-again"):
        assert (tmp_path / "runs" / run / "metrics.csv").stat().st_size > 0


def test_without_wheels_or_torch_it_says_what_to_run_first(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "none")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"gpu_check: no wheels in {tmp_path / 'none'} (run benchmarks/gpu_wheels.sh "
                                   f"{tmp_path / 'none'} on a machine with internet)")


def test_the_metrics_difference(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("t,task,acc,cdnv\n0,color,0.5,nan\n1,size,0.25,2.0\n")
    b.write_text("t,task,acc,cdnv\n0,color,0.5,nan\n1,size,0.375,1.5\n")
    assert gpu_check.max_difference(a, b) == 0.5
    assert gpu_check.max_difference(a, a) == 0.0
    b.write_text("t,task,acc,cdnv\n0,color,0.5,1.0\n1,size,0.25,2.0\n")         # NaN against a number
    assert math.isinf(gpu_check.max_difference(a, b))
    b.write_text("t,task,acc,cdnv\n0,color,0.5,nan\n")                           # a row missing
    assert math.isinf(gpu_check.max_difference(a, b))
