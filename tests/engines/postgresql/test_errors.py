"""Clear errors for a server that cannot be backed up: archiving off, wrong credentials, unreachable."""

from __future__ import annotations

import json

import pytest

from tests.engines.postgresql.conftest import drop_env, free_port, make_env, make_instance


@pytest.fixture(scope="module")
def plain():
    """A server with archive_mode off, a password user, and clusters registered against it in several ways."""
    env = make_env()
    inst = make_instance(env, "plain", archive=False)
    with inst.connect() as conn:
        conn.execute("CREATE ROLE app LOGIN SUPERUSER PASSWORD 'secret'")
    env.env["APP_PW"] = "wrong"
    register = ["cluster", "register", "--engine", "postgresql", "--host", str(env.sock)]
    env.backupctl(*register[:2], "badpw", *register[2:], "--port", str(inst.port), "--user", "app",
                  "--password-env", "APP_PW")
    env.backupctl(*register[:2], "gone", *register[2:], "--port", str(free_port()), "--user", "postgres")
    yield env
    inst.stop()
    drop_env(env)


def backup(env, cluster: str):
    return env.backupctl("backup", "create", "--cluster", cluster, check=False)


def test_archive_mode_off_is_refused_with_how_to_enable_it(plain):
    proc = backup(plain, "plain")
    assert proc.returncode == 2
    assert "archive_mode = off" in proc.stderr
    assert "archive_mode = on" in proc.stderr and "wal-push --cluster plain %p" in proc.stderr
    assert "--archive-config" in proc.stderr and "Traceback" not in proc.stderr


def test_a_restore_point_on_a_server_that_does_not_archive_is_refused_at_once(plain):
    """It used to make the point, then wait out its whole timeout for an archiving that never comes."""
    proc = plain.backupctl("wal", "restore-point", "rp1", "--cluster", "plain", check=False, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "has archive_mode = off, so the WAL holding a restore point is never archived" in proc.stderr
    assert "wal-push --cluster plain %p" in proc.stderr


def test_wrong_credentials_are_a_clear_error(plain):
    proc = backup(plain, "badpw")
    assert proc.returncode == 1
    assert "refused the credentials of user app" in proc.stderr and "APP_PW" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unreachable_server_is_a_clear_error(plain):
    proc = backup(plain, "gone")
    assert proc.returncode == 1
    assert "cannot connect to PostgreSQL cluster gone" in proc.stderr and "server is running" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_refused_backup_leaves_no_record(plain):
    """The server is checked before the backup is recorded: a refusal leaves no Failed row to explain."""
    for cluster in ("plain", "badpw", "gone"):
        assert backup(plain, cluster).returncode != 0
    assert json.loads(plain.backupctl("backup", "list", "--json").stdout) == []
