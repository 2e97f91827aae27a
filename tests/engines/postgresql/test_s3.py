"""The same backup and restore with the repository on S3 (moto's server over HTTP), and a missing
WAL segment named at restore."""

from __future__ import annotations

import json
import uuid

from backupctl.repository import Repository
from tests.engines.postgresql.conftest import PASSWORD, drop_env, free_port, make_env, make_instance


def test_backup_and_restore_to_latest_through_s3(s3_endpoint, s3_bucket):
    env = make_env(f"s3://{s3_bucket}/{uuid.uuid4().hex}?endpoint={s3_endpoint}")
    src = make_instance(env, "s3src")
    try:
        with src.connect() as conn:
            conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
            b = json.loads(env.backupctl("backup", "create", "--cluster", "s3src", "--json").stdout)
            conn.execute("INSERT INTO t SELECT generate_series(101, 200)")
            src.wait_archived(conn)
        port = free_port()
        target = env.root / "restored"
        env.backupctl("restore", "create", "--backup", b["name"], "--target-dir", str(target), "--start",
                      "--port", str(port), user="root")
        import psycopg

        with psycopg.connect(host=str(env.sock), port=port, user="postgres", dbname="postgres") as conn:
            assert conn.execute("SELECT count(*), max(id) FROM t").fetchone() == (200, 200)
        from tests.engines.postgresql.conftest import BINDIR, as_postgres

        as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(target), "-m", "immediate", "-w"])

        # lose the segment the backup starts in: the restore names it and touches nothing
        first = b["positions"]["start_wal_file"]
        with Repository.open(env.repo_url, PASSWORD) as repo:
            for snap in repo.snapshots():
                if any(f["name"] == first for f in (snap.metadata.get("wal") or {}).get("files", [])):
                    repo.forget(snap)
        proc = env.backupctl("restore", "create", "--backup", b["name"], "--target-dir", str(env.root / "r2"),
                             user="root", check=False)
        assert proc.returncode == 1 and f"WAL segment {first}" in proc.stderr and "not in the archive" in proc.stderr
        assert not (env.root / "r2").exists()
    finally:
        src.stop()
        drop_env(env)
