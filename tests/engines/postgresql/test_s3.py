"""The same backup and restore with the repository on S3 (moto's server over HTTP), to the latest state
and to a point in time, and a missing WAL segment named at restore."""

from __future__ import annotations

import json
import time
import uuid

import psycopg

from backupctl.repository import Repository
from tests.engines.postgresql.conftest import BINDIR, PASSWORD, as_postgres, drop_env, free_port, make_env, \
    make_instance


def test_backup_and_restore_to_latest_through_s3(s3_endpoint, s3_bucket):
    env = make_env(f"s3://{s3_bucket}/{uuid.uuid4().hex}?endpoint={s3_endpoint}")
    src = make_instance(env, "s3src")
    try:
        with src.connect() as conn:
            conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
            b = json.loads(env.backupctl("backup", "create", "--cluster", "s3src", "--json").stdout)
            conn.execute("INSERT INTO t SELECT generate_series(101, 200)")
            time.sleep(0.05)
            t = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            time.sleep(0.05)
            conn.execute("INSERT INTO t SELECT generate_series(201, 300)")
            src.wait_archived(conn)
        port = free_port()
        target = env.root / "restored"
        env.backupctl("restore", "create", "--backup", b["name"], "--target-dir", str(target), "--start",
                      "--port", str(port), user="root")
        with psycopg.connect(host=str(env.sock), port=port, user="postgres", dbname="postgres") as conn:
            assert conn.execute("SELECT count(*), max(id) FROM t").fetchone() == (300, 300)
        as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(target), "-m", "immediate", "-w"])

        # to a point in time, the WAL fetched from S3: the rows committed before it and none after
        port = free_port()
        target = env.root / "at-time"
        env.backupctl("restore", "create", "--backup", b["name"], "--target-dir", str(target), "--start",
                      "--port", str(port), "--restore-time", t.isoformat(), user="root")
        with psycopg.connect(host=str(env.sock), port=port, user="postgres", dbname="postgres") as conn:
            assert conn.execute("SELECT count(*), min(id), max(id) FROM t").fetchone() == (200, 1, 200)
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
