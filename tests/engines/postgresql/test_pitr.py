"""Point-in-time restore of a real PostgreSQL 15 from a full backup and the archived WAL.

The workload commits one row per transaction (id, committed_at), in batches; between
batches the test notes the server's time and WAL position, or creates a named restore
point. A restore to a target must hold every row committed before it and none after.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.engines.postgresql.conftest import restored_rows, source_world

BATCH = 5


def insert_batch(conn, first: int) -> list[int]:
    ids = list(range(first, first + BATCH))
    for i in ids:                                  # autocommit: one transaction per row
        conn.execute("INSERT INTO t(id) VALUES (%s)", [i])
    return ids


def mark(conn) -> tuple[datetime, str]:
    time.sleep(0.05)
    at, lsn = conn.execute("SELECT clock_timestamp(), pg_current_wal_lsn()::text").fetchone()
    time.sleep(0.05)
    return at, lsn


@pytest.fixture(scope="module")
def world():
    with source_world() as (env, src, conn):
        conn.execute("CREATE TABLE t(id int PRIMARY KEY, committed_at timestamptz DEFAULT clock_timestamp())")
        a = insert_batch(conn, 1)
        backup = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
        b = insert_batch(conn, 6)
        t1, _ = mark(conn)
        c = insert_batch(conn, 11)
        env.backupctl("wal", "restore-point", "rp1", "--cluster", "src")
        d = insert_batch(conn, 16)
        _, lsn2 = mark(conn)
        e = insert_batch(conn, 21)
        x = [26, 27, 28]                                # one transaction of three rows: its xid is the target
        with conn.transaction():
            for i in x:
                conn.execute("INSERT INTO t(id) VALUES (%s)", [i])
            xid = conn.execute("SELECT txid_current()").fetchone()[0]
        f = insert_batch(conn, 31)
        src.wait_archived(conn)
        w = {"env": env, "src": src, "conn": conn, "backup": backup, "t1": t1, "lsn2": lsn2, "xid": xid,
             "before_t1": a + b, "before_rp1": a + b + c, "before_lsn2": a + b + c + d,
             "through_xid": a + b + c + d + e + x, "all": a + b + c + d + e + x + f}
        yield w


def restore(world, name: str, *args: str, check: bool = True):
    return world["env"].restore_started(name, "--backup", world["backup"]["name"], *args, check=check)


def test_full_backup_records_positions_and_restorable_range(world):
    b = world["backup"]
    pos = b["positions"]
    assert b["phase"] == "Completed" and b["method"] == "pg-physical" and len(b["snapshot_ids"]) == 2
    assert pos["timeline"] == 1 and pos["segment_size"] == 1024 * 1024
    for key in ("start_lsn", "stop_lsn", "start_time", "stop_time", "start_wal_file", "stop_wal_file"):
        assert pos[key]
    assert b["restorable_from"] == b["restorable_to"] == pos["stop_time"]


def test_restore_to_latest_has_every_archived_row(world):
    proc, target, port = restore(world, "latest")
    data = json.loads(proc.stdout)
    assert [s["name"] for s in data["stages"]] == ["prepare_data", "fetch_wal", "configure_recovery", "start",
                                                   "replay"]
    fetched = next(s for s in data["stages"] if s["name"] == "fetch_wal")
    assert fetched["details"]["files"] >= 2, fetched                 # replay read WAL fetched ahead...
    assert not os.path.exists(fetched["details"]["spool"])          # ...and the spool is gone afterwards
    assert all(s["seconds"] >= 0 for s in data["stages"]) and data["rto_seconds"] > 0
    assert restored_rows(world, target, port) == world["all"]
    assert not (target / "global" / "pg_control.backupctl-restore").exists()      # put in place at the end


def test_restore_to_a_time_has_exactly_the_rows_committed_before_it(world):
    proc, target, port = restore(world, "at-time", "--restore-time", world["t1"].isoformat())
    assert restored_rows(world, target, port) == world["before_t1"]


def test_restore_to_an_lsn_has_exactly_the_rows_committed_before_it(world):
    proc, target, port = restore(world, "at-lsn", "--target-lsn", world["lsn2"])
    assert restored_rows(world, target, port) == world["before_lsn2"]


def test_restore_to_a_transaction_id_includes_that_transaction_and_nothing_after(world):
    proc, target, port = restore(world, "at-xid", "--target-xid", str(world["xid"]))
    assert json.loads(proc.stdout)["target"] == {"kind": "xid", "value": str(world["xid"])}
    assert restored_rows(world, target, port) == world["through_xid"]     # recovery_target_inclusive = on


def test_restore_to_a_named_restore_point(world):
    proc, target, port = restore(world, "at-name", "--target-name", "rp1")
    assert restored_rows(world, target, port) == world["before_rp1"]


def test_restore_time_outside_the_window_is_refused_with_the_window(world):
    early = (datetime.fromisoformat(world["backup"]["positions"]["stop_time"]) - timedelta(hours=1)).isoformat()
    proc, target, _ = restore(world, "too-early", "--restore-time", early, check=False)
    assert proc.returncode == 2
    assert "outside the restorable window" in proc.stderr and world["backup"]["positions"]["stop_time"] in proc.stderr
    assert not target.exists()
    late = (datetime.now().astimezone() + timedelta(days=1)).isoformat()
    proc, _, _ = restore(world, "too-late", "--restore-time", late, check=False)
    assert proc.returncode == 2 and "outside the restorable window" in proc.stderr


def test_a_time_past_the_last_archived_commit_but_not_certain_is_refused_not_cut_short(world, monkeypatch, tmp_path):
    """No archived commit after it, and commits before it may be in WAL not archived yet: say so."""
    from backupctl.repository import Repository
    from engine_tools.postgresql import wal
    from engine_tools.postgresql.pitr import window
    from tests.engines.postgresql.conftest import PASSWORD

    conn = world["conn"]                           # a last commit, then its segment ends 0.3 s later
    conn.execute("CREATE TABLE IF NOT EXISTS probe(x int)")
    conn.execute("INSERT INTO probe VALUES (1)")
    time.sleep(0.3)
    world["src"].wait_archived(conn)
    positions = world["backup"]["positions"]
    with Repository.open(world["env"].repo_url, PASSWORD) as repo:
        listing = wal.refresh_listing(repo, str(tmp_path), "src", "default", positions["system_identifier"])
    w = window(positions, listing, cluster="src")
    assert w.certain_time < w.end_time
    proc, _, _ = restore(world, "past-commits", "--restore-time", w.end_time.isoformat(), check=False)
    assert proc.returncode == 1 and "may be in WAL not archived yet" in proc.stderr, proc.stderr
    assert w.certain_time.isoformat() in proc.stderr


def test_unknown_restore_point_is_refused(world):
    proc, _, _ = restore(world, "no-name", "--target-name", "nope", check=False)
    assert proc.returncode == 2 and "no restore point named 'nope'" in proc.stderr and "rp1" in proc.stderr


def test_restore_never_writes_over_a_non_empty_directory(world):
    target = world["env"].root / "busy"
    target.mkdir()
    (target / "keep").write_text("x")
    proc = world["env"].backupctl("restore", "create", "--backup", world["backup"]["name"], "--target-dir",
                                  str(target), user="root", check=False)
    assert proc.returncode == 2 and "not empty" in proc.stderr and "--force" in proc.stderr
    assert (target / "keep").read_text() == "x"


def _restore_in_process(world, monkeypatch, target, **kwargs):
    from backupctl.catalog.db import session_scope
    from backupctl.services import restores

    for k, v in world["env"].env.items():
        monkeypatch.setenv(k, v)
    with session_scope() as s:
        restores.create_restore(s, backup=world["backup"]["name"], target_dir=str(target), **kwargs)


def _failing(*args, **kwargs):
    from backupctl.errors import IntegrityError

    raise IntegrityError("injected failure", "none")


@pytest.mark.parametrize("fail_in", ["data files", "backup_label", "recovery settings"])
def test_a_restore_that_fails_halfway_leaves_no_pg_control_so_nothing_can_start_on_it(world, monkeypatch, fail_in):
    """PostgreSQL refuses a directory without global/pg_control: a restore puts it in place last."""
    from backupctl.errors import IntegrityError
    from backupctl.repository.restore import _FileWriter
    from engine_tools.postgresql import restore as pg_restore

    if fail_in == "data files":                      # past global/ in the tree's order
        real_add = _FileWriter.add

        def failing(self, path, node, layers=None):
            if node.path.startswith("pg_xact/"):
                _failing()
            return real_add(self, path, node, layers)
        monkeypatch.setattr(_FileWriter, "add", failing)
    elif fail_in == "backup_label":
        monkeypatch.setattr(pg_restore, "restore_stream", _failing)
    else:                                            # written, not yet handed to their owner
        monkeypatch.setattr(pg_restore.RestorePlan, "_own_files", _failing)
    target = world["env"].root / f"failed-in-{fail_in.replace(' ', '-')}"
    with pytest.raises(IntegrityError, match="injected failure"):
        _restore_in_process(world, monkeypatch, target)
    assert any(p.is_file() and p.stat().st_size for p in target.rglob("*"))   # it got going
    assert not (target / "global" / "pg_control").exists()
    if fail_in != "data files":                                                  # all there but not in place
        assert (target / "global" / "pg_control.backupctl-restore").stat().st_size == 8192


def test_pg_control_goes_in_place_after_the_data_and_settings_are_durable(world, monkeypatch):
    from engine_tools.postgresql import restore as pg_restore

    target = world["env"].root / "ordered"
    events, real_sync, real_rename, real_fsync_dir = [], pg_restore.sync_tree, os.rename, pg_restore.fsync_dir

    def sync_tree(root):
        events.append(("sync", (target / "recovery.signal").exists()))
        real_sync(root)

    def rename(src, dst):
        events.append(("rename", os.path.relpath(dst, target)))
        real_rename(src, dst)

    def fsync_dir(path):
        events.append(("fsync_dir", os.path.relpath(path, target)))
        real_fsync_dir(path)

    monkeypatch.setattr(pg_restore, "sync_tree", sync_tree)
    monkeypatch.setattr(pg_restore.os, "rename", rename)
    monkeypatch.setattr(pg_restore, "fsync_dir", fsync_dir)
    _restore_in_process(world, monkeypatch, target)
    assert events == [("sync", True), ("rename", "global/pg_control"), ("fsync_dir", "global")]
    assert (target / "global" / "pg_control").stat().st_size == 8192


def test_a_forced_restore_removes_the_old_pg_control_before_anything_else(world, monkeypatch):
    from engine_tools.postgresql import restore as pg_restore

    target = world["env"].root / "forced"
    (target / "global").mkdir(parents=True)
    (target / "base" / "1").mkdir(parents=True)
    (target / "global" / "pg_control").write_bytes(b"old" * 100)
    (target / "base" / "1" / "1234").write_bytes(b"old" * 100)
    monkeypatch.setattr(pg_restore.shutil, "rmtree", _failing)     # stopped while deleting the rest
    with pytest.raises(Exception, match="injected failure"):
        _restore_in_process(world, monkeypatch, target, force=True)
    assert not (target / "global" / "pg_control").exists() and (target / "base" / "1" / "1234").exists()


def test_wal_status_reports_the_archived_range_and_the_lag(world):
    data = json.loads(world["env"].backupctl("wal", "status", "--cluster", "src", "--json").stdout)
    tl = data["timelines"]["1"]
    assert tl["missing_count"] == 0 and tl["segments"] >= 3
    assert tl["first"] <= world["backup"]["positions"]["start_wal_file"] <= tl["last"]
    assert data["lag_seconds"] is not None and data["lag_seconds"] >= 0
    assert data["archiver"]["server"] == "reachable" and data["lag_bytes"] is not None
    assert "rp1" in data["restore_points"]


def test_wal_fetch_of_a_missing_file_fails_fast_with_status_1(world):
    env = world["env"]
    dest = env.root / "fetched"
    started = time.monotonic()
    proc = env.backupctl("wal-fetch", "--cluster", "src", "0000000100000000000000FF", str(dest), check=False)
    missing = time.monotonic() - started
    assert proc.returncode == 1 and not dest.exists()
    first = world["backup"]["positions"]["start_wal_file"]
    started = time.monotonic()
    env.backupctl("wal-fetch", "--cluster", "src", first, str(dest))
    found = time.monotonic() - started
    assert dest.stat().st_size == 1024 * 1024
    # no retrying or waiting for a file that is not there: about as long as fetching one that is
    assert missing < found + 5, (missing, found)


def test_wal_fetch_that_fails_is_never_taken_for_a_missing_file(world):
    """Exit 1 would end recovery and promote; any failure must be above 125 (recovery stops)."""
    env = world["env"]
    first = world["backup"]["positions"]["start_wal_file"]
    proc = env.backupctl("wal-fetch", "--cluster", "src", first, str(env.root / "no-such-dir" / "x"), check=False)
    assert proc.returncode == 126 and "error:" in proc.stderr, (proc.returncode, proc.stderr)


def test_restore_command_fails_loudly_when_a_fetched_ahead_segment_cannot_be_copied(world):
    import re
    import subprocess

    env = world["env"]
    target = env.root / "spooled"
    env.backupctl("restore", "create", "--backup", world["backup"]["name"], "--target-dir", str(target), user="root")
    conf = (target / "postgresql.auto.conf").read_text()
    command = re.search(r"^restore_command = '(.*)'$", conf, re.M).group(1).replace("''", "'")
    first = world["backup"]["positions"]["start_wal_file"]
    assert (Path(str(target) + ".wal-spool") / first).exists()              # fetched ahead

    def run(name: str, dest: Path) -> int:
        return subprocess.run(["sh", "-c", command.replace("%f", name).replace("%p", str(dest))],
                              env={**os.environ, **env.env}, capture_output=True).returncode

    assert run(first, env.root / "spooled-copy") == 0 and (env.root / "spooled-copy").stat().st_size == 1024 * 1024
    assert run(first, env.root / "no-such-dir" / "x") == 126
    assert run("0000000100000000000000FF", env.root / "never") == 1


def test_archive_config_prints_the_postgresql_conf_lines(world):
    out = world["env"].backupctl("cluster", "show", "src", "--archive-config").stdout
    assert "archive_mode = on" in out
    assert "wal-push --org default --cluster src %p'" in out and "wal-fetch --org default --cluster src %f %p'" in out


def test_a_data_directory_not_on_this_host_is_a_clear_error(world):
    env, src = world["env"], world["src"]
    env.backupctl("cluster", "register", "remote", "--engine", "postgresql", "--host", str(env.sock), "--port",
                  str(src.port), "--user", "postgres", "--data-dir", "/nonexistent/data")
    proc = env.backupctl("backup", "create", "--cluster", "remote", check=False)
    assert proc.returncode == 2 and "is not on this host" in proc.stderr and "--data-dir" in proc.stderr


def test_a_socket_in_the_data_directory_is_skipped_as_pg_basebackup_does(world):
    """unix_socket_directories may be the data directory: its socket is not a reason to fail."""
    import socket

    sock = socket.socket(socket.AF_UNIX)
    path = world["src"].data / ".s.PGSQL.test"
    sock.bind(str(path))
    try:
        proc = world["env"].backupctl("backup", "create", "--cluster", "src", "--json")
    finally:
        sock.close()
        path.unlink()
    b = json.loads(proc.stdout)
    assert b["phase"] == "Completed"
