"""A crash mid-backup (the backup process, or the source server, killed with SIGKILL while the data files
are being copied) leaves no usable-looking backup: the catalogue row is Failed, nothing restores it,
rebuilding the catalogue from the repository does not bring it back, and the repository checks clean.

The source holds pgbench -i -s 6 (about 100 MB). A repeated backup of it dedups and takes well under a
second, so rather than race the copy the test freezes the backup process (SIGSTOP) the moment its session
has called pg_backup_start, does the damage, and only then lets it go on (SIGCONT).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time

import pytest

from tests.engines.postgresql.conftest import (
    BACKUPCTL,
    BINDIR,
    _chown_postgres,
    as_postgres,
    drop_env,
    make_env,
    make_instance,
)


@pytest.fixture(scope="module")
def busy():
    env = make_env()
    inst = make_instance(env, "busy")
    proc = as_postgres([f"{BINDIR}/pgbench", "-i", "-s", "6", "-q", "-h", str(env.sock), "-p", str(inst.port),
                        "-U", "postgres", "postgres"])
    assert proc.returncode == 0, proc.stderr
    with inst.connect() as conn:
        inst.wait_archived(conn)
    world = {"env": env, "inst": inst, "good": set(), "crashed": []}
    yield world
    inst.stop()
    drop_env(env)


def start_backup(env) -> subprocess.Popen:
    """backupctl backup create as postgres, as this very process (no runuser in between: the kill reaches it)."""
    return subprocess.Popen([BACKUPCTL, "backup", "create", "--cluster", "busy", "--json"], user="postgres",
                            group="postgres", env={**os.environ, **env.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def freeze_when_copying(inst, proc: subprocess.Popen) -> None:
    """Stop the backup process as soon as its session has started the backup (the data files are next)."""
    deadline = time.monotonic() + 30
    with inst.connect() as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'backupctl' "
                            "AND query LIKE '%pg_backup_start%'").fetchone()[0]:
                proc.send_signal(signal.SIGSTOP)
                assert proc.poll() is None, "the backup finished before the crash: make the database bigger"
                return
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.005)
    raise AssertionError("the backup never started")


def backups(env) -> list[dict]:
    return json.loads(env.backupctl("backup", "list", "--json").stdout)


def assert_nothing_usable(world) -> None:
    env = world["env"]
    listed = backups(env)
    assert {b["name"] for b in listed if b["phase"] == "Completed"} == world["good"]
    by_name = {b["name"]: b for b in listed}
    for name in world["crashed"]:
        assert by_name[name]["phase"] == "Failed" and not by_name[name]["snapshot_ids"]
        assert by_name[name]["restorable_from"] is None and by_name[name]["restorable_to"] is None
        proc = env.backupctl("restore", "create", "--backup", name, "--target-dir", str(env.root / "never"),
                             user="root", check=False)
        assert proc.returncode == 2 and "is Failed, not Completed" in proc.stderr
        assert not (env.root / "never").exists()
    password = str(env.root / "password")
    # rebuilding this catalogue changes nothing; rebuilding a lost one brings back only the completed backups
    again = json.loads(env.backupctl("catalog", "rebuild", "--repo", env.repo_url, "--password-file", password,
                                     "--json").stdout)
    assert again["created"] == []
    assert {b["name"]: b["phase"] for b in backups(env)} == {b["name"]: b["phase"] for b in listed}
    fresh_home = env.root / f"home-rebuilt-{len(world['crashed'])}"
    fresh_home.mkdir()
    _chown_postgres(fresh_home)
    fresh = dataclasses.replace(env, env={**env.env, "BACKUPCTL_HOME": str(fresh_home)})
    rebuilt = json.loads(fresh.backupctl("catalog", "rebuild", "--repo", env.repo_url, "--password-file", password,
                                         "--json").stdout)
    assert sorted(rebuilt["created"]) == sorted(world["good"])
    assert {b["name"] for b in backups(fresh) if b["phase"] == "Completed"} == world["good"]
    check = env.backupctl("repo", "check", "--repo", env.repo_url, "--password-file", password, "--json")
    assert json.loads(check.stdout)["errors"] == []


def test_killing_the_backup_process_leaves_a_failed_backup_and_frees_the_cluster(busy):
    env, inst = busy["env"], busy["inst"]
    proc = start_backup(env)
    freeze_when_copying(inst, proc)
    proc.kill()
    proc.wait()
    listed = backups(env)                    # finds the Running row whose process is gone and fails it
    assert len(listed) == 1 and listed[0]["phase"] == "Failed"
    assert "interrupted" in listed[0]["error_message"] and f"pid {proc.pid}" in listed[0]["error_message"]
    busy["crashed"].append(listed[0]["name"])
    # the dead process's lease does not hold the next backup back for its 10 minutes
    good = json.loads(env.backupctl("backup", "create", "--cluster", "busy", "--json").stdout)
    assert good["phase"] == "Completed"
    busy["good"].add(good["name"])
    assert_nothing_usable(busy)


def test_killing_the_source_server_mid_backup_leaves_a_failed_backup(busy):
    env, inst = busy["env"], busy["inst"]
    proc = start_backup(env)
    freeze_when_copying(inst, proc)
    postmaster = int((inst.data / "postmaster.pid").read_text().split()[0])
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == postmaster]
    for pid in [postmaster, *children]:          # the whole server at once, as a power cut would
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "broke during the backup" in err and "not usable" in err and "Traceback" not in err
    failed = [b for b in backups(env) if b["name"] not in busy["crashed"] and b["phase"] != "Completed"]
    assert len(failed) == 1 and failed[0]["phase"] == "Failed"
    busy["crashed"].append(failed[0]["name"])
    deadline = time.monotonic() + 30
    while any(_state(pid) not in (None, "Z") for pid in [postmaster, *children]) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _state(postmaster) == "Z":       # a container's init that reaps nobody: the lock files name a zombie
        for lock in (inst.data / "postmaster.pid", env.sock / f".s.PGSQL.{inst.port}.lock"):
            lock.unlink(missing_ok=True)
    inst.start()                                 # crash recovery; the source is usable again
    assert_nothing_usable(busy)


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
