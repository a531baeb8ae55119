"""Speed of class_geometry + the Theorem 4.1 bound at 8 shot counts, against a per-pair loop and a GEMM.

Sizes, float32 features: the paper's few-shot scale (C=100, d=512, N=20,000), ImageNet-1k validation
scale (C=1000, d=768, N=50,000) and, on request, c250 (C=250, d=768, N=12,500: a quarter of its
classes). For float64 and float32 accumulation it prints the best of --repeats timings, the ratio to
a straightforward per-pair Python loop computing the same quantities, and the ratio to the single
(N x d)(d x C) matrix product in the same precision (a lower bound: the residual-by-means product is
unavoidable). Targets at ImageNet scale: <= 2 s (float64), <= 1 s (float32), and within 2x of that
product. Then the summary of each of --estimators (analysis.estimators.estimate_geometry; the
default estimator first) against the plug-in summary (class_geometry(...).summary()), float32
features, in wall and in process CPU time: target for the default at ImageNet scale <= 3x in both.

    python benchmarks/bench_geometry.py [--sizes small,imagenet] [--repeats 3] [--loop-pairs 10000]
                                        [--estimators debiased,crossfit] [--skip-geometry] [--max-memory-gb G]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from timing import best_cpu_of, best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from dncsim.analysis import class_geometry, ncc_error_bound  # noqa: E402
from dncsim.analysis.estimators import estimate_geometry  # noqa: E402

SIZES = {"small": (100, 512, 20_000), "c250": (250, 768, 12_500), "imagenet": (1000, 768, 50_000)}
SHOTS = [1, 5, 10, 20, 50, 100, 200, 500]
TARGETS = {torch.float64: 2.0, torch.float32: 1.0}


def make_data(C, d, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, d, generator=g) * 0.5
    y = torch.arange(N) % C
    x = means[y] + torch.randn(N, d, generator=g) * torch.rand(d, generator=g)
    return x.float(), y



def vectorised(x, y, dtype):
    g = class_geometry(x, y, ddof=1, dtype=dtype)
    return ncc_error_bound(g, SHOTS, extrapolate=True)


def per_pair_loop(x, y, dtype, max_pairs):
    """The straightforward implementation: per-class blocks, then one step per ordered pair."""
    x = x.to(dtype)
    classes = torch.unique(y)
    blocks = [x[y == c] for c in classes]
    means = [b.mean(0) for b in blocks]
    res = [b - m for b, m in zip(blocks, means)]
    v = [float(r.square().sum() / (len(r) - 1)) for r in res]
    m4 = [float(r.square().sum(1).square().mean()) for r in res]
    C = len(classes)
    pairs = [(i, j) for i in range(C) for j in range(C) if i != j]
    step = max(1, len(pairs) // max_pairs)
    sample = pairs[::step][:max_pairs]
    t = time.perf_counter()
    for i, j in sample:
        delta = means[j] - means[i]
        d2 = float(delta @ delta)
        proj = res[i] @ delta
        _dir = float(proj.square().sum()) / (len(res[i]) - 1) / d2 ** 2
        _cdnv = (v[i] + v[j]) / d2
        _theta = (m4[i] + m4[j]) / d2 ** 2
    per_pair = (time.perf_counter() - t) / len(sample)
    return per_pair * len(pairs), len(sample), len(pairs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,imagenet")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-pairs", type=int, default=10000, help="pairs timed in the loop (then extrapolated)")
    ap.add_argument("--estimators", default="debiased,crossfit",
                    help="estimators timed against the plug-in summary; the first is the default")
    ap.add_argument("--skip-geometry", action="store_true", help="only the estimators' table")
    ap.add_argument("--max-memory-gb", type=float, default=0,
                    help="cap the process's address space (an estimator that needs more fails, reported)")
    args = ap.parse_args()
    if args.max_memory_gb:
        import resource
        cap = int(args.max_memory_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    if not args.skip_geometry:
        geometry_table(args)
    estimator_table(args)


def geometry_table(args):
    print(f"{'size':<9} {'accum':<8} {'geometry+bound':>15} {'matmul':>8} {'vs matmul':>10} "
          f"{'per-pair loop':>14} {'speed-up':>9}  target")
    for name in args.sizes.split(","):
        C, d, N = SIZES[name]
        x, y = make_data(C, d, N)
        for dtype in (torch.float64, torch.float32):
            vectorised(x, y, dtype)                               # warm-up
            t_vec = best_of(lambda: vectorised(x, y, dtype), args.repeats)
            xd, md = x.to(dtype), torch.randn(C, d, dtype=dtype)
            t_mm = best_of(lambda: xd @ md.T, args.repeats)
            t_loop, timed, total = per_pair_loop(x, y, dtype, args.loop_pairs)
            loop_txt = f"{t_loop:.1f} s" + ("" if timed == total else "*")
            verdict = ""
            if name == "imagenet":
                ok = t_vec <= TARGETS[dtype] and t_vec <= 2 * t_mm
                verdict = f"{'met' if ok else 'MISSED'} (<= {TARGETS[dtype]:.0f} s, <= 2x matmul)"
            print(f"{name:<9} {str(dtype).replace('torch.', ''):<8} {t_vec:>13.3f} s {t_mm:>6.3f} s "
                  f"{t_vec / t_mm:>9.2f}x {loop_txt:>14} {t_loop / t_vec:>8.0f}x  {verdict}")
    print("* loop time extrapolated from the pairs timed (--loop-pairs) to all C(C-1) ordered pairs\n")


def estimator_table(args):
    """Each estimator's summary over the plug-in summary's: best of --repeats after a warm-up, in wall time
    and in process CPU time (the work, on a shared machine)."""
    names = args.estimators.split(",")
    print(f"{'size':<9} {'estimator':<10} {'plug-in wall / CPU':>19} {'estimator wall / CPU':>21} "
          f"{'ratio wall / CPU':>17}  target")
    for size in args.sizes.split(","):
        C, d, N = SIZES[size]
        x, y = make_data(C, d, N)
        plug = lambda: class_geometry(x, y).summary()  # noqa: E731
        plug()                                                          # warm-up
        w_plug, c_plug = best_of(plug, args.repeats), best_cpu_of(plug, args.repeats)
        for k, est in enumerate(names):
            run = lambda: estimate_geometry(x, y, estimator=est).summary()  # noqa: E731
            try:
                run()                                                   # warm-up
                w_est, c_est = best_of(run, args.repeats), best_cpu_of(run, args.repeats)
            except (RuntimeError, MemoryError) as exc:                  # torch's allocation failure is a RuntimeError
                why = str(exc).splitlines()[0][:80]
                print(f"{size:<9} {est:<10} {w_plug:>7.2f} / {c_plug:>7.2f} s   failed: {why}")
                continue
            verdict = ""
            if size == "imagenet" and k == 0:
                ok = max(w_est / w_plug, c_est / c_plug) <= 3
                verdict = f"{'met' if ok else 'MISSED'} (default <= 3x)"
            print(f"{size:<9} {est:<10} {w_plug:>7.2f} / {c_plug:>7.2f} s {w_est:>8.2f} / {c_est:>8.2f} s "
                  f"{w_est / w_plug:>7.2f}x / {c_est / c_plug:>5.2f}x  {verdict}")

if __name__ == "__main__":
    main()
