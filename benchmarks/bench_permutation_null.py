"""Cost of the permutation null of cross-task orthogonality (``permutation_null_tasks``): two 10-class
labelings of 10,000 samples in 512 dimensions, 200 relabelings, on 2 CPU threads (the issue's target:
at most 2 s), and with more tasks on the same samples. Prints the best of --repeats wall times.

    python benchmarks/bench_permutation_null.py [--n 10000] [--d 512] [--classes 10] [--draws 200] [--repeats 3]
"""
from __future__ import annotations

import argparse

import torch
from timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from dncsim.analysis.orthogonality import permutation_null_tasks


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.d, generator=g)
    for tasks in (2, 5, 10):
        y = torch.randint(0, args.classes, (tasks, args.n), generator=g)
        s = best_of(lambda: permutation_null_tasks(x, y, draws=args.draws, seed=0), args.repeats)
        print(f"{tasks:2d} tasks x {args.classes} classes, N = {args.n}, d = {args.d}, {args.draws} draws, "
              f"{args.threads} threads: {s:.2f} s")


if __name__ == "__main__":
    main()
