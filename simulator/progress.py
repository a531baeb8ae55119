"""Progress with an ETA over a run: a bar over the stream's experiences and one over each experience's
training iterations (tqdm, on stderr). Without a terminal, one line per finished experience instead."""
from __future__ import annotations

import sys
import time
import warnings

from tqdm import tqdm

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.core import SupervisedPlugin

__all__ = ["StreamProgress"]


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class StreamProgress(SupervisedPlugin):
    """Avalanche plugin: progress bars (terminal) or lines (logs) with elapsed time and ETA."""

    def __init__(self, scenario, epochs: int, done: int, stream=sys.stderr):
        super().__init__()
        self.sc, self.epochs, self.stream = scenario, epochs, stream
        self.total = len(scenario.experiences)
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.start, self.done_at_start = time.perf_counter(), done
        self.outer = tqdm(total=self.total, initial=done, desc="stream", unit="exp", file=stream,
                          disable=not self.tty, dynamic_ncols=True)
        self.inner = None

    def before_training_exp(self, strategy, **kwargs):
        t = strategy.experience.current_experience
        n = self.epochs * len(strategy.dataloader)
        self.inner = tqdm(total=n, desc=f"experience {t} ({self.sc.experiences[t].name})", unit="it",
                          file=self.stream, leave=False, disable=not self.tty, dynamic_ncols=True)

    def after_training_iteration(self, strategy, **kwargs):
        self.inner.update(1)
        if self.inner.n == self.inner.total:
            self.inner.set_postfix_str("evaluating")

    def after_training_exp(self, strategy, **kwargs):
        self.inner.close()

    def experience_done(self, t: int) -> None:
        """Called by the run once experience ``t`` is trained, evaluated and saved."""
        if t + 1 < self.total:
            self.outer.update(1)
        else:
            self.outer.n += 1            # the final bar is drawn once, by close()
        if not self.tty:
            elapsed = time.perf_counter() - self.start
            finished = t + 1 - self.done_at_start
            eta = elapsed / finished * (self.total - t - 1)
            print(f"[{t + 1}/{self.total}] experience {t} ({self.sc.experiences[t].name}) done; "
                  f"elapsed {_eta(elapsed)}, ETA {_eta(eta)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        self.outer.close()
