"""Timing helper shared by the benchmark scripts."""
import time


def best_of(fn, repeats: int) -> float:
    """The shortest wall time (seconds) of ``repeats`` calls of ``fn()`` (the least disturbed by noise)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
