"""``restore create --start`` refuses a port another server of this host listens on before it writes
anything. Before, a restore beside its source (no --port: the source's port, from the restored
postgresql.conf) ran the whole data stage, then failed to start the server."""

from __future__ import annotations

import json
import socket

import psycopg
import pytest

from tests.engines.postgresql.conftest import BINDIR, as_postgres, free_port


@pytest.fixture
def backed_up(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS id")
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
    assert f"port {src.port}, on which the restored server would start, is in use on this host" in proc.stderr
    assert f".s.PGSQL.{src.port}" in proc.stderr and "pass --port" in proc.stderr
    assert not target.exists()


def test_a_port_taken_on_localhost_is_refused(backed_up):
    env, _src, name = backed_up
    with socket.create_server(("localhost", 0)) as listener:
        port = listener.getsockname()[1]
        proc = restore(env, name, env.root / "tcp", "--port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert f"port {port}, on which the restored server would start" in proc.stderr and f"localhost:{port}" in proc.stderr
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
