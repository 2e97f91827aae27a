"""Timelines: a restore that promotes starts a new timeline, and registering the restored server as a
new cluster archives that timeline (its WAL and its .history file) into the new cluster's own archive.

The new cluster is then backed up like any other and restored to a point in time on its
timeline: recovery (recovery_target_timeline = 'latest') fetches 00000002.history through
wal-fetch, which the history file of the timeline it starts shows (its parent's switch point).
"""

from __future__ import annotations

import json

import psycopg

from tests.engines.postgresql.conftest import (
    BINDIR,
    Instance,
    as_postgres,
    drop_env,
    free_port,
    make_env,
    make_instance,
)
from tests.engines.postgresql.test_pitr import insert_batch, mark


def _stop(data) -> None:
    as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w"])


def _rows(env, port: int) -> list[int]:
    with psycopg.connect(host=str(env.sock), port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        assert c.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        return [r[0] for r in c.execute("SELECT id FROM t ORDER BY id")]


def test_a_restored_cluster_archives_its_new_timeline_and_is_restored_to_a_point_on_it():
    env = make_env()
    src = make_instance(env, "tlsrc")
    started = [src.data]
    try:
        with src.connect() as conn:
            conn.execute("CREATE TABLE t(id int PRIMARY KEY, committed_at timestamptz DEFAULT clock_timestamp())")
            a = insert_batch(conn, 1)
            b1 = json.loads(env.backupctl("backup", "create", "--cluster", "tlsrc", "--json").stdout)
            b = insert_batch(conn, 6)
            src.wait_archived(conn)

        # restore the source's backup and register the copy as cluster tldst: a new timeline, archived for tldst
        port = free_port()
        target = env.root / "tldst"
        started.append(target)
        r = json.loads(env.backupctl("restore", "create", "--backup", b1["name"], "--target-dir", str(target),
                                     "--start", "--port", str(port), "--register", "tldst", "--json",
                                     user="root").stdout)
        assert r["phase"] == "Completed" and r["target_cluster"] == "tldst"
        shown = json.loads(env.backupctl("cluster", "show", "tldst", "--json").stdout)
        assert (shown["engine"], shown["port"], shown["data_dir"], shown["host"]) == \
            ("postgresql", port, str(target), str(env.sock))
        dst = Instance(env, "tldst", target, port)
        with dst.connect() as conn:
            assert _rows(env, port) == a + b
            assert conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0].startswith("00000002")
            c = insert_batch(conn, 11)
            b2 = json.loads(env.backupctl("backup", "create", "--cluster", "tldst", "--json").stdout)
            assert b2["positions"]["timeline"] == 2 and b2["positions"]["start_wal_file"].startswith("00000002")
            d = insert_batch(conn, 16)
            t, _ = mark(conn)
            insert_batch(conn, 21)                  # after the target: not restored
            dst.wait_archived(conn)

        # each cluster's archive holds its own timelines; the new one has the history file of timeline 2
        st = json.loads(env.backupctl("wal", "status", "--cluster", "tldst", "--json").stdout)
        assert set(st["timelines"]) == {"2"} and st["timelines"]["2"]["missing_count"] == 0
        assert st["history_files"] == ["00000002.history"]
        assert st["timelines"]["2"]["first"] <= b2["positions"]["start_wal_file"] <= st["timelines"]["2"]["last"]
        assert st["archiver"]["server"] == "reachable" and st["archiver"]["failed_count"] == 0
        st_src = json.loads(env.backupctl("wal", "status", "--cluster", "tlsrc", "--json").stdout)
        assert set(st_src["timelines"]) == {"1"} and st_src["history_files"] == []

        # point-in-time restore of the new cluster's backup to a time on timeline 2
        port2 = free_port()
        target2 = env.root / "tldst-pitr"
        started.append(target2)
        r2 = json.loads(env.backupctl("restore", "create", "--backup", b2["name"], "--target-dir", str(target2),
                                      "--restore-time", t.isoformat(), "--start", "--port", str(port2), "--json",
                                      user="root").stdout)
        assert r2["target_cluster"] == "tldst-pitr"
        assert _rows(env, port2) == a + b + c + d
        # timeline 3's history names timeline 1's switch point too: 00000002.history came through wal-fetch
        history = [line.split("\t")[0] for line in (target2 / "pg_wal" / "00000003.history").read_text().splitlines()
                   if line.strip()]
        assert history == ["1", "2"]
        assert 'restored log file "00000002.history" from archive' in \
            (target2 / "backupctl-restore.log").read_text()
        # not registered: archives nothing
        assert "archive_mode = 'off'" in (target2 / "postgresql.auto.conf").read_text()
        clusters = json.loads(env.backupctl("cluster", "list", "--json").stdout)
        assert sorted(c["name"] for c in clusters) == ["tldst", "tlsrc"]
    finally:
        for data in started:
            _stop(data)
        drop_env(env)


def test_register_needs_a_port_and_a_free_name(pg_env):
    env = pg_env
    src = make_instance(env, "regsrc")
    try:
        with src.connect() as conn:
            conn.execute("CREATE TABLE t(id int)")
            b = json.loads(env.backupctl("backup", "create", "--cluster", "regsrc", "--json").stdout)
            src.wait_archived(conn)
        target = env.root / "r"
        proc = env.backupctl("restore", "create", "--backup", b["name"], "--target-dir", str(target),
                             "--register", "copy", user="root", check=False)
        assert proc.returncode == 2 and "needs its port" in proc.stderr and "--port" in proc.stderr
        proc = env.backupctl("restore", "create", "--backup", b["name"], "--target-dir", str(target),
                             "--register", "regsrc", "--port", str(free_port()), user="root", check=False)
        assert proc.returncode == 2 and "already registered" in proc.stderr
        assert not target.exists()
        assert json.loads(env.backupctl("restore", "list", "--json").stdout) == []
    finally:
        src.stop()
