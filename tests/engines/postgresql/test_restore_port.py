"""``restore create --start`` refuses a port another server of this host answers on before it writes
anything. Before, a restore beside its source (no --port: the source's port, from the restored
postgresql.conf) ran the whole data stage, then failed to start the server. A crashed server's
socket file, which nobody answers on, is no reason to refuse (PostgreSQL replaces it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import psycopg
import pytest

from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from engine_tools.postgresql.restore import Listen, listen_settings
from tests.engines.postgresql.conftest import BINDIR, as_postgres, free_port


@pytest.fixture
def backed_up(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS id")
    conn.execute("ALTER SYSTEM SET listen_addresses = 'localhost'")     # restored servers listen on TCP too
    name = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)["name"]
    return env, src, name


def restore(env, name: str, target, *extra: str):
    return env.backupctl("restore", "create", "--backup", name, "--target-dir", str(target), "--start", *extra,
                         user="root", check=False)


def test_without_port_beside_the_source_is_refused_before_the_data_stage(backed_up):
    env, src, name = backed_up
    target = env.root / "beside"
    proc = restore(env, name, target)
    assert proc.returncode == 2, proc.stderr
    assert (f"port {src.port} (from the backup's postgresql.conf), on which the restored server would start, "
            "is in use on this host") in proc.stderr
    assert f".s.PGSQL.{src.port}" in proc.stderr and "pass --port" in proc.stderr
    assert not target.exists()


def test_a_port_taken_on_localhost_is_refused(backed_up):
    env, _src, name = backed_up
    with socket.create_server(("localhost", 0)) as listener:
        port = listener.getsockname()[1]
        proc = restore(env, name, env.root / "tcp", "--port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert f"port {port} (from --port), on which the restored server would start" in proc.stderr
    assert f"localhost:{port}" in proc.stderr
    assert not (env.root / "tcp").exists()


def test_a_free_port_restores_and_starts(backed_up):
    env, _src, name = backed_up
    port = free_port()
    proc = restore(env, name, env.root / "free", "--port", str(port), "--json")
    try:
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["phase"] == "Completed"
        with psycopg.connect(host=str(env.sock), port=port, user="postgres", dbname="postgres") as c:
            assert c.execute("SELECT count(*) FROM t").fetchone()[0] == 100
    finally:
        as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(env.root / "free"), "-m", "immediate", "-w"], check=False)


def test_a_crashed_source_is_restored_in_place_on_its_own_port(backed_up):
    env, src, name = backed_up
    pid = int((src.data / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:               # until it is reaped: before, 'pg_ctl status' says running
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    stale = str(env.sock / f".s.PGSQL.{src.port}")
    with socket.socket(socket.AF_UNIX) as s:         # nothing answers any more; the file stays
        with pytest.raises(ConnectionRefusedError):
            s.connect(stale)
    proc = env.backupctl("restore", "create", "--backup", name, "--target-dir", str(src.data), "--force",
                         "--start", "--json", user="root", check=False)
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(host=str(env.sock), port=src.port, user="postgres", dbname="postgres") as c:
        assert c.execute("SELECT count(*) FROM t").fetchone()[0] == 100


def settings(tmp_path, monkeypatch, files: dict[str, str], port: int | None = None) -> Listen | None:
    """listen_settings of a backup of a directory holding ``files``."""
    monkeypatch.setenv("BACKUPCTL_KDF_N", "1024")
    data = tmp_path / "data"
    for rel, text in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(text)
    url = str(tmp_path / "repo")
    Repository.init(url, "pw").close()
    with Repository.open(url, "pw") as repo:
        snap = backup_paths(repo, [os.path.join(data, n) for n in sorted(os.listdir(data))])
        return listen_settings(repo, snap, port)


def test_settings_are_read_as_the_server_reads_them(tmp_path, monkeypatch):
    monkeypatch.delenv("PGPORT", raising=False)
    got = settings(tmp_path, monkeypatch, {
        "postgresql.conf": "#port = 1\nPort = 5499 # the port\nlisten_addresses=''\n"
                           "unix_socket_directories = '/srv/a, /srv/b'\n",
        "postgresql.auto.conf": "port = '0x1580'\n"})           # auto.conf wins; integers as strtol reads them
    assert got == Listen(0x1580, "the backup's postgresql.conf", ["/srv/a", "/srv/b"], tcp=False)


def test_without_a_port_setting_pgport_then_5432(tmp_path, monkeypatch):
    monkeypatch.setenv("PGPORT", "6001")
    assert settings(tmp_path, monkeypatch, {"postgresql.conf": "unix_socket_directories = ''\n"}) == \
        Listen(6001, "PGPORT", [], tcp=True)


def test_a_port_that_may_be_set_in_an_included_file_is_not_guessed(tmp_path, monkeypatch):
    files = {"postgresql.conf": "include_dir = 'conf.d'\n", "conf.d/listen.conf": "port = 5499\n"}
    assert settings(tmp_path, monkeypatch, files) is None                  # no check: no false refusal
    assert settings(tmp_path / "2", monkeypatch, files, port=7000).port == 7000   # --port goes into auto.conf
