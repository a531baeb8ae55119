"""Training throughput: the simulator's Avalanche loop against a hand-written PyTorch loop.

One experience of SimCLR on the convnet over the default shapes data (2,880 images 3x32x32), with
the same model, data, batch size, augmentations and optimizer in both loops. Prints images/s for
each (best of --repeats, alternating) and the ratio simulator / hand-written; target <= 1.15.

    python benchmarks/bench_training.py [--repeats 3] [--epochs 1] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from dncsim.scenarios import build_scenario  # noqa: E402
from dncsim.simulator.build import build_optimizer, build_strategy  # noqa: E402
from dncsim.simulator.config import run_from_mapping  # noqa: E402


def config(epochs, batch_size):
    return run_from_mapping({"seed": 0, "objective": {"name": "simclr"}, "backbone": {"name": "convnet"},
                             "training": {"epochs": epochs, "batch_size": batch_size}})


def simulator_loop(cfg, sc):
    strategy = build_strategy(cfg, sc, torch.device("cpu"))
    exp = next(iter(sc.benchmark.train_stream))
    start = time.perf_counter()
    strategy.train(exp)
    return time.perf_counter() - start, len(strategy.experience_tensors(0)[1])


def hand_written_loop(cfg, sc):
    strategy = build_strategy(cfg, sc, torch.device("cpu"))       # same seeded model, objective, augment
    model, augment, objective = strategy.model, strategy.augment, strategy.objective
    optimizer = build_optimizer(cfg.training, model)
    x, y, t = strategy.experience_tensors(0)
    bs = cfg.training.batch_size
    model.train()
    start = time.perf_counter()
    for _ in range(cfg.training.epochs):
        order = torch.randperm(len(y))
        for k in range(len(y) // bs):
            idx = order[k * bs:(k + 1) * bs]
            xb, yb, tb = x[idx], y[idx], t[idx]
            loss = objective.loss(model.backbone, xb, yb, tb, (augment(xb), augment(xb)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            objective.after_update(model.backbone)
    return time.perf_counter() - start, len(y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = config(args.epochs, args.batch_size)
    sc = build_scenario(cfg.scenario)
    best = {"simulator": float("inf"), "hand-written": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("hand-written", hand_written_loop), ("simulator", simulator_loop)):
            seconds, n = fn(cfg, sc)
            best[name] = min(best[name], seconds)
    images = n * args.epochs
    print(f"simclr on convnet, {n} images 3x32x32, batch {args.batch_size}, {args.epochs} epoch(s), "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"  {name:<13} {seconds:7.2f} s  {images / seconds:8.0f} images/s")
    ratio = best["simulator"] / best["hand-written"]
    print(f"  ratio simulator / hand-written: {ratio:.3f}  (target <= 1.15: {'met' if ratio <= 1.15 else 'MISSED'})")


if __name__ == "__main__":
    main()
