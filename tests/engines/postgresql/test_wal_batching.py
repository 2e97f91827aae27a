"""Archive push batches the segments waiting in archive_status, and answers for them from its spool."""

from __future__ import annotations

import os

from backupctl.repository import Repository
from engine_tools.postgresql import wal

PASSWORD = "correct horse battery staple"
SEGMENTS = [f"0000000100000000000000{i:02X}" for i in range(1, 6)]


def test_push_stores_every_ready_segment_at_once_and_later_calls_return_from_the_spool(tmp_path):
    repo_url, state = str(tmp_path / "repo"), str(tmp_path / "state")
    pg_wal = tmp_path / "data" / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    for i, name in enumerate(SEGMENTS):
        (pg_wal / name).write_bytes(bytes([i]) * 65536)
        (pg_wal / "archive_status" / f"{name}.ready").touch()
    Repository.init(repo_url, PASSWORD).close()
    with Repository.open(repo_url, PASSWORD) as repo:
        first = wal.push(repo, str(pg_wal / SEGMENTS[0]), cluster="c", org="default", state_dir=state, tags=[])
        assert first.stored == SEGMENTS and not first.from_spool
        snapshots = len(repo.snapshots())
        for name in SEGMENTS[1:]:
            again = wal.push(repo, str(pg_wal / name), cluster="c", org="default", state_dir=state, tags=[])
            assert again.from_spool and again.stored == []
        assert len(repo.snapshots()) == snapshots == 1
        assert not os.listdir(os.path.join(state, "pushed"))
        for i, name in enumerate(SEGMENTS):
            out = tmp_path / f"fetched-{name}"
            assert wal.fetch(repo, name, str(out), cluster="c", org="default", state_dir=state)
            assert out.read_bytes() == bytes([i]) * 65536
        assert not wal.fetch(repo, "000000010000000000000009", str(tmp_path / "x"), cluster="c", org="default",
                             state_dir=state)
        assert not wal.fetch(repo, SEGMENTS[0], str(tmp_path / "y"), cluster="other", org="default", state_dir=state)


def test_status_reports_gaps_per_timeline():
    listing = wal.Listing(segment_size=1 << 20)
    for name in ("000000010000000000000001", "000000010000000000000003", "000000020000000000000003"):
        listing.files[name] = wal.ArchivedFile(name, "s", "2026-12-02T10:00:00+00:00")
    s = wal.status(listing)
    assert s["timelines"][1]["missing"] == ["000000010000000000000002"]
    assert s["timelines"][2]["missing_count"] == 0 and s["timelines"][2]["archived_to_lsn"] == "0/400000"


def test_wal_verify_exits_4_naming_the_first_missing_segment(tmp_path):
    import json
    import subprocess

    env = {**os.environ, "BACKUPCTL_HOME": str(tmp_path / "home"), "BACKUPCTL_PASSWORD": PASSWORD}

    def backupctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["backupctl", *args], env=env, capture_output=True, text=True)

    repo_url = str(tmp_path / "repo")
    assert backupctl("repo", "add", "main", "--url", repo_url, "--default").returncode == 0
    # the server is not running: status says so and still reads the archive
    assert backupctl("cluster", "register", "c", "--engine", "postgresql", "--host", str(tmp_path / "nosock"),
                     "--port", "5").returncode == 0
    empty = backupctl("wal-verify", "--cluster", "c")          # a check that passes with nothing archived lies
    assert empty.returncode == 4 and "nothing is archived for cluster c" in empty.stderr, empty.stderr
    pg_wal = tmp_path / "data" / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    for name in SEGMENTS[:2]:
        (pg_wal / name).write_bytes(b"w" * 65536)
        (pg_wal / "archive_status" / f"{name}.ready").touch()
    with Repository.open(repo_url, PASSWORD) as repo:
        wal.push(repo, str(pg_wal / SEGMENTS[0]), cluster="c", org="default", state_dir=str(tmp_path / "s"), tags=[])
    ok = backupctl("wal-verify", "--cluster", "c", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["timelines"]["1"]["segments"] == 2

    (pg_wal / SEGMENTS[3]).write_bytes(b"w" * 65536)          # 03 never archived: a gap
    (pg_wal / "archive_status" / f"{SEGMENTS[3]}.ready").touch()
    with Repository.open(repo_url, PASSWORD) as repo:
        wal.push(repo, str(pg_wal / SEGMENTS[3]), cluster="c", org="default", state_dir=str(tmp_path / "s"), tags=[])
    gap = backupctl("wal", "verify", "--cluster", "c")
    assert gap.returncode == 4
    assert gap.stderr.count("\n") == 1 and f"from {SEGMENTS[2]}" in gap.stderr and "take a full backup" in gap.stderr
    assert "MISSING" in gap.stdout and "Traceback" not in gap.stderr
