"""Bias of the plug-in and crossfit estimators of directional CDNV and CDNV, measured on classes whose
population values are known: C isotropic Gaussian classes (sigma = 1) in d dimensions with every pair
of means at squared distance --gap2, so the population directional CDNV is 1/gap2 for every ordered
pair and the CDNV 2d/gap2. For samples per class / d in {0.25, 1, 4}, over --replicates data sets, it
prints the mean relative bias (mean estimate / population - 1) of each estimator. The table of
docs/methods/estimators.md is this script's output.

    python benchmarks/bench_estimators.py [--d 64] [--classes 4] [--gap2 16] [--replicates 200]
"""
from __future__ import annotations

import argparse
import math

import torch

from dncsim.analysis import class_geometry
from dncsim.analysis.estimators import crossfit_geometry


def classes(n, d, C, gap2, g):
    means = torch.zeros(C, d, dtype=torch.float64)
    for c in range(C):
        means[c, c] = math.sqrt(gap2 / 2)            # orthogonal offsets: every pair at squared distance gap2
    x = torch.randn(n * C, d, generator=g, dtype=torch.float64) + means.repeat_interleave(n, 0)
    return x, torch.arange(C).repeat_interleave(n)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--gap2", type=float, default=16.0)
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--ratios", default="0.25,1,4")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    d, C, gap2 = args.d, args.classes, args.gap2
    truth = {"dir_cdnv": 1 / gap2, "cdnv": 2 * d / gap2}
    print(f"isotropic Gaussian classes: C={C}, d={d}, squared gap {gap2:g}; population dir-CDNV "
          f"{truth['dir_cdnv']:.4g}, CDNV {truth['cdnv']:.4g}; {args.replicates} replicates each")
    print(f"{'n/d':>5} {'n per class':>11} | {'plug-in dir-CDNV':>16} {'crossfit dir-CDNV':>17} | "
          f"{'plug-in CDNV':>12} {'crossfit CDNV':>13}")
    for ratio in (float(r) for r in args.ratios.split(",")):
        n = max(4, int(round(ratio * d)))
        g = torch.Generator().manual_seed(int(ratio * 1000))
        sums = {k: 0.0 for k in ("pd", "cd", "pc", "cc")}
        for r in range(args.replicates):
            x, y = classes(n, d, C, gap2, g)
            p = class_geometry(x, y).summary()
            c = crossfit_geometry(x, y, seed=r).summary()
            sums["pd"] += p["dir_cdnv"]
            sums["pc"] += p["cdnv"]
            sums["cd"] += c["dir_cdnv"]
            sums["cc"] += c["cdnv"]
        bias = {k: v / args.replicates / truth["dir_cdnv" if k.endswith("d") else "cdnv"] - 1 for k, v in sums.items()}
        print(f"{ratio:>5g} {n:>11} | {100 * bias['pd']:>+15.1f}% {100 * bias['cd']:>+16.1f}% | "
              f"{100 * bias['pc']:>+11.1f}% {100 * bias['cc']:>+12.1f}%")


if __name__ == "__main__":
    main()
