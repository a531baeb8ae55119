"""Cost of keeping two checkpoint generations: the quickstart run's checkpoint written as the run
writes it (the previous generation kept by a rename, the new one written atomically and hashed for
the manifest) against one plain atomic write of the same bytes.

    python benchmarks/bench_checkpoint.py [--config configs/quickstart.yaml] [--repeats 5]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import tempfile
import time
from pathlib import Path

import torch
from timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from dncsim.common import atomic_write_bytes
from dncsim.rundir import RunDirectory
from dncsim.simulator.build import build_run
from dncsim.simulator.config import load_run_config
from dncsim.simulator.run import checkpoint_state


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        rd = RunDirectory(Path(tmp) / "run")
        rd.prepare(RunDirectory.FRESH)
        parts = build_run(load_run_config(args.config), rd)
        state = checkpoint_state(parts, 1, 0.0)
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        generations = rd.save_checkpoint(state)

        def two_generations():
            nonlocal generations
            generations = rd.save_checkpoint(state, generations)

        def one_plain_write():
            atomic_write_bytes(Path(tmp) / "plain.pt", data)

        def serialise():
            torch.save(state, io.BytesIO())

        t_two, t_one, t_ser = (best_of(f, args.repeats) for f in (two_generations, one_plain_write, serialise))
        start = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        t_hash = time.perf_counter() - start
        on_disk = sum(p.stat().st_size for p in rd.path.glob("checkpoint*.pt"))
    print(f"checkpoint of {args.config}: {len(data) / 1e6:.2f} MB")
    print(f"two generations (serialise + rename + atomic write + SHA-256): {1000 * t_two:.1f} ms")
    print(f"one plain atomic write of the same bytes:                    {1000 * t_one:.1f} ms")
    print(f"  of which serialising the state: {1000 * t_ser:.1f} ms; SHA-256: {1000 * t_hash:.1f} ms")
    print(f"extra time per experience: {1000 * (t_two - t_one - t_ser):.1f} ms; disk: {on_disk / 1e6:.2f} MB "
          f"({on_disk / len(data):.1f}x one checkpoint)")


if __name__ == "__main__":
    main()
