"""The numbers a shipped config's header states about its run, checked against a run of it.

A header states them in lines the checker reads (every other comment line states no measured result):

    # expect: linear refit accuracy of size after size = 0.90 ± 0.05
    # expect: linear frozen accuracy of color after the last experience = 0.23 ± 0.10
    # expect: linear refit accuracy of color before training = 1.00 ± 0.05
    # expect: learned: color, size, style; not learned: shape

"after size": right after the experience named size (the factor stream names experiences by the
attribute that varies); accuracies are the test accuracies of accuracy.json; "learned" is the run's own
judgement (the ``learned`` rows). tests/simulator/test_config_claims.py runs quickstart.yaml and checks
its lines; this script does the same for any config and prints the measured values:

    python benchmarks/config_claims.py configs/quickstart.yaml [--run RUN_DIR]

It runs the config into RUN_DIR (a new temporary directory by default; a finished run there is read as
it is) and exits 1 when a claim fails.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import List

_ACCURACY = re.compile(r"(?P<probe>ncc|linear) (?P<protocol>refit|frozen) accuracy of (?P<task>\S+) "
                       r"(?P<after>before training|after the last experience|after \S+) = (?P<value>[0-9.]+) ± "
                       r"(?P<tol>[0-9.]+)")
_LEARNED = re.compile(r"learned: (?P<yes>[^;]*); not learned: (?P<no>.*)")
PREFIX = "# expect: "


def parse_claims(path) -> List[dict]:
    """The ``# expect:`` lines of a config file, parsed; ValueError naming the file and line otherwise."""
    claims = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.startswith(PREFIX):
            continue
        text = line[len(PREFIX):].strip()
        if m := _ACCURACY.fullmatch(text):
            claims.append({"kind": "accuracy", "line": n, "text": text, "probe": m["probe"],
                           "protocol": m["protocol"], "task": m["task"], "after": m["after"].removeprefix("after "),
                           "value": float(m["value"]), "tol": float(m["tol"])})
        elif m := _LEARNED.fullmatch(text):
            split = [[s.strip() for s in part.split(",") if s.strip()] for part in (m["yes"], m["no"])]
            claims.append({"kind": "learned", "line": n, "text": text, "learned": split[0], "not_learned": split[1]})
        else:
            raise ValueError(f"{path}:{n}: not a claim this checker reads: {text!r}")
    return claims


def measurements(run_dir) -> dict:
    """What the claims are checked against: accuracy.json's tasks and matrices, the experiences' names
    and each task's learned flag (None where the run did not decide it)."""
    from dncsim.rundir import load_run
    run = load_run(run_dir)
    acc = json.loads((Path(run_dir) / "accuracy.json").read_text())
    return {"tasks": acc["tasks"], "matrices": acc["matrices"],
            "experiences": [e["name"] for e in run.training_inputs["experiences"]],
            "learned": [run.learned(k) for k in range(run.T)]}


def check(claims: List[dict], measured: dict) -> List[dict]:
    """Each claim with ``measured`` (the value, or the learned and not-learned task lists) and ``ok``."""
    out = []
    for c in claims:
        if c["kind"] == "accuracy":
            row = {"before training": 0, "the last experience": len(measured["experiences"])}.get(c["after"])
            row = measured["experiences"].index(c["after"]) + 1 if row is None else row
            value = measured["matrices"][f"{c['probe']}/{c['protocol']}"][row][measured["tasks"].index(c["task"])]
            out.append({**c, "measured": value, "ok": value is not None and abs(value - c["value"]) <= c["tol"]})
        else:
            flags = dict(zip(measured["tasks"], measured["learned"]))
            got = ([t for t in c["learned"] + c["not_learned"] if flags.get(t)],
                   [t for t in c["learned"] + c["not_learned"] if flags.get(t) is False])
            out.append({**c, "measured": got, "ok": got == (c["learned"], c["not_learned"])})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--run", default=None, help="run directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    claims = parse_claims(args.config)
    if not claims:
        print(f"{args.config}: no '# expect:' lines")
        return 0
    run_dir = Path(args.run) if args.run else Path(tempfile.mkdtemp(prefix="config-claims-")) / "run"
    manifest = run_dir / "manifest.json"
    if not (manifest.is_file() and json.loads(manifest.read_text()).get("status") == "finished"):
        from dncsim.simulator.config import load_run_config
        from dncsim.simulator.run import run
        run(load_run_config(args.config, ["output.report=false"]), run_dir)
    results = check(claims, measurements(run_dir))
    for r in results:
        measured = f"{r['measured']:.3f}" if r["kind"] == "accuracy" and r["measured"] is not None else r["measured"]
        print(f"{'ok  ' if r['ok'] else 'FAIL'} line {r['line']}: {r['text']}  (measured {measured})")
    print(f"run directory: {run_dir}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
