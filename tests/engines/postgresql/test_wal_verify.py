"""``wal-verify`` is a monitoring check: it fails while the server's archive_command fails."""

from __future__ import annotations

import time

from tests.engines.postgresql.conftest import drop_env, make_env, make_instance


def _wait(conn, sql: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not conn.execute(sql).fetchone()[0]:
        assert time.monotonic() < deadline, f"timed out waiting for: {sql}"
        time.sleep(0.1)


def test_wal_verify_fails_while_archiving_fails_and_passes_once_it_works_again():
    env = make_env()
    src = make_instance(env, "src")
    conn = src.connect()
    try:
        src.wait_archived(conn)
        assert env.backupctl("wal-verify", "--cluster", "src").returncode == 0
        conn.execute("ALTER SYSTEM SET archive_command = 'false'")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
        conn.execute("SELECT pg_switch_wal()")
        _wait(conn, "SELECT failed_count > 0 FROM pg_stat_archiver")
        failing = env.backupctl("wal-verify", "--cluster", "src", check=False)
        assert failing.returncode == 4, failing.stderr
        assert failing.stderr.startswith("error: cluster src: archive_command is failing: 0000000100000000000000")
        assert failing.stderr.count("\n") == 1 and "server log" in failing.stderr
        status = env.backupctl("wal", "status", "--cluster", "src")
        assert "archive_command is failing" in status.stdout and status.returncode == 0

        conn.execute("ALTER SYSTEM RESET archive_command")
        conn.execute("SELECT pg_reload_conf()")
        _wait(conn, "SELECT last_archived_time > last_failed_time FROM pg_stat_archiver")
        assert env.backupctl("wal-verify", "--cluster", "src").returncode == 0
    finally:
        conn.close()
        src.stop()
        drop_env(env)
