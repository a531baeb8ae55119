"""Training throughput: the simulator's Avalanche loop against a hand-written PyTorch loop, per backbone.

One experience of SimCLR over the default shapes data (2,880 images 3x32x32) on the quickstart backbone
(``convnet``) and on ResNet-18 at 32x32 (its CIFAR stem), on whatever device is present (CUDA when
available), with the same model, data (on the device), batch size, augmentations, optimizer and
precision in both loops. Prints images/s for each loop (best of --repeats, the loops alternating) and
the ratio of their times, simulator / hand-written; target <= 1.10. ResNet-18 trains on the first
--resnet-batches mini-batches only (on a CPU one of them takes seconds).

    python benchmarks/bench_training.py [--repeats 3] [--models convnet,resnet18] [--resnet-batches 3]
                                        [--batch-size 128] [--epochs 1] [--device auto] [--precision fp32]
                                        [--threads N] [--nondeterministic]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import time

import torch

from dncsim.scenarios import build_scenario
from dncsim.simulator.build import build_optimizer, build_strategy, resolve_device
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.devices import check_precision, configure_device, deterministic_environment
from dncsim.simulator.template import AUTOCAST_DTYPES

TARGET = 1.10
BACKBONES = {"convnet": {"name": "convnet"}, "resnet18": {"name": "resnet18"}}


def config(backbone: str, epochs: int, batch_size: int, precision: str, device: str, deterministic: bool):
    return run_from_mapping({"seed": 0, "device": device, "objective": {"name": "simclr"},
                             "backbone": BACKBONES[backbone],
                             "training": {"epochs": epochs, "batch_size": batch_size, "precision": precision,
                                          "deterministic": deterministic}})


def strategy_for(cfg, sc, device, batches):
    """A freshly seeded strategy whose experience 0 is cut to its first ``batches`` mini-batches (all: None)."""
    strategy = build_strategy(cfg, sc, device)
    tensors = strategy.experience_tensors(0)          # on the device, before the clock starts
    if batches is not None:
        n = batches * cfg.training.batch_size
        strategy.experience_tensors._cache[0] = tuple(v[:n] for v in tensors)
    gc.collect()                                      # the previous loop's garbage, not inside the timing
    return strategy


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def simulator_loop(cfg, sc, device, batches):
    strategy = strategy_for(cfg, sc, device, batches)
    exp = next(iter(sc.benchmark.train_stream))
    sync(device)
    start = time.perf_counter()
    strategy.train(exp)
    sync(device)
    return time.perf_counter() - start, len(strategy.experience_tensors(0)[1])


def hand_written_loop(cfg, sc, device, batches):
    strategy = strategy_for(cfg, sc, device, batches)      # same seeded model, objective, augment, data
    model, augment, objective = strategy.model, strategy.augment, strategy.objective
    optimizer = build_optimizer(cfg.training, model)
    dtype = AUTOCAST_DTYPES.get(cfg.training.precision)
    scaler = torch.amp.GradScaler(device.type) if cfg.training.precision == "fp16" else None
    x, y, t = strategy.experience_tensors(0)
    bs = cfg.training.batch_size
    model.train()
    sync(device)
    start = time.perf_counter()
    for _ in range(cfg.training.epochs):
        order = torch.randperm(len(y)).to(x.device)
        for k in range(len(y) // bs):
            idx = order[k * bs:(k + 1) * bs]
            xb, yb, tb = x[idx], y[idx], t[idx]
            optimizer.zero_grad()
            views = (augment(xb), augment(xb))
            with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
                loss = objective.loss(model.backbone, xb, yb, tb, views)
            if scaler is None:
                loss.float().backward()
                optimizer.step()
            else:
                scaler.scale(loss.float()).backward()
                scaler.step(optimizer)
                scaler.update()
            objective.after_update(model.backbone)
    sync(device)
    return time.perf_counter() - start, len(y)


def bench(name, cfg, sc, device, batches, repeats):
    """(images, best seconds per loop) of ``repeats`` alternating runs of both loops."""
    best = {"simulator": float("inf"), "hand-written": float("inf")}
    loops = [("hand-written", hand_written_loop), ("simulator", simulator_loop)]
    for r in range(repeats):
        for label, fn in (loops if r % 2 == 0 else loops[::-1]):     # alternate which goes first
            seconds, n = fn(cfg, sc, device, batches)
            best[label] = min(best[label], seconds)
    return n * cfg.training.epochs, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--models", default="convnet,resnet18", help="comma-separated: convnet, resnet18")
    ap.add_argument("--resnet-batches", type=int, default=3, help="mini-batches of ResNet-18 per loop (0: all)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")
    ap.add_argument("--nondeterministic", action="store_true", help="CUDA: training.deterministic false")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in BACKBONES]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; choose from {', '.join(BACKBONES)}")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    deterministic = not args.nondeterministic
    deterministic_environment(deterministic, args.device)
    device = resolve_device(args.device)
    check_precision(args.precision, device)
    configure_device(device, deterministic)
    sc = None
    where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else \
        f"cpu, {torch.get_num_threads()} threads"
    print(f"simclr, one experience, batch {args.batch_size}, {args.epochs} epoch(s), {args.precision}, {where}, "
          f"best of {args.repeats}; ratio = simulator time / hand-written time (target <= {TARGET:.2f})")
    for name in models:
        cfg = config(name, args.epochs, args.batch_size, args.precision, args.device, deterministic)
        sc = sc or build_scenario(cfg.scenario)
        batches = (args.resnet_batches or None) if name == "resnet18" else None
        images, best = bench(name, cfg, sc, device, batches, args.repeats)
        ratio = best["simulator"] / best["hand-written"]
        shape = "x".join(str(s) for s in sc.source.input_shape)
        rates = "  ".join(f"{label} {images / s:7.1f} images/s ({s:.2f} s)" for label, s in best.items())
        print(f"  {name:<9} {images} images {shape}: {rates}  ratio {ratio:.3f} "
              f"({'met' if ratio <= TARGET else 'MISSED'})")


if __name__ == "__main__":
    main()
