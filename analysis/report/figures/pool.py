"""The render pool: a report's figures drawn to PNG bytes, by forked worker processes where that pays."""
from __future__ import annotations

import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from dncsim.analysis.report.figures.plotting import plotting, png_bytes

__all__ = ["render", "can_fork", "default_processes", "MIN_PARALLEL"]

#: the figures :func:`render` draws in worker processes (set while they run; a forked worker inherits it)
_JOBS: List[Tuple[str, Callable]] = []
#: fewer figures than this are drawn in this process (a pool would cost more than it saves)
MIN_PARALLEL = 4


def _render_job(i: int) -> Tuple[int, bytes]:
    return i, png_bytes(_JOBS[i][1]())


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether this process may fork workers to draw figures: the ``fork`` start method exists and is
    safe here (not macOS, whose system libraries do not survive fork without exec), this is not a
    daemonic process (those may not have children), and no other Python thread runs (one could hold a
    lock the child would then wait for forever) but tqdm's monitor, which a training run leaves behind
    (it only ever takes tqdm's own lock, which the children never need). Library threads (OpenMP, BLAS)
    are idle and the children draw with matplotlib only, never torch."""
    import multiprocessing
    import threading

    tqdm_monitor = getattr(sys.modules.get("tqdm._monitor"), "TMonitor", ())
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    return ("fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin"
            and not multiprocessing.current_process().daemon
            and threading.current_thread() is threading.main_thread()
            and all(isinstance(t, tqdm_monitor) for t in others))


def default_processes(n_figures: int) -> int:
    """How many processes :func:`render` uses by default: this one plus one per CPU nobody else is using
    (usable CPUs minus the 1-minute load average, which counts this process; ``make -l``'s rule: on a
    busy machine workers only add their start-up and compete with each other), at most 4 and at most
    one per figure; 1 (serial, in this process) for fewer than :data:`MIN_PARALLEL` figures, one CPU,
    or a process that cannot fork safely (:func:`can_fork`)."""
    cpus = _usable_cpus()
    if n_figures < MIN_PARALLEL or cpus < 2 or not can_fork():
        return 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(4, cpus, n_figures, 1 + int(max(0.0, cpus - load) + 0.5)))


def render(jobs: Sequence[Tuple[str, Callable]], processes: Optional[int] = None) -> Dict[str, bytes]:
    """``{name: PNG bytes}`` of each ``(name, make)`` job, ``make()`` returning a Figure. ``processes``:
    how many processes draw them (None: :func:`default_processes`); above 1, forked workers take the
    jobs in the given order (put the costly ones first) and the bytes are the same as drawn here. Falls
    back to drawing here when the process cannot fork safely or a pool cannot be started."""
    jobs = list(jobs)
    processes = default_processes(len(jobs)) if processes is None else min(processes, len(jobs))
    pngs = _render_forked(jobs, processes) if processes > 1 and can_fork() else None
    if pngs is None:
        pngs = {i: png_bytes(make()) for i, (_, make) in enumerate(jobs)}
    return {name: pngs[i] for i, (name, _) in enumerate(jobs)}


def _render_forked(jobs: List[Tuple[str, Callable]], processes: int) -> Optional[Dict[int, bytes]]:
    """The jobs drawn by a pool of forked workers (they inherit the jobs, nothing is pickled but the
    PNG bytes); None if the pool cannot start (no semaphores, a process limit)."""
    global _JOBS
    import multiprocessing
    import warnings

    plotting()                                   # import and theme once, here, for every worker
    _JOBS = jobs
    try:
        with warnings.catch_warnings():          # Python >= 3.12 warns on fork while library threads exist
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                    category=DeprecationWarning)
            try:
                pool = multiprocessing.get_context("fork").Pool(processes)
            except OSError:
                return None
        with pool:
            return dict(pool.imap_unordered(_render_job, range(len(jobs))))
    finally:
        _JOBS = []
