"""How fast the CLI answers : wall time of whole processes.

Targets on this 2-core machine: ``dncsim --help`` at most 0.8 s, a bad config's one-line error at
most 1.5 s, ``dncsim analyze examples/multitask_features.npz`` within 1.5x of ``python -c "import
torch"``. Each command is run --repeats times (default 5) and the minimum is printed, the time least
disturbed by other load. ``analyze`` is also timed with one torch thread (OMP_NUM_THREADS=1): on a
machine whose cores are busy with other work, torch's intra-op threads wait for each other on every
parallel operation, and the difference between the two lines is that wait, not the command.

    python benchmarks/bench_cli.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import best_of

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "multitask_features.npz"
SCRIPT = Path(sys.executable).with_name("dncsim")   # the console script next to this Python, else python -m
DNCSIM = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "dncsim"]


def command(argv, expect: int, env=None):
    """A callable running ``argv`` to completion, checking its exit status."""
    def go():
        p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        if p.returncode != expect:
            raise SystemExit(f"{' '.join(map(str, argv))}: exit {p.returncode}, expected {expect}\n{p.stderr}")
    return go


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text("training: {epochs: -1}\n")
        one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
        cases = [
            ("dncsim --help", command([*DNCSIM, "--help"], 0), 0.8),
            ("dncsim run --help", command([*DNCSIM, "run", "--help"], 0), 0.8),
            ("dncsim run bad.yaml (exit 2)", command([*DNCSIM, "run", str(bad)], 2), 1.5),
            ('python -c "import torch"', command([sys.executable, "-c", "import torch"], 0), None),
            ("dncsim analyze example", command([*DNCSIM, "analyze", str(EXAMPLE)], 0), None),
            ("  the same, 1 torch thread", command([*DNCSIM, "analyze", str(EXAMPLE)], 0, one_thread), None),
        ]
        times = {}
        for name, fn, target in cases:
            times[name] = t = best_of(fn, args.repeats)
            verdict = "" if target is None else f"  (target <= {target} s: {'ok' if t <= target else 'MISSED'})"
            print(f"{name:32s} {t:6.2f} s{verdict}", flush=True)
    torch_s = times['python -c "import torch"']
    for name in ("dncsim analyze example", "  the same, 1 torch thread"):
        ratio = times[name] / torch_s
        print(f"{name.strip() + ' / import torch':40s} {ratio:5.2f}x  (target <= 1.5x: "
              f"{'ok' if ratio <= 1.5 else 'MISSED'})")
    print(f"min of {args.repeats} runs each; {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
