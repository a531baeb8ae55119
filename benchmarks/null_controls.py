"""Rates of the verdict "orthogonal beyond the null" (``permutation_null_tasks``, a 5% test) on the
control designs of tests/analysis/test_permutation_null.py, over more replicates than the suite runs:
signal-free isotropic and 1/k-spectrum features, shuffled labels, other tasks' geometry (all should be
at most 5% up to sampling noise) and labelings that move their own subspaces (should be near 100%); and
how often the random-direction rule passes signal-free features.

    python benchmarks/null_controls.py [--replicates 1000] [--draws 99]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "analysis"))
import test_permutation_null as designs  # noqa: E402  (the suite's designs, one definition)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=99)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    designs.REPLICATES, designs.DRAWS = args.replicates, args.draws

    def shuffled(gen):
        y = designs.factorial_labels(gen)
        return designs.own_subspaces(gen, y), y[:, torch.randperm(y.shape[1], generator=gen)]

    def other(gen):
        x = designs.own_subspaces(gen, designs.factorial_labels(gen))
        return x, designs.factorial_labels(gen)

    def own(gen):
        y = designs.factorial_labels(gen)
        return designs.own_subspaces(gen, y), y

    cases = [("signal-free isotropic", designs._signal_free("isotropic")),
             ("signal-free 1/k", designs._signal_free("1/k")), ("labels shuffled", shuffled),
             ("other tasks' geometry", other), ("own subspaces (positive)", own)]
    n = args.replicates
    for k, (name, design) in enumerate(cases):
        r = designs.rate(design, 1000 + k)
        print(f"{name:28s} beyond the null {r:.3f} (± {1.96 * math.sqrt(r * (1 - r) / n):.3f}, {n} replicates)")
    for spectrum in ("isotropic", "1/k"):
        gen = torch.Generator().manual_seed(2000)
        passes = 0
        for _ in range(n):
            y = designs.factorial_labels(gen)
            passes += designs.old_rule(designs.noise(gen, y.shape[1], spectrum=spectrum), y)
        print(f"random-direction rule passes signal-free {spectrum} features: {passes / n:.3f}")


if __name__ == "__main__":
    main()
