"""A single-node SLURM cluster of its own for a test: munged, slurmctld and slurmd started from Debian's
``slurm-wlm`` and ``munge`` (installed by the README's test command) with a config, key, state, spool,
logs, pid files, ports and cluster name in a fresh temporary directory; nothing is installed or written
outside it. Clients find it through ``SLURM_CONF`` (:attr:`LiveSlurm.env`). :meth:`LiveSlurm.stop` cancels
the cluster's jobs, stops its three daemons by pid and then every other process whose environment names
its directory (job steps), by pid, and checks that none is left."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")


def unavailable() -> Optional[str]:
    """Why this machine cannot run the cluster (a skip reason), or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a live SLURM cluster needs root (slurmd runs jobs as their user; SlurmUser=root)"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge"
    return None


def _free_ports(n: int) -> List[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LiveSlurm:
    """One node (this host's short name) with ``os.cpu_count()`` CPUs and ``real_memory`` MB (half the
    machine's), one default partition ``debug`` whose time limit is :attr:`max_time` minutes (longer jobs are
    refused: EnforcePartLimits=ALL); ``KillWait=2`` so that cancelled jobs end at once."""

    max_time = 30

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="dncsim-slurm-"))
        self.dir.chmod(0o755)                  # munged wants its socket's directory searchable by all
        self.host = socket.gethostname().split(".")[0]
        self.cluster = "t" + uuid.uuid4().hex[:8]
        self.cpus = os.cpu_count() or 1
        self.real_memory = _memory_mb() // 2
        self.conf = self.dir / "slurm.conf"
        self.env: Dict[str, str] = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: Dict[str, subprocess.Popen] = {}

    # --- start --------------------------------------------------------------------------------------
    def write_config(self) -> None:
        d = self.dir
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        key = d / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        (d / "plugstack.conf").write_text("")
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(f"""\
ClusterName={self.cluster}
SlurmctldHost={self.host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d / 'munge.sock'}
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdLogFile={d / 'slurmd.log'}
PlugStackConfig={d / 'plugstack.conf'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=2
MinJobAge=600
InactiveLimit=0
EnforcePartLimits=ALL
NodeName={self.host} CPUs={self.cpus} RealMemory={self.real_memory} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime={self.max_time} State=UP
""")

    def _spawn(self, name: str, argv: List[str]) -> None:
        log = open(self.dir / f"{name}.stderr", "wb")
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.dir)
        log.close()

    def client(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=check)

    def start(self, timeout: float = 60) -> "LiveSlurm":
        self.write_config()
        d = self.dir
        self._spawn("munged", ["munged", "--foreground", f"--key-file={d / 'munge.key'}",
                               f"--socket={d / 'munge.sock'}", f"--pid-file={d / 'munged.pid'}",
                               f"--log-file={d / 'munged.log'}", f"--seed-file={d / 'munged.seed'}"])
        self._wait(lambda: (d / "munge.sock").exists(), timeout, "munged's socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait(lambda: self.client("sinfo", "-h", check=False).returncode == 0, timeout, "slurmctld")
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait(lambda: self.client("sinfo", "-h", "-o", "%t", check=False).stdout.strip() == "idle", timeout,
                   "the node to be idle")
        return self

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited while waiting for {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for name in ("munged.stderr", "slurmctld.log", "slurmd.log", "slurmctld.stderr", "slurmd.stderr"):
            p = self.dir / name
            if p.exists():
                out.append(f"--- {name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    # --- jobs ---------------------------------------------------------------------------------------
    def jobs(self) -> Dict[str, str]:
        """Job id -> state (RUNNING, PENDING, ...) of the jobs squeue lists."""
        out = self.client("squeue", "-h", "-o", "%i %T").stdout.split()
        return dict(zip(out[::2], out[1::2]))

    # --- stop ---------------------------------------------------------------------------------------
    def ours(self) -> List[int]:
        """Pids of the processes whose environment names this cluster's directory (daemons, job steps,
        the jobs' processes), this process excepted."""
        tag = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if tag in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self) -> List[int]:
        """Cancel the jobs, stop the daemons (slurmd, slurmctld, munged) and the rest of the cluster's
        processes by pid; returns the pids still alive afterwards (none, unless something is wrong)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            ids = list(self.jobs()) if self.procs.get("slurmd") else []
            if ids:
                self.client("scancel", *ids, check=False)
                end = time.monotonic() + 15
                while time.monotonic() < end and self.jobs():
                    time.sleep(0.3)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for pid in self.ours():              # job steps and their processes, if any outlived the daemons
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 10
        left = self.ours()
        while left and time.monotonic() < end:
            time.sleep(0.2)
            left = [p for p in self.ours() if not _zombie(p)]
        return left

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
