"""A throwaway one-node SLURM cluster on 127.0.0.1 for tests: munged, MariaDB + slurmdbd (accounting, so that
`sacct` lists the jobs), slurmctld and slurmd, each started in the foreground as a child of the test and stopped
by its PID. Everything lives in a temporary folder; the only path outside it is the symlink
/etc/slurm/slurm.conf, which clients inside jobs need (Snakemake's jobstep plugin drops SLURM_CONF before its
inner srun; see /work/shared/spec/slurm_local_cluster.md). Own munge key and socket and free TCP ports, so a
munged, MariaDB or SLURM already on the machine is left alone.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
# the programs the cluster runs, and the package that brings each
PROGRAMS = {
    "munged": "munge",
    "mungekey": "munge",
    "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm",
    "sbatch": "slurm-wlm",
    "sacct": "slurm-wlm",
    "sacctmgr": "slurm-wlm",
    "slurmdbd": "slurmdbd",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-server",
    "setpriv": "util-linux",
}
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# names of the processes this module can leave behind (used to check that it left none)
DAEMON_NAMES = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmstepd")
ETC_SLURM = Path("/etc/slurm")
ACCOUNT = "texadtest"
PARTITION = "debug"
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Account", "Partition", "Timelimit", "ReqMem",
                "AllocCPUS", "Comment")  # fmt: skip


def which(program: str) -> str | None:
    return shutil.which(program, path=os.environ.get("PATH", "") + os.pathsep + SYSTEM_PATH)


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if which(p) is None]


def install_packages(timeout: float = 900) -> str | None:
    """Install the SLURM, munge and MariaDB packages with apt where a program is missing. Returns why the cluster
    cannot be set up (not root, no apt, the install failed), or None when everything is in place."""
    missing = missing_programs()
    needed = sorted({PROGRAMS[p] for p in missing})
    if os.geteuid() != 0:  # nor could it run the daemons (SlurmUser root, munged and mariadbd as their users)
        return f"not root (missing: {', '.join(missing) or 'nothing'})"
    if not missing:
        return None
    apt = which("apt-get")
    if apt is None:
        return f"no apt-get to install {' '.join(needed)} (missing {', '.join(missing)})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": SYSTEM_PATH}
    install = [apt, "install", "-y", "-q", *PACKAGES]
    log = []
    for cmd in ([apt, "update", "-q"], install):
        try:
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd)} took more than {timeout:.0f} s"
        log.append(run.stdout[-1500:] + run.stderr[-1500:])
        if run.returncode != 0 and cmd is install:
            return f"{' '.join(cmd)} failed (rc {run.returncode}):\n" + "\n".join(log)
    still = missing_programs()
    if still:
        return f"after apt-get install, still missing: {', '.join(still)}"
    return None


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports that are free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def daemon_pids() -> dict[int, str]:
    """Every process on the machine named like a daemon this module starts (to check it leaves none behind)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if name in DAEMON_NAMES:
            out[int(entry.name)] = name
    return out


def mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def poll(check, timeout: float, what: str, interval: float = 0.2, on_fail=None):
    """Call `check()` until it returns something truthy; raise with `on_fail()`'s text after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_fail() if on_fail else ""
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s\n{detail}")
        time.sleep(interval)


class SlurmCluster:
    """A one-node cluster (node `localhost`, partition `debug`, account `texadtest`) under a temporary folder.

    Use as a context manager, or call start() and stop() (stop() is safe to call more than once and after a
    failed start)."""

    def __init__(self, cpus: int | None = None, real_memory_mb: int | None = None):
        self.cpus = cpus or os.cpu_count() or 1
        # 80 % of what is available now: slurmd drains a node that reports less memory than configured
        self.real_memory_mb = real_memory_mb or int(mem_available_mb() * 0.8)
        self.root: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.created_links: list[Path] = []
        self.created_dirs: list[Path] = []
        self.preexisting = daemon_pids()
        # unique, so that the processes of this cluster's jobs can be told apart (SLURM_CLUSTER_NAME)
        self.name = f"texad{secrets.token_hex(4)}"
        self.killed_orphans: dict[
            int, str
        ] = {}  # job processes stop() had to kill itself (should stay empty)
        self.start_seconds: float | None = None

    # --- paths and environment ----------------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def log(self, name: str) -> Path:
        return self.root / "log" / name

    def env(self) -> dict[str, str]:
        """The environment for SLURM commands and the daemons (the same config the /etc symlink points to)."""
        path = os.environ.get("PATH", "") + os.pathsep + SYSTEM_PATH
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        run = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and run.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed (rc {run.returncode}):\n{run.stdout}\n{run.stderr}\n{self.log_tails()}"
            )
        return run

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of the daemon logs (for failure messages)."""
        if self.root is None or not (self.root / "log").is_dir():
            return ""
        parts = []
        for name in (
            "slurmctld.log",
            "slurmd.log",
            "slurmdbd.log",
            "jobcomp.txt",
            "munged.out",
            "mariadbd.out",
        ):
            path = self.log(name)
            if path.is_file():
                n = lines if name.startswith("slurm") else 10
                text = path.read_text(errors="replace").splitlines()[-n:]
                parts.append(f"--- {name} (last {n} lines) ---\n" + "\n".join(text))
        return "\n".join(parts)

    # --- start ----------------------------------------------------------------------------------------------

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        t0 = time.monotonic()
        # not pytest's tmp_path: its parents are private to root, and munged and mariadbd run as their own users
        self.root = Path(tempfile.mkdtemp(prefix="texad-slurm-"))
        self.root.chmod(0o755)
        for sub in ("etc", "state", "spool", "log", "run"):
            (self.root / sub).mkdir()
        ctld_port, slurmd_port, dbd_port, db_port = free_ports(4)
        self.ports = {"slurmctld": ctld_port, "slurmd": slurmd_port, "slurmdbd": dbd_port, "mariadb": db_port}
        self._write_slurm_conf()
        self._link_default_conf()
        self._start_munged()
        self._start_mariadb()
        self._start_slurmdbd()
        self._start("slurmctld", [which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        # -N: the node registers as `localhost` whatever the machine's hostname
        self._start("slurmd", [which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        poll(self._node_idle, 60, "node localhost idle", on_fail=self.log_tails)
        self.start_seconds = time.monotonic() - t0

    def _write_slurm_conf(self) -> None:
        r = self.root
        text = f"""\
ClusterName={self.name}
SlurmctldHost=localhost
SlurmctldPort={self.ports["slurmctld"]}
SlurmdPort={self.ports["slurmd"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket
MpiDefault=none
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={self.ports["slurmdbd"]}
AccountingStoragePass={r}/munge/munge.socket
AccountingStoreFlags=job_comment
JobCompType=jobcomp/filetxt
JobCompLoc={r}/log/jobcomp.txt
MinJobAge=300
KillWait=5
DefMemPerCPU=500
MailProg=/bin/true
SchedulerType=sched/backfill
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.real_memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        self.conf.write_text(text)
        dbd = self.root / "etc" / "slurmdbd.conf"  # found beside slurm.conf (SLURM_CONF)
        dbd.write_text(f"""\
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.ports["slurmdbd"]}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.socket
LogFile={r}/log/slurmdbd.log
PidFile={r}/run/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports["mariadb"]}
StorageUser=slurm
StoragePass=slurmpass
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)

    def _link_default_conf(self) -> None:
        """/etc/slurm/slurm.conf -> our config (clients inside jobs read only the default path)."""
        if not ETC_SLURM.is_dir():
            ETC_SLURM.mkdir(parents=True)
            self.created_dirs.append(ETC_SLURM)
        link = ETC_SLURM / "slurm.conf"
        if link.is_symlink() and not link.exists() and "texad-slurm-" in os.readlink(link):
            link.unlink()  # left by an earlier run of this module that was killed: its folder is gone
        if link.exists() or link.is_symlink():
            raise RuntimeError(
                f"{link} already exists (-> {os.path.realpath(link)}): a SLURM configuration this test did not "
                "write; refusing to replace it"
            )
        link.symlink_to(self.conf)
        self.created_links.append(link)

    def _start(self, name: str, cmd: list[str], user: str | None = None, env: dict | None = None):
        if user is not None:  # setpriv execs the daemon: the PID is the daemon's own (runuser would fork)
            cmd = [which("setpriv"), f"--reuid={user}", f"--regid={user}", "--init-groups", *cmd]
        out = open(self.log(f"{name}.out"), "w")  # the daemon keeps its own descriptor
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env or self.env(),
            start_new_session=True,
        )  # fmt: skip
        out.close()
        self.procs[name] = proc
        return proc

    def _alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with rc {proc.returncode}\n{self.log_tails()}")

    def _start_munged(self) -> None:
        d = self.root / "munge"
        d.mkdir()
        d.chmod(0o755)  # the socket must be reachable by every user; the key itself is 0600
        key = d / "munge.key"
        self.run(which("mungekey"), "--create", f"--keyfile={key}")
        munge = pwd.getpwnam("munge")
        for path in (d, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        key.chmod(0o600)
        self.log("munged.log").touch()
        os.chown(self.log("munged.log"), munge.pw_uid, munge.pw_gid)
        self._start(
            "munged",
            [which("munged"), "--foreground", f"--key-file={key}", f"--socket={d}/munge.socket",
             f"--pid-file={d}/munged.pid", f"--seed-file={d}/munged.seed", f"--log-file={self.log('munged.log')}"],
            user="munge",
        )  # fmt: skip

        def ready():
            self._alive("munged")
            return subprocess.run(
                [which("munge"), "-n", f"--socket={d}/munge.socket"], capture_output=True
            ).returncode == 0  # fmt: skip

        poll(ready, 30, "munged answering", on_fail=self.log_tails)

    def _mariadb(self, sql: str):
        return self.run(
            which("mariadb"), "--no-defaults", f"--socket={self.root}/mysql-run/mysqld.sock", "-e", sql
        )

    def _start_mariadb(self) -> None:
        data, run = self.root / "mysql", self.root / "mysql-run"
        mysql = pwd.getpwnam("mysql")
        for path in (data, run):
            path.mkdir()
            os.chown(path, mysql.pw_uid, mysql.pw_gid)
        self.run(
            which("mariadb-install-db"), "--no-defaults", "--user=mysql", f"--datadir={data}",
            "--auth-root-authentication-method=socket", "--skip-test-db", timeout=180,
        )  # fmt: skip
        self._start(
            "mariadbd",
            [which("mariadbd"), "--no-defaults", "--user=mysql", f"--datadir={data}",
             f"--socket={run}/mysqld.sock", f"--pid-file={run}/mysqld.pid", "--bind-address=127.0.0.1",
             f"--port={self.ports['mariadb']}", "--innodb-buffer-pool-size=64M", "--innodb-lock-wait-timeout=900",
             "--skip-log-bin"],
        )  # fmt: skip

        def ready():
            self._alive("mariadbd")
            return self.run(which("mariadb"), "--no-defaults", f"--socket={run}/mysqld.sock", "-e", "select 1",
                            check=False).returncode == 0  # fmt: skip

        poll(ready, 60, "mariadbd answering", on_fail=self.log_tails)
        users = ("'slurm'@'127.0.0.1'", "'slurm'@'localhost'")
        self._mariadb(
            "".join(f"CREATE USER {u} IDENTIFIED BY 'slurmpass'; " for u in users)
            + "CREATE DATABASE slurm_acct_db; "
            + "".join(f"GRANT ALL ON slurm_acct_db.* TO {u}; " for u in users)
        )

    def _start_slurmdbd(self) -> None:
        self._start("slurmdbd", [which("slurmdbd"), "-D"])

        def ready():
            self._alive("slurmdbd")
            return self.run(which("sacctmgr"), "-n", "list", "cluster", check=False).returncode == 0

        poll(ready, 60, "slurmdbd answering", on_fail=self.log_tails)
        # the cluster must be known before slurmctld registers; jobs then are accounted to this account
        self.run(which("sacctmgr"), "-i", "add", "cluster", self.name)
        self.run(
            which("sacctmgr"), "-i", "add", "account", ACCOUNT, "Description=texad test", "Organization=texad"
        )
        self.run(
            which("sacctmgr"), "-i", "add", "user", "root", f"Account={ACCOUNT}", f"DefaultAccount={ACCOUNT}"
        )

    def _node_idle(self) -> bool:
        for name in ("slurmctld", "slurmd"):
            self._alive(name)
        run = self.run(which("sinfo"), "-h", "-N", "-o", "%t", check=False)
        return run.returncode == 0 and run.stdout.strip() == "idle"

    # --- queries ----------------------------------------------------------------------------------------------

    def sacct(self, fields=SACCT_FIELDS) -> list[dict[str, str]]:
        """Every job of the cluster's accounting (allocations only, no steps)."""
        run = self.run(
            which("sacct"), "-n", "-X", "-P", "-a", "--starttime", "2000-01-01",
            "-o", ",".join(f"{f}%500" for f in fields),
        )  # fmt: skip
        return [dict(zip(fields, line.split("|"), strict=True)) for line in run.stdout.splitlines() if line]

    def queue(self) -> list[str]:
        """Jobs still pending or running."""
        run = self.run(which("squeue"), "-h", "-o", "%i %T", check=False)
        return run.stdout.split("\n") if run.returncode == 0 and run.stdout.strip() else []

    # --- stop -------------------------------------------------------------------------------------------------

    def stop(self, keep_logs_in: Path | None = None) -> None:
        """Cancel jobs left in the queue and wait until their processes are gone, stop every daemon this cluster
        started (by PID, in reverse order), remove the /etc symlink and the temporary folder (its logs are copied
        to `keep_logs_in` first)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            if self.queue():
                self.run(which("scancel"), "-u", "root", check=False)
            # slurmd sends SIGKILL KillWait (5 s) after SIGTERM: stopping it earlier would orphan the job's
            # processes (Snakemake inside a job ignores SIGTERM)
            try:
                poll(lambda: not self.queue() and not self.job_processes(), 60, "jobs ended", interval=0.5)
            except TimeoutError:
                pass
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        for link in self.created_links:
            if link.is_symlink():
                link.unlink()
        self.created_links.clear()
        # last resort: processes of this cluster's jobs that outlived their slurmstepd
        for pid, name in self.job_processes().items():
            self.killed_orphans[pid] = name
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for d in self.created_dirs:
            try:
                d.rmdir()
            except OSError:
                pass
        self.created_dirs.clear()
        if self.root is not None and self.root.is_dir():
            if keep_logs_in is not None and (self.root / "log").is_dir():
                shutil.copytree(self.root / "log", keep_logs_in, dirs_exist_ok=True)
                shutil.copy(self.conf, keep_logs_in / "slurm.conf")
            shutil.rmtree(self.root, ignore_errors=True)

    def job_processes(self) -> dict[int, str]:
        """Processes that belong to this cluster's jobs (their environment names the cluster), and slurmstepd
        processes started since this cluster was."""
        marker = f"SLURM_CLUSTER_NAME={self.name}".encode()
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if marker in env or (name == "slurmstepd" and int(entry.name) not in self.preexisting):
                out[int(entry.name)] = name
        return out

    def leftover_processes(self) -> dict[int, str]:
        """Daemon-named processes that were not running before this cluster started, and processes of its jobs
        (should be none after stop())."""
        new = {pid: name for pid, name in daemon_pids().items() if pid not in self.preexisting}
        return {**new, **self.job_processes()}
