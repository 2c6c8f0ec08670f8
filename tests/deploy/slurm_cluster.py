"""A real one-node Slurm cluster on localhost for the tests: munged, slurmctld and slurmd.

No systemd is needed: the daemons run in the foreground as child processes, with a slurm.conf whose
state, spool and log files live in a temporary folder, on free ports, so a cluster already running
on the machine is not disturbed. The controller is fresh each time, so job ids restart at 1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SLURM_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "munged", "munge")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed on this machine; the reason is the message."""


def ensure_installed() -> None:
    """Install the Debian Slurm packages when missing and possible.

    Raises:
        SlurmUnavailable: If a binary is missing and cannot be installed here.
    """
    if all(shutil.which(b) for b in SLURM_BINARIES):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("Slurm is not installed, and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", *SLURM_PACKAGES],
    ):
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise SlurmUnavailable(f"'{' '.join(command)}' failed: {result.stderr.strip()[-500:]}")
    if missing := [b for b in SLURM_BINARIES if not shutil.which(b)]:
        raise SlurmUnavailable(f"{', '.join(missing)} still missing after installing Slurm")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(check, what: str, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.is_file())
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s\n{tails}")


def _munge_works() -> bool:
    encoded = subprocess.run(["munge", "-n"], capture_output=True, check=False)
    if encoded.returncode != 0:
        return False
    decoded = subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True, check=False)
    return decoded.returncode == 0


class SlurmCluster:
    """A one-node cluster whose files live under ``root``.

    Args:
        root: An empty folder for slurm.conf, state, spool and logs.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._processes: list[subprocess.Popen] = []

    def start(self) -> None:
        """Start munged (unless one already answers), slurmctld and slurmd, and wait for the node.

        Raises:
            RuntimeError: If a daemon does not come up; the message has its log.
        """
        self._start_munge()
        self._write_conf()
        for daemon in ("slurmctld", "slurmd"):
            args = [daemon, "-D"] + (["-i"] if daemon == "slurmctld" else [])
            out = (self.root / f"{daemon}.out").open("w")
            self._processes.append(
                subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            )
        _wait_for(
            self._node_idle,
            "Slurm node",
            60,
            [self.root / n for n in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out")],
        )

    def stop(self) -> None:
        """Cancel the cluster's jobs and stop the daemons this object started."""
        if self._processes:
            subprocess.run(
                ["scancel", "--user", "root"], env=self.env, capture_output=True, check=False
            )
        for process in reversed(self._processes):
            process.terminate()
        for process in reversed(self._processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def _start_munge(self) -> None:
        if _munge_works():
            return
        if not MUNGE_KEY.is_file():
            subprocess.run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)], check=True)
            shutil.chown(MUNGE_KEY, "munge", "munge")
            MUNGE_KEY.chmod(0o400)
        for folder in (MUNGE_SOCKET_DIR, Path("/var/lib/munge"), Path("/var/log/munge")):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, "munge", "munge")
        MUNGE_SOCKET_DIR.chmod(0o755)
        out = (self.root / "munged.out").open("w")
        # As the user owning the key; a direct child (not runuser's) is reaped on stop.
        self._processes.append(
            subprocess.Popen(
                ["munged", "--foreground"],
                user="munge",
                group="munge",
                extra_groups=[],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
        _wait_for(_munge_works, "munged", 15, [self.root / "munged.out"])

    def _write_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        r = self.root
        self.conf.write_text(f"""\
ClusterName=tlkedro-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerParameters=batch_sched_delay=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mib * 9 // 10} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _node_idle(self) -> bool:
        result = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode == 0 and result.stdout.strip() == "idle"
