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


def best_cpu_of(fn, repeats: int) -> float:
    """The shortest process CPU time (seconds, all threads) of ``repeats`` calls of ``fn()``: on a shared
    machine, the work done, where the wall time also counts the other processes' turns."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best
