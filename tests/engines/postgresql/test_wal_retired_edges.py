"""Retired-cluster WAL expiry at its edges (from a helper review): the same name in two
organisations, timelines after an in-place PITR (with ``retention run --dry-run`` against the real
run), a name initialised again as a new database system, and a name taken by another engine."""

from __future__ import annotations

import json

from tests.engines.postgresql.conftest import make_instance, restored_rows
from tests.engines.postgresql.test_wal_expiry_races import _fork, _two_bases
from tests.engines.postgresql.test_wal_retired import (
    _age_in_recycle_bin,
    _backed_up_then_unregistered,
    _archive_snapshots,
    _purge_from_recycle_bin,
    _segments,
)


def test_unregistering_a_cluster_of_one_organisation_leaves_the_same_name_of_another_alone(source):
    env, src, conn = source
    acme = make_instance(env, "src", org="acme", data_name="acme-src")
    try:
        conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
        _segments(src, conn, 1, 1)
        full = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)["name"]
        _segments(src, conn, 6, 3)
        with acme.connect() as c:
            c.execute("CREATE TABLE t(id int PRIMARY KEY)")
            _segments(acme, c, 1000, 2)
            env.backupctl("backup", "create", "--cluster", "src", "--org", "acme")
            _segments(acme, c, 2000, 2)
        acme.stop()
        out = json.loads(env.backupctl("cluster", "unregister", "src", "--org", "acme", "--keep", "none",
                                       "--json").stdout)
        assert out["log_expiry_error"] is None and out["log_expiry"]["files_expired"] > 0, out
        src.stop()
        proc, target, port = env.restore_started("restored", "--backup", full, check=False)
        assert proc.returncode == 0, f"{proc.stderr.strip()}\n{out}"
        assert restored_rows({"env": env}, target, port) == list(range(1, 21))
    finally:
        acme.stop()


def _pitr_then_unregistered(source, monkeypatch):
    """b0 and b1 on timeline 1, src restored in place from b0 below b1 (timeline 2, rows 101..110),
    unregistered with --keep all."""
    env, src, conn = source
    b0, b1, target_lsn = _two_bases(env, src, conn)
    _fork(env, src, b0, target_lsn)
    src.stop()
    out = json.loads(env.backupctl("cluster", "unregister", "src", "--keep", "all", "--json").stdout)
    assert sorted(out["kept"]) == sorted([b0, b1]) and out["log_expiry_error"] is None, out
    monkeypatch.setenv("BACKUPCTL_RECYCLE_BIN_RETENTION", "1d")
    return env, b0, b1, out


def _dry_then_real(env) -> tuple[dict, dict]:
    dry = json.loads(env.backupctl("retention", "run", "--dry-run", "--json").stdout)
    real = json.loads(env.backupctl("retention", "run", "--json").stdout)
    return dry, real


def test_after_an_in_place_pitr_the_base_below_the_fork_restores_timeline_2(source, monkeypatch):
    env, b0, b1, _ = _pitr_then_unregistered(source, monkeypatch)
    _age_in_recycle_bin(env, b1)           # the abandoned line's base goes; b0 (below the fork) stays
    dry, real = _dry_then_real(env)
    assert real["result"]["deleted"] == [b1], real
    assert dry["log_expiry"]["default/src"] == real["result"]["log_expiry"]["default/src"], (dry, real)
    proc, target, port = env.restore_started("restored-b0", "--backup", b0, check=False)
    assert proc.returncode == 0, f"{proc.stderr.strip()}\n{real}"
    assert restored_rows({"env": env}, target, port) == list(range(1, 11)) + list(range(101, 111))


def test_after_an_in_place_pitr_the_base_on_the_abandoned_line_restores_it(source, monkeypatch):
    env, b0, b1, _ = _pitr_then_unregistered(source, monkeypatch)
    _age_in_recycle_bin(env, b0)
    dry, real = _dry_then_real(env)
    assert real["result"]["deleted"] == [b0], real
    assert dry["log_expiry"]["default/src"] == real["result"]["log_expiry"]["default/src"], (dry, real)
    proc, target, port = env.restore_started("restored-b1", "--backup", b1, check=False)
    assert proc.returncode == 0, f"{proc.stderr.strip()}\n{real}"
    assert restored_rows({"env": env}, target, port) == list(range(1, 51))


def test_a_name_initialised_again_keeps_the_first_systems_kept_backup_and_drops_the_second(source):
    """src (system 1) unregistered keeping f1; src registered again on a new initdb (system 2, WAL of the
    same names), backed up, unregistered with --keep none: f1 still restores, system 2's WAL is gone."""
    env, src, conn = source
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    _segments(src, conn, 1, 1)
    f1 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
    _segments(src, conn, 6, 3)
    src.stop()
    env.backupctl("cluster", "unregister", "src", "--keep", "all")
    second = make_instance(env, "src", data_name="src-again")
    try:
        with second.connect() as c:
            c.execute("CREATE TABLE t(id int PRIMARY KEY)")
            _segments(second, c, 500, 2)
            env.backupctl("backup", "create", "--cluster", "src")
            _segments(second, c, 600, 4)
        second.stop()
        out = json.loads(env.backupctl("cluster", "unregister", "src", "--keep", "none", "--json").stdout)
        assert out["log_expiry_error"] is None, out
        systems = out["log_expiry"]["kept_from"]
        assert set(systems) == {f1["positions"]["system_identifier"], *systems}, out
        proc, target, port = env.restore_started("restored", "--backup", f1["name"], check=False)
        assert proc.returncode == 0, f"{proc.stderr.strip()}\n{out}"
        assert restored_rows({"env": env}, target, port) == list(range(1, 21))
        others = {s: tls for s, tls in systems.items() if s != f1["positions"]["system_identifier"]}
        assert others and all(set(t.values()) == {"none"} for t in others.values()), out
    finally:
        second.stop()


def test_after_the_name_went_to_another_engine_the_kept_backup_restores_and_its_going_empties_the_archive(
        source, monkeypatch):
    """The sweep once took the cluster row by name alone: a MySQL cluster registered (and unregistered)
    under the name since has no log archiver, so the PostgreSQL archive was never looked at again."""
    env, f1 = _backed_up_then_unregistered(source)
    env.backupctl("cluster", "register", "src", "--engine", "mysql", "--host", "db9", "--port", "3306")
    env.backupctl("cluster", "unregister", "src")
    proc, target, port = env.restore_started("restored", "--backup", f1, check=False)
    assert proc.returncode == 0, proc.stderr.strip()
    assert restored_rows({"env": env}, target, port) == list(range(1, 16))

    report = _purge_from_recycle_bin(env, monkeypatch, f1)
    assert report["deleted"] == [f1], report
    assert _archive_snapshots(env) == [], f"the archive of src stays for good: {report}"
