"""A throw-away single-node SLURM cluster on localhost for the integration tests.

Debian's ``slurmctld``, ``slurmd`` and ``munge`` (installed by the test set-up
when missing and the tests run as root) with every file in one temporary
folder: a ``cpu`` and a ``gpu`` partition on the same node, the GPU a fake GRES
(``File=/dev/null``). Daemons are stopped by the pids in their pid files,
never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


def ensure_installed() -> str | None:
    """Install SLURM from Debian's packages if missing; returns why it cannot run, or None."""
    if all(shutil.which(p) for p in ("slurmctld", "slurmd", "sbatch", "munged")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "slurm is not installed and the tests are not root with apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            return f"{' '.join(cmd)} failed: {r.stderr[-500:]}"
    return None


class Cluster:
    """Start with :meth:`start`, stop with :meth:`stop`; ``env`` points clients at it."""

    def __init__(self, folder: Path, cpus: int = 2):
        self.folder = Path(folder)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus
        self.pidfiles = {}
        self.linked = False
        conf = self.folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(conf)}

    def _write_config(self):
        f = self.folder
        (f / "state").mkdir(parents=True, exist_ok=True)
        (f / "spool").mkdir(exist_ok=True)
        mem = 4000
        (f / "slurm.conf").write_text(f"""\
ClusterName=fibrecon-test
SlurmctldHost={self.host}
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket={f}/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd.pid
SlurmctldLogFile={f}/slurmctld.log
SlurmdLogFile={f}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
DefMemPerCPU=500
MinJobAge=600
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
NodeName={self.host} CPUs={self.cpus} RealMemory={mem} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={self.host} MaxTime=INFINITE State=UP
""")
        (f / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File=/dev/null\n")
        if Path("/etc/slurm/gres.conf").exists():
            raise RuntimeError("/etc/slurm/gres.conf exists: this machine has a SLURM set-up "
                               "of its own, which the test will not touch")
        key = f / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)

    def _link_default_config(self):
        """Jobs see the cluster through /etc/slurm/slurm.conf: Snakemake's SLURM plugin
        drops every SLURM_* variable (SLURM_CONF too) inside a job."""
        if SYSTEM_CONF.is_symlink() and not SYSTEM_CONF.exists():
            SYSTEM_CONF.unlink()  # dangling link left by an earlier test run
        if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            raise RuntimeError(f"{SYSTEM_CONF} exists: this machine has a SLURM set-up of its "
                               "own, which the test will not touch")
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.folder / "slurm.conf")
        self.linked = True

    def start(self, timeout: float = 30.0) -> None:
        f = self.folder
        self._write_config()
        self._link_default_config()
        run = lambda cmd: subprocess.run(cmd, capture_output=True, text=True, env=self.env)  # noqa: E731
        r = run(["munged", "--force", f"--key-file={f}/munge.key", f"--socket={f}/munge.socket",
                 f"--pid-file={f}/munged.pid", f"--log-file={f}/munged.log",
                 f"--seed-file={f}/munged.seed"])
        if r.returncode != 0:
            raise RuntimeError(f"munged did not start: {r.stderr}")
        self.pidfiles["munged"] = f / "munged.pid"
        for daemon in ("slurmctld", "slurmd"):
            r = run([daemon, "-f", str(f / "slurm.conf")])
            if r.returncode != 0:
                raise RuntimeError(f"{daemon} did not start: {r.stderr}\n{self.logs()}")
            self.pidfiles[daemon] = f / f"{daemon}.pid"
        end = time.time() + timeout
        while time.time() < end:
            r = run(["sinfo", "-h", "-o", "%P %t"])
            states = r.stdout.split()
            if r.returncode == 0 and "idle" in states and "mix" not in states:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle: {r.stdout} {r.stderr}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}"
                         for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        """Stop every daemon by the pid in its pid file (slurmd, slurmctld, munged)."""
        if self.linked and SYSTEM_CONF.is_symlink():
            SYSTEM_CONF.unlink()
        for name in ("slurmd", "slurmctld", "munged"):
            pidfile = self.pidfiles.get(name)
            if pidfile is None or not pidfile.exists():
                continue
            pid = int(pidfile.read_text().split()[0])
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):  # PID 1 may not reap: a zombie counts as stopped
                try:
                    os.kill(pid, 0)
                    state = Path(f"/proc/{pid}/stat").read_text().split()[2]
                    if state == "Z":
                        break
                except (ProcessLookupError, FileNotFoundError):
                    break
                time.sleep(0.1)
