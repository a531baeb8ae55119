"""Speed of the ``shapes`` generator: 10,000 images at 32x32 with the default nuisance.

Times ``generate_shapes`` (best of --repeats) for about --images images of the default labelings
(4 shapes x 4 colors x 3 sizes x 2 styles, repeats rounded up to reach the count) and prints images
per second and whether the target (10,000 images in under 2 s) is met.

    python benchmarks/bench_shapes.py [--images 10000] [--image-size 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import math
import os

import torch

from timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from dncsim.scenarios.shapes import ShapesConfig, generate_shapes  # noqa: E402

TARGET_SECONDS = 2.0
TARGET_IMAGES = 10_000



def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=TARGET_IMAGES)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count())
    cfg = ShapesConfig(image_size=args.image_size)
    cells = math.prod(len(v) for v in cfg.label_names().values())
    per_cell = math.ceil(args.images / cells)
    n = cells * per_cell
    seconds = best_of(lambda: generate_shapes(cfg, per_cell, seed=0), args.repeats)
    per_10k = seconds * TARGET_IMAGES / n
    print(f"shapes: {n} images {args.image_size}x{args.image_size} ({cells} cells x {per_cell}), "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"  {seconds:.3f} s  ->  {n / seconds:,.0f} images/s  ({per_10k:.3f} s per 10,000)")
    verdict = "met" if per_10k < TARGET_SECONDS else "NOT met"
    print(f"  target: 10,000 images in < {TARGET_SECONDS:.0f} s: {verdict}")


if __name__ == "__main__":
    main()
