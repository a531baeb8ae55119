"""Ctrl-C, SIGTERM and SIGHUP as one exception: :class:`Interrupted` (a ``KeyboardInterrupt``) that
names the signal, so that a run records ``status: interrupted`` and the CLI prints one line and exits
with 128 + the signal's number (130, 143, 129). Imports nothing heavy (the CLI installs it first).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Optional

__all__ = ["Interrupted", "SIGNALS", "install", "restore", "signal_of", "deferred"]

#: the signals that end a command as an interruption (SIGHUP where the platform has it)
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A command stopped by ``signum``; ``str()`` is the one line to print, ``exit_code`` 128 + ``signum``."""

    def __init__(self, message: str = "interrupted", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"


def signal_of(exc: BaseException) -> int:
    """The signal behind a ``KeyboardInterrupt`` (SIGINT unless it is an :class:`Interrupted`)."""
    return getattr(exc, "signum", signal.SIGINT)


def _raise(signum, frame):
    raise Interrupted(signum=signum)


def install() -> dict:
    """Make SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in this (the main) thread; returns the
    handlers they had (for :func:`restore`)."""
    return {sig: signal.signal(sig, _raise) for sig in SIGNALS}


def restore(previous: dict) -> None:
    """Put back the handlers :func:`install` returned."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def deferred(deliver: bool = True):
    """Hold SIGINT, SIGTERM and SIGHUP back for the block (a checkpoint and the manifest that lists it
    are written together) and deliver the first one received at its end, as the handlers in place
    before would have; ``deliver=False`` drops them (the block records an interruption already under
    way). Outside the main thread the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending and deliver:
        _deliver(pending[0], previous[pending[0]])


def _deliver(signum: int, handler) -> Optional[None]:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)         # the default action, now that the default handler is back
