"""Throwaway PostgreSQL 15 instances for the engine tests, archiving into backupctl.

CI runs as root and PostgreSQL refuses root: initdb, pg_ctl and the server run as the
``postgres`` OS user (``runuser -u postgres --``), in directories under /tmp owned by it
(pytest's tmp_path is private to root). The server's archive_command is the exact line
``backupctl cluster show NAME --archive-config`` prints (absolute path of the console
script, BACKUPCTL_HOME); the repository passphrase comes from a file postgres can read.
backupctl commands that run beside the server (backups, wal) run as postgres too, the way
they would on a database host; restores run as root, and start the server as postgres.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

BINDIR = "/usr/lib/postgresql/15/bin"
PASSWORD = "correct horse battery staple"
BACKUPCTL = os.path.join(os.path.dirname(sys.executable), "backupctl")


def _chown_postgres(path: str | Path) -> None:
    shutil.chown(path, "postgres", "postgres")


def _chown_tree(root: str | Path) -> None:
    for dirpath, dirs, files in os.walk(root):
        _chown_postgres(dirpath)
        for n in files:
            os.lchown(os.path.join(dirpath, n), *_postgres_ids())


def _postgres_ids() -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def as_postgres(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, **kw)


@pytest.fixture(scope="session", autouse=True)
def postgres_can_run_backupctl() -> None:
    """The server's archive_command runs backupctl as postgres: let it reach this Python (search bit only)."""
    for path in {os.path.realpath(sys.executable), os.path.realpath(BACKUPCTL), os.path.realpath(__file__)}:
        d = os.path.dirname(path)
        while d != "/":
            mode = os.stat(d).st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(d, mode | stat.S_IXOTH)
            d = os.path.dirname(d)
    proc = as_postgres([BACKUPCTL, "--version"])
    assert proc.returncode == 0, f"postgres cannot run {BACKUPCTL}: {proc.stderr}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Env:
    """One test world: BACKUPCTL_HOME, a repository, a socket directory, all owned by postgres."""

    root: Path
    repo_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def sock(self) -> Path:
        return self.root / "sock"

    def backupctl(self, *args: str, user: str = "postgres", check: bool = True,
                  timeout: float = 300) -> subprocess.CompletedProcess:
        argv = [BACKUPCTL, *args]
        if user == "postgres":
            argv = ["runuser", "-u", "postgres", "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"backupctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc

    def restore_started(self, name: str, *args: str,
                        check: bool = True) -> tuple[subprocess.CompletedProcess, Path, int]:
        """``restore create *args --start --json`` as root into the new directory ``name`` on a free port:
        (the finished command, the data directory, the port)."""
        port, target = free_port(), self.root / name
        proc = self.backupctl("restore", "create", *args, "--target-dir", str(target), "--start", "--port", str(port),
                              "--json", user="root", check=check)
        return proc, target, port


@dataclass
class Instance:
    env: Env
    name: str
    data: Path
    port: int

    def ctl(self, *args: str) -> None:
        proc = as_postgres([f"{BINDIR}/pg_ctl", *args, "-D", str(self.data), "-l", str(self.data / "server.log"),
                            "-w", "-t", "60"], env={**os.environ, **self.env.env})
        assert proc.returncode == 0, f"pg_ctl {args}: {proc.stderr}{proc.stdout}{self.log()}"

    def start(self) -> "Instance":
        self.ctl("start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w"])

    def log(self) -> str:
        try:
            return (self.data / "server.log").read_text()[-3000:]
        except OSError:
            return ""

    def connect(self, port: int | None = None) -> psycopg.Connection:
        return psycopg.connect(host=str(self.env.sock), port=port or self.port, user="postgres", dbname="postgres",
                               autocommit=True)

    def wait_archived(self, conn: psycopg.Connection, timeout: float = 60) -> str:
        """Switch to a new segment and wait until the one just closed is archived."""
        seg = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
            if last and last >= seg:
                return seg
            time.sleep(0.1)
        raise AssertionError(f"segment {seg} not archived: {self.log()}")


def make_env(repo_url: str | None = None) -> Env:
    root = Path(tempfile.mkdtemp(prefix="backupctl-pg-", dir="/tmp"))
    for d in ("home", "sock", "repo"):
        (root / d).mkdir()
    (root / "password").write_text(PASSWORD)
    os.chmod(root / "password", 0o600)
    _chown_tree(root)
    os.chmod(root, 0o755)
    env = Env(root, repo_url or str(root / "repo"), {"BACKUPCTL_HOME": str(root / "home"), "BACKUPCTL_KDF_N": "1024"})
    from backupctl.repository import Repository

    Repository.init(env.repo_url, PASSWORD).close()
    _chown_tree(root / "repo")
    # the catalogue is created by postgres, so SQLite gives the files root opens later to postgres too
    env.backupctl("repo", "add", "main", "--url", env.repo_url, "--default", "--password-file", str(root / "password"))
    return env


def drop_env(env: Env) -> None:
    from backupctl.catalog import db

    db.dispose_engines()
    shutil.rmtree(env.root, ignore_errors=True)


def make_instance(env: Env, name: str, *, archive: bool = True, register: bool = True, org: str | None = None,
                  data_name: str | None = None) -> Instance:
    """A new server registered as cluster ``name`` (in organisation ``org``), its data directory
    ``data_name`` (default: the name) under the environment's root, started."""
    data = env.root / (data_name or name)
    in_org = ["--org", org] if org else []
    data.mkdir()
    _chown_postgres(data)
    proc = as_postgres([f"{BINDIR}/initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--wal-segsize=1",
                        "--no-sync", "--no-instructions"])
    assert proc.returncode == 0, proc.stderr
    port = free_port()
    if register:
        env.backupctl("cluster", "register", name, *in_org, "--engine", "postgresql", "--host", str(env.sock),
                      "--port", str(port), "--user", "postgres", "--data-dir", str(data))
    lines = [f"port = {port}", "listen_addresses = ''", f"unix_socket_directories = '{env.sock}'",
             "fsync = off", "shared_buffers = 16MB", "max_wal_senders = 2", "wal_level = replica"]
    if archive:
        config = env.backupctl("cluster", "show", name, *in_org, "--archive-config").stdout
        lines += [line for line in config.splitlines() if line.startswith(("archive_mode", "archive_command"))]
    else:
        lines.append("archive_mode = off")
    with open(data / "postgresql.conf", "a") as f:
        f.write("\n".join(lines) + "\n")
    with open(data / "pg_hba.conf", "w") as f:
        f.write("local all postgres trust\nlocal all all scram-sha-256\n")
    return Instance(env, name, data, port).start()


@pytest.fixture
def pg_env() -> Iterator[Env]:
    env = make_env()
    yield env
    drop_env(env)


@pytest.fixture
def source(pg_env: Env) -> Iterator[tuple[Env, Instance, psycopg.Connection]]:
    """A new instance "src" in a new environment, and a connection to it."""
    src = make_instance(pg_env, "src")
    conn = src.connect()
    yield pg_env, src, conn
    conn.close()
    src.stop()


@contextmanager
def source_world(*, commit_timed: bool = False) -> Iterator[tuple[Env, Instance, psycopg.Connection]]:
    """A new environment with a running source "src" and a connection to it, for a module's world
    fixture. All is stopped and removed on exit, also when the set-up fails half-way. With
    ``commit_timed``, the source keeps commit timestamps (the exact times recovery_target_time is
    compared with) and has an empty table t(id)."""
    env = make_env()
    src = conn = None
    try:
        src = make_instance(env, "src")
        if commit_timed:
            with src.connect() as c:
                c.execute("ALTER SYSTEM SET track_commit_timestamp = on")
            src.ctl("restart")
        conn = src.connect()
        if commit_timed:
            conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
        yield env, src, conn
    finally:
        if conn is not None:
            conn.close()
        if src is not None:
            src.stop()
        drop_env(env)


def restored_rows(world: dict, target: Path, port: int) -> list[int]:
    """The ids in table t of the server restored into ``target`` (promoted by now), which is then stopped."""
    try:
        with psycopg.connect(host=str(world["env"].sock), port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
            return [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")]
    finally:
        as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(target), "-m", "immediate", "-w"])
