"""Page-level incremental backups: only changed pages are stored, and a chain of incrementals
restores to exactly the source's rows (latest and to a point in time)."""

from __future__ import annotations

import json
import os
import time

import pytest

from engine_tools.postgresql.backup import SETTLE_NS
from tests.engines.postgresql.conftest import restored_rows, source_world
from tests.engines.postgresql.test_pitr import insert_batch, mark

CHECKSUM = "SELECT count(*), sum(hashtext(v)) FROM big"


def backup(env, kind: str) -> dict:
    return json.loads(env.backupctl("backup", "create", "--cluster", "src", "--type", kind, "--json").stdout)


@pytest.fixture(scope="module")
def world():
    with source_world() as (env, src, conn):
        conn.execute("CREATE TABLE t(id int PRIMARY KEY, committed_at timestamptz DEFAULT clock_timestamp())")
        conn.execute("CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v "
                     "FROM generate_series(1, 200000) g")
        # two tables never written after the full: one settled long before it started, one written just
        # before (its metadata will match, but a page of it might have been read torn); their file times
        # are set so, rather than waited for
        for table in ("still", "recent"):
            conn.execute(f"CREATE TABLE {table} AS SELECT g FROM generate_series(1, 10000) g")
            conn.execute(f"VACUUM FREEZE {table}")
        conn.execute("CHECKPOINT")
        paths = {t: conn.execute("SELECT pg_relation_filepath(%s)", [t]).fetchone()[0]
                 for t in ("still", "recent", "big")}
        now = time.time_ns()
        os.utime(src.data / paths["still"], ns=(now - 60 * SETTLE_NS, now - 60 * SETTLE_NS))
        # after the full's start less SETTLE_NS whenever the full starts (a slow machine included)
        os.utime(src.data / paths["recent"], ns=(now + 60 * SETTLE_NS, now + 60 * SETTLE_NS))
        a = insert_batch(conn, 1)
        full = backup(env, "full")
        conn.execute("UPDATE big SET v = md5(v) WHERE g % 2000 = 0")        # a few scattered pages
        b = insert_batch(conn, 6)
        inc1 = backup(env, "incremental")
        c = insert_batch(conn, 11)
        t_mid, _ = mark(conn)
        conn.execute("DELETE FROM big WHERE g % 3000 = 1")
        conn.execute("CREATE TABLE later AS SELECT g FROM generate_series(1, 1000) g")   # a relation new since inc1
        d = insert_batch(conn, 16)
        inc2 = backup(env, "incremental")
        e = insert_batch(conn, 21)
        src.wait_archived(conn)
        w = {"env": env, "src": src, "conn": conn, "full": full, "inc1": inc1, "inc2": inc2, "t_mid": t_mid,
             "before_mid": a + b + c, "all": a + b + c + d + e, "checksum": conn.execute(CHECKSUM).fetchone(),
             "paths": paths}
        yield w


def test_incrementals_chain_to_their_parent_and_store_only_changed_pages(world):
    full, inc1, inc2 = world["full"], world["inc1"], world["inc2"]
    assert (inc1["type"], inc1["parent"], inc2["parent"]) == ("incremental", full["name"], inc1["name"])
    assert full["bytes_added"] > 5_000_000
    # 100 updated rows touch ~100 of ~3000 pages of 'big'; WAL-logged catalog pages change too.
    assert inc1["bytes_added"] < full["bytes_added"] / 5, (inc1["bytes_added"], full["bytes_added"])
    assert inc1["logical_size"] == pytest.approx(full["logical_size"], rel=0.2)


def test_a_relation_file_unchanged_since_the_parent_is_the_parents_copy_once_settled(world):
    """Not an empty delta over it: a restore writes it as a whole file, without layers. One last
    written just before the parent started is read again, its metadata matching or not."""
    from backupctl.repository import Repository
    from backupctl.repository.tree import walk_tree
    from engine_tools.postgresql.delta import ENCODING

    repo = Repository.open(world["env"].repo_url, (world["env"].root / "password").read_text())

    def entry(b: dict, table: str):
        snap = repo.find_snapshot(b["positions"]["data_snapshot"])
        return next(n for n in walk_tree(repo, snap.tree) if n.path == world["paths"][table])

    still_full, still_inc1 = entry(world["full"], "still"), entry(world["inc1"], "still")
    assert still_inc1.encoding is None and still_inc1.chunks == still_full.chunks
    assert entry(world["inc2"], "still").chunks == still_full.chunks
    assert entry(world["inc1"], "big").encoding == ENCODING          # changed: only its pages
    recent_full, recent_inc1 = entry(world["full"], "recent"), entry(world["inc1"], "recent")
    assert (recent_inc1.mtime, recent_inc1.ctime, recent_inc1.inode) == \
        (recent_full.mtime, recent_full.ctime, recent_full.inode)
    assert recent_inc1.encoding == ENCODING and recent_inc1.logical_size == recent_full.size


def restore(world, backup_name: str | None, target_name: str, *args: str):
    which = ["--backup", backup_name] if backup_name else ["--cluster", "src"]
    proc, target, port = world["env"].restore_started(target_name, *which, *args)
    world["last_restore"] = json.loads(proc.stdout)
    return target, port


def test_restore_of_a_chain_of_incrementals_to_latest(world):
    import psycopg

    target, port = restore(world, world["inc2"]["name"], "inc-latest")
    with psycopg.connect(host=str(world["env"].sock), port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        assert conn.execute(CHECKSUM).fetchone() == world["checksum"]
        assert conn.execute("SELECT count(*) FROM later").fetchone()[0] == 1000
        for table in ("still", "recent"):      # one taken whole from the full, one as a page delta
            assert conn.execute(f"SELECT count(*), sum(g) FROM {table}").fetchone() == (10000, 50005000)
    assert restored_rows(world, target, port) == world["all"]


def test_point_in_time_restore_from_an_incremental(world):
    target, port = restore(world, world["inc1"]["name"], "inc-pitr", "--restore-time", world["t_mid"].isoformat())
    assert restored_rows(world, target, port) == world["before_mid"]


def test_restore_by_cluster_and_time_picks_the_newest_base_before_that_time(world):
    target, port = restore(world, None, "inc-auto", "--restore-time", world["t_mid"].isoformat())
    assert world["last_restore"]["backup"] == world["inc1"]["name"]      # inc2 was taken after t_mid
    assert restored_rows(world, target, port) == world["before_mid"]


def test_a_later_full_reads_every_file_and_stores_only_the_chunks_that_changed(world):
    """A full backup depends on no earlier one, so it reads every file; relation files are cut at
    fixed offsets, so the chunks of unchanged pages are the previous full's (found by hash)."""
    import psycopg

    env, conn = world["env"], world["conn"]
    conn.execute(CHECKSUM)                             # hint bits set now, not after the next full
    backup(env, "full")
    conn.execute("UPDATE big SET v = md5(v) WHERE g < 100")   # the first pages of 'big' only
    world["checksum"] = conn.execute(CHECKSUM).fetchone()
    full = backup(env, "full")
    assert full["parent"] is None
    summary = json.loads(env.backupctl("snapshot", "show", full["positions"]["data_snapshot"], "--repo",
                                       env.repo_url, "--password-file", str(env.root / "password"),
                                       "--json").stdout)["summary"]
    assert summary["files_unmodified"] == 0 and summary["bytes_read"] == summary["bytes_total"]
    # 'big' is ~20 one-MiB chunks: the update changed the first, the others are the previous full's
    assert summary["blobs_reused"] >= 15, summary
    assert summary["bytes_added"] < world["full"]["bytes_added"] / 4, (summary, world["full"]["bytes_added"])
    target, port = restore(world, full["name"], "later-full")
    with psycopg.connect(host=str(env.sock), port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        assert c.execute(CHECKSUM).fetchone() == world["checksum"]
