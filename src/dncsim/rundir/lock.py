"""The run directory's lock: an OS file lock on ``.dncsim.lock``, naming its holder, waiting out a dying one
(read from ``/proc``)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Optional

from dncsim.common import DncsimError, WriteFailed
from dncsim.rundir.layout import LOCK, now



#: seconds a lock is waited for while its holder is dying (killed but not gone yet: the kernel finishes a
#: write to a slow disk before it can tear the process down, and only then drops the lock)
DYING_HOLDER_WAIT = 60.0


def _dying(pid, proc: Path = Path("/proc")) -> bool:
    """Linux: whether process ``pid`` is on its way out -- SIGKILL pending (a process blocked in an
    uninterruptible write takes it only when the write completes), its exit under way (``PF_EXITING``), or
    a zombie. False when it runs normally, does not exist or ``proc`` cannot be read (other systems)."""
    try:
        status = (proc / str(pid) / "status").read_text()
        stat = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        kill = 1 << (9 - 1)                                              # SIGKILL's bit in the pending masks
        pending = any(int(fields.get(k, "0").strip() or "0", 16) & kill for k in ("SigPnd", "ShdPnd"))
        after = stat.rsplit(")", 1)[1].split()                           # field 3 (state) onwards
        state, flags = after[0], int(after[6])                           # field 9: the kernel's flags
    except (ValueError, IndexError):
        return False
    return pending or state in ("Z", "X") or bool(flags & 0x4)          # PF_EXITING


class RunLock:
    """An exclusive OS lock (``fcntl.flock``) on a run directory's ``.dncsim.lock``, held from
    :meth:`acquire` to :meth:`release` (or the process's death: the OS drops it, so a killed run never
    blocks its resume). The holder writes its pid, host, start time and command into the file, so the
    one that finds it taken can say who has it."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self._fd: Optional[int] = None

    def _holder_info(self) -> dict:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def holder(self) -> str:
        info = self._holder_info()
        if not info:
            return "another process"
        return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}"
                + (f" ({info['what']})" if info.get("what") else ""))

    def acquire(self, what: str = "dncsim run") -> "RunLock":
        """Take the lock (the directory must exist); DncsimError naming the directory and the holder when
        another process has it. A holder on this host that is dying (:func:`_dying`: killed, not gone yet)
        is waited for, up to ``DYING_HOLDER_WAIT`` seconds: a run restarted right after a kill resumes."""
        import fcntl
        import time
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteFailed(f"{self.path}: cannot create the lock file ({exc.strerror or exc})",
                              {"path": str(self.path), "errno": exc.errno}) from None
        deadline = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                info = self._holder_info()
                dying = info.get("host") == socket.gethostname() and _dying(info.get("pid"))
                deadline = deadline or time.monotonic() + DYING_HOLDER_WAIT
                if not dying or time.monotonic() > deadline:
                    os.close(fd)
                    raise DncsimError(f"{self.directory} is in use by {self.holder()}"
                                      + (", which was killed and has not exited yet" if dying else "")
                                      + "; wait for it to finish or choose another directory") from None
                time.sleep(0.05)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now(), "what": what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc):
        self.release()
