"""Locks: conflicting operations are refused clearly; locks of dead processes are ignored."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
import time
import types

import psutil
import pytest

from backupctl.errors import LockedError
from backupctl.repository import Repository
from backupctl.repository import gc as gc_module
from backupctl.repository import lock as lock_module
from backupctl.repository.backup import Archiver, backup_paths, backup_stream
from backupctl.repository.check import check_repository
from backupctl.repository.gc import gc
from backupctl.repository.lock import Lock, LockInfo, list_locks
from backupctl.repository.plan import load_plans
from tests.conftest import PASSWORD
from tests.helpers import write_random

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_exclusive_lock_conflicts_with_a_running_backup(fs_repo_url):
    repo = Repository.init(fs_repo_url, PASSWORD)
    shared = repo.lock("shared", "backup")
    with pytest.raises(LockedError, match=r"shared lock by .*\(backup"):
        repo.lock("exclusive", "migration")
    assert len(list_locks(repo.store, repo.key)) == 1   # the refused lock cleaned up after itself
    second_gc = repo.lock("gc", "gc")
    with pytest.raises(LockedError, match="gc lock"):
        repo.lock("gc", "gc")
    second_gc.release()
    shared.release()
    repo.lock("exclusive", "migration").release()


def test_lock_of_a_dead_process_is_stale_and_ignored(fs_repo_url):
    repo = Repository.init(fs_repo_url, PASSWORD)
    code = ("from backupctl.repository import Repository; import os; "
            f"r = Repository.open({fs_repo_url!r}, {PASSWORD!r}); r.lock('exclusive', 'crashy'); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    [dead] = list_locks(repo.store, repo.key)
    assert dead.is_stale() and dead.purpose == "crashy"
    repo.lock("exclusive", "after the crash").release()


def test_a_lock_that_was_removed_cannot_commit(fs_repo_url):
    repo = Repository.init(fs_repo_url, PASSWORD)
    lock = Lock(repo.store, repo.key, "shared", "backup").acquire()
    repo.store.delete(lock.name)
    with pytest.raises(LockedError, match="not committed"):
        lock.check_still_held()
    lock.release()


def test_repo_locks_lists_and_unlock_removes_only_stale_locks_unless_told(fs_repo_url):
    import json

    from tests.repository.test_cli import run

    repo = Repository.init(fs_repo_url, PASSWORD)
    code = ("from backupctl.repository import Repository; import os; "
            f"r = Repository.open({fs_repo_url!r}, {PASSWORD!r}); r.lock('shared', 'died'); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    live = repo.lock("shared", "still running")
    env = {"BACKUPCTL_PASSWORD": PASSWORD}
    listed = json.loads(run("repo", "locks", "--repo", fs_repo_url, "--json", env=env).stdout)
    assert {(entry["purpose"], entry["stale"]) for entry in listed} == {("died", True), ("still running", False)}

    out = run("repo", "unlock", "--repo", fs_repo_url, env=env).stdout.decode()
    assert "removed shared lock" in out and "(died" in out and "removed 1 lock(s)" in out
    assert [info.purpose for info in list_locks(repo.store, repo.key)] == ["still running"]
    live.check_still_held()                                    # the live lock was left alone

    removed = json.loads(run("repo", "unlock", "--repo", fs_repo_url, "--remove-all", "--json", env=env).stdout)
    assert [entry["purpose"] for entry in removed["removed"]] == ["still running"]
    assert list_locks(repo.store, repo.key) == []
    with pytest.raises(LockedError, match="went stale or was removed"):
        live.check_still_held()
    live._stop.set()


# From a review: the refresh thread set the refresh time before writing it and refreshed again after
# a gap, so a lock every other process judged stale (failed refreshes, a paused process) passed
# check_still_held, and a writer committed a snapshot reusing a blob gc deleted meanwhile.

class _LockWritesDown:
    """The store, with lock writes failing (mode "fail") or hanging (mode "hang": a paused process)
    while ``down`` is set."""

    def __init__(self, store, mode: str) -> None:
        self._store, self.mode = store, mode
        self.down = threading.Event()
        self.up = threading.Event()

    def put(self, name, data):
        if name.startswith("locks/") and self.down.is_set():
            if self.mode == "fail":
                raise OSError("lock write refused (network, throttling)")
            self.up.wait()
        return self._store.put(name, data)

    def __getattr__(self, attr):
        return getattr(self._store, attr)


@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_a_lock_others_may_have_judged_stale_cannot_commit(fs_repo_url, monkeypatch, mode):
    monkeypatch.setattr(lock_module, "STALE_AFTER", 2.0)
    monkeypatch.setattr(lock_module, "REFRESH_EVERY", 0.2)
    Repository.init(fs_repo_url, PASSWORD).close()
    data = os.urandom(600_000)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        old = backup_stream(repo, io.BytesIO(data), "old")
        repo.forget(old)                                       # its blobs are unused now
    with Repository.open(fs_repo_url, PASSWORD) as writer:
        writer.store = flaky = _LockWritesDown(writer.store, mode)
        with writer.lock("shared", "backup") as lock:
            archiver = Archiver(writer, lock=lock)              # index read: the old blobs are known
            flaky.down.set()
            time.sleep(2.6)                                    # others now judge the lock stale
            with Repository.open(fs_repo_url, PASSWORD) as other:
                assert all(lk.is_stale() for lk in list_locks(other.store, other.key) if lk.kind == "shared")
                report = gc(other)                             # so gc waits for nobody and deletes
                assert report.packs_deleted >= 1
            flaky.up.set()
            flaky.down.clear()
            time.sleep(0.5)
            archiver.add_stream(io.BytesIO(data), "again")     # dedups against the deleted pack
            try:
                with pytest.raises(LockedError, match="went stale"):   # the refreshes did not revive it
                    archiver.commit(paths=["again"], tags=[], parent=None, metadata=None,
                                    started=time.monotonic(), hostname=None)
            finally:
                archiver.close()
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert not repo.snapshots() and check_repository(repo).ok


# From a third review: late refresh writes, index files and gc's phase 1 written on a lock that
# may have looked stale, a clock step on this host, and clock skew between hosts.
MIN = 60.0


class _Once:
    """A stop event whose wait() lets the refresh loop run exactly one iteration."""

    def __init__(self) -> None:
        self.calls = 0

    def wait(self, _timeout) -> bool:
        self.calls += 1
        return self.calls > 1

    def set(self) -> None:
        self.calls = 99

    def is_set(self) -> bool:
        return self.calls > 1


def _make_stale(lock: Lock, age: float = 3600) -> None:
    """The refreshes stopped long ago: the lock file and the lock agree on an old refresh time."""
    lock._stop.set()
    if lock._thread:
        lock._thread.join()
    lock._write(time.time() - age)


def test_a_refresh_that_lands_after_the_lock_looked_stale_does_not_revive_it(fs_repo_url, monkeypatch):
    """Refreshed at T0; refreshes fail for 14 min; the write started at T0+14 lands at T0+21. A host
    whose clock is 10 minutes ahead saw the file's T0 and judged the lock stale from T0+20 (its gc
    may have deleted packs): the late write must not make the lock pass check_still_held."""
    repo = Repository.init(fs_repo_url, PASSWORD)
    clock = {"now": time.time()}
    monkeypatch.setattr(lock_module, "time", types.SimpleNamespace(time=lambda: clock["now"]))
    t0 = clock["now"]
    lock = Lock(repo.store, repo.key, "shared", "backup")
    lock._write(lock.info.refreshed)                         # acquire, without its refresh thread
    judged = []

    class SlowStore:
        def put(self, name, data):
            clock["now"] = t0 + 21 * MIN                     # the write hangs for 7 minutes...
            judged.append([lk.is_stale(now=clock["now"] + 10 * MIN) for lk in list_locks(repo.store, repo.key)])
            return repo.store.put(name, data)                # ...and then lands

        def __getattr__(self, attr):
            return getattr(repo.store, attr)

    lock.store = SlowStore()
    clock["now"] = t0 + 14 * MIN                             # two refreshes failed meanwhile
    lock._stop = _Once()
    lock._refresh_loop()
    assert judged == [[True]]                                # the host ahead judged it stale meanwhile
    with pytest.raises(LockedError, match="went stale"):
        lock.check_still_held()


def test_a_stale_backup_leaves_no_index_naming_packs_gc_deleted(fs_repo_url):
    """commit() writes the index before check_still_held: a backup whose lock went stale (gc then
    deleted its unindexed packs as orphans) is refused, but its index file stays, naming deleted
    packs; the next backup dedups against them."""
    Repository.init(fs_repo_url, PASSWORD).close()
    data = os.urandom(700_000)
    with Repository.open(fs_repo_url, PASSWORD) as writer:
        lock = writer.lock("shared", "backup")
        archiver = Archiver(writer, lock=lock)
        archiver.add_stream(io.BytesIO(data), "a")
        archiver.finish_data()                               # packs uploaded, unindexed
        _make_stale(lock)
        with Repository.open(fs_repo_url, PASSWORD) as other:
            assert gc(other).orphan_packs >= 1               # nobody waited for the stale lock
        try:
            with pytest.raises(LockedError):
                archiver.commit(paths=["a"], tags=[], parent=None, metadata=None,
                                started=time.monotonic(), hostname=None)
        finally:
            archiver.close()
            lock.release()
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        backup_stream(repo, io.BytesIO(data), "b")           # reuses the blobs the index names
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert check_repository(repo).ok


def test_gc_phase_one_checks_its_lock_before_writing_a_repack_index_or_plan(fs_repo_url, tmp_path, monkeypatch):
    """_repack's index and the plan are written without check_still_held: a gc whose lock went
    stale during a long repack (another gc may be running meanwhile) still writes both."""
    repo = Repository.init(fs_repo_url, PASSWORD, pack_size=8 * 1024 * 1024)
    keep, drop = tmp_path / "keep", tmp_path / "drop"
    write_random(keep / "k.bin", 2 * 1024 * 1024, seed=4)
    write_random(drop / "d.bin", 5 * 1024 * 1024, seed=5)
    both = backup_paths(repo, [str(keep), str(drop)])
    backup_paths(repo, [str(keep)])
    repo.forget(both)
    held = {}
    real_gc_lock, real_repack = gc_module._gc_lock, gc_module._repack

    def gc_lock(r):
        held["lock"] = real_gc_lock(r)
        return held["lock"]

    def repack(*args, **kwargs):
        _make_stale(held["lock"])                            # a repack of hours on a flaky store
        return real_repack(*args, **kwargs)

    monkeypatch.setattr(gc_module, "_gc_lock", gc_lock)
    monkeypatch.setattr(gc_module, "_repack", repack)
    running = repo.lock("shared", "backup")                  # so the plan waits: no _execute check
    index_files = set(repo.store.list("index/"))
    try:
        with pytest.raises(LockedError):
            gc(Repository.open(fs_repo_url, PASSWORD))
        assert not load_plans(repo)
        assert set(repo.store.list("index/")) == index_files  # nor the repacked packs' index
    finally:
        running.release()


def test_a_live_lock_on_this_host_is_not_stale_after_the_clock_steps_forward(fs_repo_url, monkeypatch):
    """is_stale on the same host compares psutil's create_time (boot time from the current wall
    clock + ticks) with the recorded ``created``: a forward step of a few seconds (NTP/chrony
    makestep, VM resume) makes a CLI process's live lock stale, and check_still_held cannot know."""
    Repository.init(fs_repo_url, PASSWORD).close()
    code = ("from backupctl.repository import Repository; import time; "
            f"r = Repository.open({fs_repo_url!r}, {PASSWORD!r}); r.lock('shared', 'backup'); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"held"
        repo = Repository.open(fs_repo_url, PASSWORD)
        [info] = list_locks(repo.store, repo.key)
        started_before_lock = info.created - psutil.Process(proc.pid).create_time()
        step = started_before_lock + 2                       # seconds
        real_boot = psutil._pslinux.boot_time
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: real_boot() + step)
        assert not info.is_stale(now=time.time() + step), f"live lock stale after a {step:.1f}s clock step"
    finally:
        proc.kill()
        proc.wait()


def test_check_still_held_leaves_a_margin_for_clock_skew(fs_repo_url):
    """Refreshes failed for 21 minutes; another host whose clock is 10 minutes ahead judges the lock
    stale (its gc deletes): check_still_held must refuse (SAFE_AGE: half of STALE_AFTER)."""
    repo = Repository.init(fs_repo_url, PASSWORD)
    lock = repo.lock("shared", "backup")
    _make_stale(lock, age=21 * MIN)
    [seen] = list_locks(repo.store, repo.key)
    seen.hostname = "another-host"
    assert seen.is_stale(now=time.time() + 10 * MIN)
    try:
        with pytest.raises(LockedError):
            lock.check_still_held()
    finally:
        lock.release()


# From a fourth review: a store outage of a few minutes, an index write that lands late, and
# same-host liveness in a pid namespace, under hidepid, and with /proc content not understood.
class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


class _Ticking:
    """A stop event whose wait(t) moves the fake clock by t, until ``until``."""

    def __init__(self, clock: _Clock, until: float) -> None:
        self.clock, self.until, self.stopped = clock, until, False

    def wait(self, timeout) -> bool:
        self.clock.now += timeout
        return self.stopped or self.clock.now >= self.until

    def set(self) -> None:
        self.stopped = True

    def is_set(self) -> bool:
        return self.stopped


def test_a_six_minute_store_outage_does_not_lose_a_long_backups_lock(fs_repo_url, monkeypatch):
    """Refreshed at T0; the store refuses writes from T0+4.9 to T0+11 (each refused write takes
    30 s: a timeout). With a retry only every REFRESH_EVERY the third try came at T0+16, past
    SAFE_AGE, and the lock was lost for good: a failed refresh is retried after 30 s."""
    repo = Repository.init(fs_repo_url, PASSWORD)
    clock = _Clock()
    monkeypatch.setattr(lock_module, "time", types.SimpleNamespace(time=clock.time))
    t0 = clock.now
    lock = Lock(repo.store, repo.key, "shared", "backup")
    lock._write(lock.info.refreshed)

    class Outage:
        def put(self, name, data):
            if t0 + 4.9 * MIN <= clock.now <= t0 + 11 * MIN:
                clock.now += 30
                raise OSError("503 Slow Down")
            return repo.store.put(name, data)

        def __getattr__(self, attr):
            return getattr(repo.store, attr)

    lock.store = Outage()
    lock._stop = _Ticking(clock, until=t0 + 40 * MIN)
    lock._refresh_loop()
    lock.store = repo.store
    lock.check_still_held()          # the store is back for half an hour: the lock should be held


class _LateIndexWrite:
    """The store, its first index write hanging until the clock reads ``lands_at``, ``meanwhile``
    running while it hangs; then it lands."""

    def __init__(self, store, clock, lands_at: float, meanwhile) -> None:
        self._store, self._clock, self._lands_at, self._meanwhile = store, clock, lands_at, meanwhile
        self._done = False

    def put(self, name, body):
        if name.startswith("index/") and not self._done:
            self._done = True
            self._clock.now = self._lands_at
            self._meanwhile()
        return self._store.put(name, body)

    def __getattr__(self, attr):
        return getattr(self._store, attr)


def _refused_commit(archiver) -> None:
    with pytest.raises(LockedError):
        archiver.commit(paths=["a"], tags=[], parent=None, metadata=None, started=time.monotonic(), hostname=None)


def test_an_index_write_that_lands_late_is_not_left_naming_packs_gc_deleted(fs_repo_url, monkeypatch):
    """check_still_held passes at T0+14 (refreshes failing); the index put then hangs until T0+31
    (an NFS server away, a stuck connection). Meanwhile a gc judges the lock stale and deletes the
    backup's unindexed packs. The index lands; commit then refuses the snapshot, but the index
    naming deleted packs must not stay: the next backup would dedup against it."""
    Repository.init(fs_repo_url, PASSWORD).close()
    clock = _Clock()
    monkeypatch.setattr(lock_module, "time", types.SimpleNamespace(time=clock.time))
    t0 = clock.now
    data = os.urandom(700_000)
    with Repository.open(fs_repo_url, PASSWORD) as writer:
        lock = Lock(writer.store, writer.key, "shared", "backup")
        lock._write(lock.info.refreshed)                     # acquired; its refreshes now fail
        archiver = Archiver(writer, lock=lock)
        archiver.add_stream(io.BytesIO(data), "a")
        archiver.finish_data()                               # packs uploaded, unindexed
        real = writer.store

        def gc_meanwhile():
            with Repository.open(fs_repo_url, PASSWORD) as other:
                assert gc(other).orphan_packs >= 1           # a gc deletes the unindexed packs

        writer.store = _LateIndexWrite(real, clock, t0 + 31 * MIN, gc_meanwhile)
        clock.now = t0 + 14 * MIN
        try:
            _refused_commit(archiver)
        finally:
            writer.store = real
            archiver.close()
            lock.release()
    clock.now = time.time() + 40 * MIN
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo)
        assert result.ok, result.errors                      # an index names deleted packs
        backup_stream(repo, io.BytesIO(data), "b")


def test_a_holder_in_a_pid_namespace_that_sees_the_hosts_proc_is_not_judged_stale(fs_repo_url):
    """``unshare -pf`` without --mount-proc (or a sandbox bind-mounting the host's /proc): the
    holder's os.getpid() is a pid of its namespace, /proc is the host's. _start_ticks(getpid())
    reads another process (or none); the psutil rule looked the namespace pid up in the host's
    /proc: the live lock was stale at once. Such a lock is judged by its refresh time alone."""
    Repository.init(fs_repo_url, PASSWORD).close()
    code = textwrap.dedent(f"""
        import os, sys, time
        from backupctl.repository import Repository
        repo = Repository.open({fs_repo_url!r}, {PASSWORD!r})
        while True:                       # a holder whose namespace pid no host process has
            pid = os.fork()
            if pid == 0:
                if os.path.exists(f"/proc/{{os.getpid()}}"):
                    os._exit(3)
                repo.lock("shared", "backup")
                print("held", os.getpid(), flush=True)
                time.sleep(60)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 3:
                break
    """)
    # --kill-child: the namespace and its processes end with unshare
    proc = subprocess.Popen(["unshare", "-pf", "--kill-child", sys.executable, "-c", code], stdout=subprocess.PIPE,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        line = proc.stdout.readline().split()
        assert line and line[0] == b"held"
        repo = Repository.open(fs_repo_url, PASSWORD)
        [info] = list_locks(repo.store, repo.key)
        assert not info.is_stale(), f"a live lock judged stale: {info}"
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_of_another_user_on_a_hidepid_host_is_not_judged_stale(fs_repo_url):
    """/proc mounted hidepid=2 (a common hardening): another user's /proc/PID is invisible, so a
    gc run by an unprivileged user judges root's running backup stale (its unindexed packs are
    orphans to that gc). os.kill(pid, 0) would say EPERM: the process exists."""
    Repository.init(fs_repo_url, PASSWORD).close()
    judge = ("import json, sys; from backupctl.repository.lock import LockInfo; "
             "print(LockInfo(**json.load(sys.stdin)).is_stale())")
    holder = textwrap.dedent(f"""
        import dataclasses, json, subprocess, sys
        from backupctl.repository import Repository
        from backupctl.repository.lock import list_locks
        repo = Repository.open({fs_repo_url!r}, {PASSWORD!r})
        lock = repo.lock("shared", "backup")
        [info] = list_locks(repo.store, repo.key)
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              sys.executable, "-c", {judge!r}], input=json.dumps(dataclasses.asdict(info)),
                             capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr)
        lock.release()
    """)
    script = f"mount -o remount,hidepid=2 /proc && exec {sys.executable} -c {_sh_quote(holder)}"
    out = subprocess.run(["unshare", "-pfm", "--mount-proc", "sh", "-c", script], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
    assert out.stdout.strip() == "False", (out.stdout, out.stderr)


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def test_unexpected_proc_stat_content_does_not_escape_as_an_exception(monkeypatch):
    """Content _start_ticks does not expect (a sandbox's /proc, a read cut short) must not raise out
    of is_stale (gc, 'repo locks') or Lock()."""
    real_open = open

    def fake_open(path, *args, **kwargs):
        if str(path).startswith("/proc/") and str(path).endswith("/stat"):
            return io.BytesIO(b"")
        return real_open(path, *args, **kwargs)

    me = lock_module._start_ticks(os.getpid())
    info = LockInfo("shared", lock_module.socket.gethostname(), os.getpid(), "u", 0.0, 0.0, "backup", "x",
                    lock_module._boot_id(), lock_module._pid_namespace(), me)
    info.created = info.refreshed = lock_module.time.time()
    monkeypatch.setattr(lock_module, "open", fake_open, raising=False)
    assert not info.is_stale()                        # cannot tell: the refresh time decides


def test_a_late_index_is_not_kept_naming_packs_a_running_gc_is_about_to_delete(fs_repo_url, monkeypatch):
    """The index put hangs past STALE_AFTER; gc B judges the lock stale, plans the backup's packs
    as orphans (no waits), reloads the index (the late file not there yet) and writes its
    consolidated index. The late index lands now, every pack still there; B then deletes them.
    Kept, the index would name deleted packs: a late index is deleted whatever it names (from a
    fifth review)."""
    Repository.init(fs_repo_url, PASSWORD).close()
    clock = types.SimpleNamespace(now=time.time())
    monkeypatch.setattr(lock_module, "time", types.SimpleNamespace(time=lambda: clock.now))
    t0 = clock.now
    ready, go = threading.Event(), threading.Event()
    errors = []

    def run_gc():
        try:
            with Repository.open(fs_repo_url, PASSWORD) as other:
                real_b = other.store

                class PauseBeforePackDelete:
                    def delete(self, name):
                        if name.startswith("data/") and not ready.is_set():
                            ready.set()
                            go.wait(30)
                        return real_b.delete(name)

                    def __getattr__(self, attr):
                        return getattr(real_b, attr)

                other.store = PauseBeforePackDelete()
                gc(other)
        except Exception as exc:
            errors.append(exc)
            ready.set()

    with Repository.open(fs_repo_url, PASSWORD) as writer:
        lock = Lock(writer.store, writer.key, "shared", "backup")
        lock._write(lock.info.refreshed)
        archiver = Archiver(writer, lock=lock)
        archiver.add_stream(io.BytesIO(os.urandom(700_000)), "a")
        archiver.finish_data()
        real = writer.store
        thread = threading.Thread(target=run_gc)

        def gc_about_to_delete():
            thread.start()
            ready.wait(30)                       # gc B is about to delete the packs

        writer.store = _LateIndexWrite(real, clock, t0 + 31 * MIN, gc_about_to_delete)
        clock.now = t0 + 14 * MIN
        try:
            _refused_commit(archiver)
        finally:
            go.set()
            if thread.is_alive() or thread.ident:
                thread.join(30)
            writer.store = real
            archiver.close()
            lock.release()
    assert not errors, errors
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo)
        assert result.ok, result.errors
