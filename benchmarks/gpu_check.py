"""The GPU check's stages (benchmarks/gpu_check.sh installs dncsim first, then runs this).

Stages, each printed with its time: ``environment`` (torch, CUDA, the device), ``cuda-tests`` (the tests
that need a CUDA device, tests/simulator/test_device_precision.py ``-k cuda``), ``quickstart-<device>`` and
``quickstart-cpu`` (configs/quickstart.yaml, shortened with ``--set``, on the device and on the CPU), with
the largest absolute difference between the two runs' metrics.csv. ``--device cpu`` runs every stage on the
CPU (the CUDA tests skip; the two runs must agree exactly). Everything also goes to ``--log``. Exit 1 when a
stage fails or the check runs past ``--budget`` seconds.
"""
from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the quickstart cut to fit the 8-minute budget with a CPU reference run of a few cores (the full run is
#: about 1.5 minutes on two CPU cores per run)
SHORT = ["training.epochs=1", "scenario.source.train_repeats=10", "analysis.episodes=20"]


def max_difference(a: Path, b: Path) -> float:
    """Largest |x - y| over the numeric cells of two metrics tables with the same rows and columns (NaN in
    both counts as equal; a NaN against a number, or a different shape, as inf)."""
    with open(a) as fa, open(b) as fb:
        ra, rb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    if len(ra) != len(rb) or (ra and set(ra[0]) != set(rb[0])):
        return math.inf
    worst = 0.0
    for x, y in zip(ra, rb):
        for key, u in x.items():
            try:
                fu, fv = float(u), float(y[key])
            except (TypeError, ValueError):
                if u != y[key]:
                    return math.inf
                continue
            if math.isnan(fu) and math.isnan(fv):
                continue
            worst = max(worst, abs(fu - fv) if not (math.isnan(fu) or math.isnan(fv)) else math.inf)
    return worst


class Check:
    def __init__(self, log: Path, budget: float):
        self.log, self.budget, self.t0, self.failed = open(log, "w"), budget, time.perf_counter(), []

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def stage(self, name: str, argv, **extra) -> bool:
        """Run one stage's command; its output goes to the log; prints NAME, seconds, exit status."""
        self.say(f"--- {name}: {' '.join(map(str, argv))}")
        start = time.perf_counter()
        try:
            done = subprocess.run(list(map(str, argv)), cwd=ROOT, capture_output=True, text=True,
                                  timeout=max(1.0, self.left()))
            rc, out = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
        seconds = time.perf_counter() - start
        self.log.write(out if isinstance(out, str) else out.decode(errors="replace"))
        tail = [ln for ln in str(out).splitlines() if ln.strip()][-1:] or [""]
        self.say(f"{name:<18} {seconds:8.1f} s  exit {rc}  {tail[0][:160]}" + "".join(f"  {k} {v}" for k, v in
                                                                                       extra.items()))
        if rc != 0:
            self.failed.append(name)
        return rc == 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (the default) or cpu: the device of the checked run")
    p.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    p.add_argument("--set", action="append", default=None, help="KEY=VALUE for both runs (default: a shortened "
                                                                  "quickstart, " + " ".join(SHORT) + ")")
    p.add_argument("--out", default=str(ROOT / "gpu-check"), help="directory of the two runs")
    p.add_argument("--log", default=str(ROOT / "gpu-check.log"))
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all stages (default 8 minutes)")
    p.add_argument("--skip-tests", action="store_true", help="leave out the cuda-tests stage")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    check = Check(Path(args.log), args.budget)
    python = sys.executable
    env_code = ("import torch, dncsim; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available',"
                " torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-',"
                " 'dncsim', dncsim.__file__)")
    if not check.stage("environment", [python, "-c", env_code]):
        return 1
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            check.say(f"gpu check: --device {args.device} but torch {torch.__version__} sees no CUDA device")
            return 1
    if not args.skip_tests:
        check.stage("cuda-tests", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not reproduction",
                                   "tests/simulator/test_device_precision.py", "-k", "cuda"])
    overrides = args.set if args.set is not None else SHORT
    sets = [a for kv in overrides for a in ("--set", kv)]
    runs = {}
    for device in dict.fromkeys([args.device, "cpu"]) if args.device != "cpu" else ["cpu", "cpu-again"]:
        run_dir = out / f"quickstart-{device}"
        ok = check.stage(f"quickstart-{device}", [python, "-m", "dncsim", "run", args.config, *sets, "--set",
                                                   f"device={device.replace('-again', '')}", "--out", run_dir,
                                                   "--force"])
        if ok:
            runs[device] = run_dir / "metrics.csv"
    if len(runs) == 2:
        (first, a), (second, b) = runs.items()
        diff = max_difference(a, b)
        check.say(f"max |difference| of metrics.csv, {first} against {second}: {diff:.3g}")
        if args.device == "cpu" and diff != 0:
            check.say("gpu check: two CPU runs of one config differ")
            check.failed.append("determinism")
    total = time.perf_counter() - check.t0
    check.say(f"total {total:.1f} s of {args.budget:.0f}; " + (f"failed: {', '.join(check.failed)}" if check.failed
                                                              else "every stage passed"))
    return 1 if check.failed or total > args.budget else 0


if __name__ == "__main__":
    sys.exit(main())
