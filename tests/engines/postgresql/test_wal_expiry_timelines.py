"""WAL expiry across timelines and clusters, and what it reports (found by a second review):
a copy's base on a timeline of the same number, the recycle bin in a dry run, a history file
archived with segments that go, an ancestor timeline no base replays, and the restore of a base
on an abandoned line. Each test states what must hold.
"""

from __future__ import annotations

import json

from tests.engines.postgresql.conftest import Instance, free_port, make_instance, restored_rows
from tests.engines.postgresql.test_retention_pitr import backup_names, policy_backup, py_as_postgres
from tests.engines.postgresql.test_wal_expiry_races import (
    _fork,
    _in_place_pitr,
    _racing_backup,
    _recycled_then_registered_again,
    _segments,
    _two_bases,
    _wait_promoted,
)


def _wal_status(env, cluster: str = "src") -> dict:
    return json.loads(env.backupctl("wal", "status", "--cluster", cluster, "--json").stdout)


def _backdate_recycled(env, name: str) -> None:
    py_as_postgres(env, f"""
from datetime import timedelta
from sqlalchemy import select
from backupctl.catalog.db import session_scope
from backupctl.catalog.models import Backup, utcnow
with session_scope() as s:
    b = s.scalar(select(Backup).where(Backup.name == {name!r}))
    assert b.recycled
    b.recycled_at = utcnow() - timedelta(days=400)
""")


def test_dry_run_counts_the_recycle_bins_deletions_as_the_real_run_does(source):
    """The real run deletes the recycle bin's expired backups before expiring the log archive; the dry
    run's log preview ignores them, so it says less WAL would go than the real run then forgets."""
    env, src, conn = source
    f1 = _recycled_then_registered_again(env, src, conn)
    env.backupctl("policy", "create", "p1", "--cluster", "src", "--method", "pg-physical", "--keep-last", "1")
    f2 = policy_backup(env, "p1", "src")
    _segments(conn, src, 26, 30)
    _backdate_recycled(env, f1)                  # in the recycle bin longer than its period

    dry = json.loads(env.backupctl("retention", "run", "--dry-run", "--json").stdout)
    assert f1 in json.dumps(dry["recycle_bin"]), dry["recycle_bin"]     # the dry run knows f1 goes
    preview = dry["log_expiry"]["default/src"]
    report = json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]
    assert f1 in report["deleted"] and backup_names(env) == {f2}, report
    expiry = report["log_expiry"]["default/src"]
    assert preview == expiry, f"dry run said {preview}, the run then did {expiry}"


def test_a_copys_backup_on_a_timeline_of_the_same_number_does_not_expire_a_running_backups_wal(source):
    """A copy of src restored and registered as cluster 'copy' (same database system) promotes to
    timeline 2 of its own, archived in its own archive. src later restored in place to an earlier
    point also promotes to a timeline 2 (its archive has no 00000002.history). The copy's base is
    counted among src's bases: on src's timeline 2, where no base of src reaches yet, its start (a
    higher LSN: the copy's line) becomes the cutoff, and src's timeline 2 goes from under the backup
    that runs on it meanwhile."""
    env, src, conn = source
    b0, b1, target_lsn = _two_bases(env, src, conn)

    port_c, copy_dir = free_port(), env.root / "copy"
    env.backupctl("restore", "create", "--backup", b1, "--target-dir", str(copy_dir), "--start", "--port",
                  str(port_c), "--register", "copy", user="root")
    copy = Instance(env, "copy", copy_dir, port_c)
    try:
        with copy.connect() as cc:
            _segments(cc, copy, 51, 60)
            c1 = json.loads(env.backupctl("backup", "create", "--cluster", "copy", "--json").stdout)
        assert c1["positions"]["timeline"] == 2
        copy.stop()

        _fork(env, src, b0, target_lsn)
        b2, out = _racing_backup(env)
        assert "SWEEP 0" in out and backup_names(env) == {b1, b2, c1["name"]}, out
        positions = json.loads(env.backupctl("backup", "show", b2, "--json").stdout)["positions"]
        assert positions["timeline"] == 2
        assert positions["system_identifier"] == c1["positions"]["system_identifier"]

        proc, target, port = env.restore_started("restored-b2", "--backup", b2, check=False)
        assert proc.returncode == 0, (f"backup {b2} of src (timeline 2 from {positions['start_lsn']}) lost its WAL "
                                      f"to the copy's base on its own timeline 2 (from {c1['positions']['start_lsn']})"
                                      f": {proc.stderr.strip()}\n{out}")
        assert restored_rows({"env": env}, target, port) == list(range(1, 11)) + list(range(101, 111))
    finally:
        copy.stop()


def test_expiry_leaves_no_false_gap_when_a_history_file_was_archived_with_segments(source):
    """Archiving failed for a while after an in-place PITR: when it works again PostgreSQL asks for
    00000002.history first, and the push stores every waiting file with it (timeline 1's .partial,
    the first segments of timeline 2) in one snapshot. History files never go, so that snapshot
    stays whole, while the timeline-2 segments after it, up to the remaining base, go: 'wal status'
    then shows a gap on timeline 2 and 'wal-verify' fails ("no restore can replay across the gap")
    after every retention run, though nothing any backup needs is missing."""
    env, src, conn = source
    b0, _b1, target_lsn = _two_bases(env, src, conn)
    _in_place_pitr(env, src, b0, target_lsn, "archive_command = '/bin/false'\n")
    with src.connect() as c2:
        _wait_promoted(c2, src)
        for i in range(101, 116, 5):                 # three timeline-2 segments wait, unarchived
            c2.execute(f"INSERT INTO t SELECT generate_series({i}, {i + 4})")
            c2.execute("SELECT pg_switch_wal()")
        c2.execute("ALTER SYSTEM RESET archive_command")
        c2.execute("SELECT pg_reload_conf()")
        _segments(c2, src, 116, 140)
        b2 = policy_backup(env, "p1", "src")
        _segments(c2, src, 141, 150)
    before = _wal_status(env)["timelines"]["2"]
    assert before["missing_count"] == 0, before
    report = json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]
    assert backup_names(env) == {b2} and report["log_expiry"]["default/src"]["files_expired"] > 0, report
    after = _wal_status(env)["timelines"]["2"]
    verify = env.backupctl("wal-verify", "--cluster", "src", check=False)
    assert "00000002.history" in _wal_status(env)["history_files"]      # stored again on its own
    assert after["missing_count"] == 0 and verify.returncode == 0, \
        (f"after expiry, timeline 2 shows {after['missing_count']} missing segment(s) from {after['missing'][:1]} "
         f"(first {after['first']}, before {before['first']}); wal-verify: {verify.returncode} {verify.stderr.strip()}")


def test_a_base_on_the_abandoned_line_restores_to_its_latest_state(source):
    """recovery_target_timeline defaults to 'latest': PostgreSQL takes the highest timeline whose history
    file the archive holds, whatever line the base is on. b1 is on timeline 1 past the point where
    timeline 2 left it; a restore of b1 to the latest state (no target, so no timeline set) asks for
    timeline 2 and stops: "requested timeline 2 is not a child of this server's history". Expiry
    reasons that b1 replays only timeline 1; the restore should say so too (recovery_target_timeline
    = the newest timeline that left the base's line at or after its start, else the base's own)."""
    env, src, conn = source
    b0, b1, target_lsn = _two_bases(env, src, conn)
    _fork(env, src, b0, target_lsn)
    proc, target, port = env.restore_started("restored-b1", "--backup", b1, check=False)
    assert proc.returncode == 0, f"completed backup {b1} cannot be restored to its latest state: {proc.stderr.strip()}"
    assert restored_rows({"env": env}, target, port) == list(range(1, 51))


def test_an_ancestor_timeline_no_base_replays_is_expired_and_the_report_says_what_stays(source):
    """Once every base is on timeline 2, nothing replays timeline 1 (a backup can only run on the
    server's current timeline), yet 'on a timeline no base reaches, nothing goes' keeps all of it, for
    ever: after a failover or an in-place PITR the archive again grows until the disk fills. And the
    report says 'kept from' the timeline-2 base's start, as if everything before it had gone."""
    env, src, conn = source
    b0, b1, target_lsn = _two_bases(env, src, conn)
    _fork(env, src, b0, target_lsn)
    with src.connect() as c2:
        policy_backup(env, "p1", "src")              # b2
        _segments(c2, src, 111, 115)
        b3 = policy_backup(env, "p1", "src")        # keep-last 1: b0, b1 and b2 go
        _segments(c2, src, 116, 120)
    report = json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]
    assert backup_names(env) == {b3}, report
    expiry = report["log_expiry"]["default/src"]
    tl1 = _wal_status(env)["timelines"].get("1")
    assert tl1 is None, (f"timeline 1 ({tl1['segments']} segments, {tl1['first']}..{tl1['last']}) is kept though no "
                         f"base replays it; the report: {expiry}")
    start = json.loads(env.backupctl("backup", "show", b3, "--json").stdout)["positions"]["start_wal_file"]
    assert list(expiry["kept_from"].values()) == [{"1": "none", "2": start}], expiry


def test_a_timeline_the_server_left_is_kept_for_a_recovered_backup_that_replays_it(source):
    """f1, recycled and recovered into another cluster, replays the source's timeline 1; the source,
    restored in place to a point after f1's start, runs on timeline 2 with a base of its own there.
    None of the source's bases replays timeline 1 any more, but f1 does: that timeline may not go
    whole (bases catalogued elsewhere only keep more)."""
    env, src, conn = source
    f1 = _recycled_then_registered_again(env, src, conn)
    other = make_instance(env, "other")
    try:
        env.backupctl("backup", "recover", f1, "--cluster", "other")
        with src.connect() as c:
            c.execute("INSERT INTO t SELECT generate_series(26, 30)")
            target_lsn = c.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
            src.wait_archived(c)
            _segments(c, src, 31, 40)
        _in_place_pitr(env, src, f1, target_lsn)                 # timeline 2 from after row 30
        env.backupctl("policy", "create", "p1", "--cluster", "src", "--method", "pg-physical", "--keep-last", "1")
        with src.connect() as c2:
            _wait_promoted(c2, src)
            _segments(c2, src, 101, 110)
            policy_backup(env, "p1", "src")
            _segments(c2, src, 111, 115)
        report = json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]
        assert f1 in backup_names(env) and "1" in _wal_status(env)["timelines"], report

        proc, target, port = env.restore_started("restored-f1", "--backup", f1, check=False)
        assert proc.returncode == 0, f"{proc.stderr.strip()} ({report['log_expiry']})"
        assert restored_rows({"env": env}, target, port) == list(range(1, 31)) + list(range(101, 116))
    finally:
        other.stop()
