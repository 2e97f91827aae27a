"""Repository locks: who is working on the repository, so gc knows what it must wait for.

Backups, restores and checks take a shared lock; gc takes a ``gc`` lock, which excludes
other gc runs but not backups (gc defers deleting until the backups that might use the
data have finished; see gc.py). ``exclusive`` excludes everything. A lock records owner,
host, pid and time, and is refreshed while held; one not refreshed for STALE_AFTER, or
whose process on this host is gone, is stale and ignored.

A process is told from another by what no clock step changes: the boot, the pid namespace
and the process's start in clock ticks since boot (Linux). A lock of another boot or pid
namespace (a container sharing the host's name) is judged by its refresh time alone.

A holder must not act once another process may have judged its lock stale: a gc may then
have deleted what it was about to use. It checks ``check_still_held`` before each write that
others rely on, and a lock that may have looked stale is never refreshed back to life. Hosts
sharing a repository must keep their clocks within SAFE_AGE of each other (NTP).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

import psutil

from backupctl.errors import LockedError
from backupctl.repository.crypto import MasterKey
from repo_plugins import Store

LOCKS_PREFIX = "locks/"
STALE_AFTER = 30 * 60
REFRESH_EVERY = 5 * 60
RETRY_REFRESH_AFTER = 30
# A holder's lock is lost once its last written refresh is older than this: the rest of
# STALE_AFTER is the margin for clock skew between hosts.
SAFE_AGE_FRACTION = 0.5
_AAD = b"backupctl-lock"
_CONFLICTS = {
    "shared": {"exclusive"},
    "gc": {"gc", "exclusive"},
    "exclusive": {"shared", "gc", "exclusive"},
}


@dataclass
class LockInfo:
    kind: str
    hostname: str
    pid: int
    username: str
    created: float
    refreshed: float
    purpose: str = ""
    id: str = ""
    boot_id: str = ""              # what tells this holder's process from another, whatever the clock
    pid_namespace: int = 0
    start_ticks: int = 0

    def is_stale(self, now: float | None = None) -> bool:
        now = now or time.time()
        if now - self.refreshed > STALE_AFTER:
            return True
        if self.hostname != socket.gethostname():
            return False
        if self.boot_id:
            if not self.start_ticks or (self.boot_id, self.pid_namespace) != (_boot_id(), _pid_namespace()) \
                    or not _proc_is_own():
                return False       # another boot or container, or no way to tell: the refresh time decides
            ticks = _start_ticks(self.pid)
            return ticks == _GONE or ticks is not None and ticks != self.start_ticks
        try:                       # a lock without them (written elsewhere than Linux)
            return psutil.Process(self.pid).create_time() > self.created + 1
        except psutil.NoSuchProcess:
            return True

    def to_dict(self) -> dict:
        return {**asdict(self), "stale": self.is_stale()}

    def describe(self) -> str:
        age = int(time.time() - self.created)
        return f"{self.kind} lock by {self.username}@{self.hostname} pid {self.pid} ({self.purpose or 'unknown'}, {age}s ago)"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


_GONE = -1


def _proc_is_own() -> bool:
    """Whether /proc shows this process's pid namespace (not the host's, seen from a container)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot; _GONE if there is no such process;
    None if it cannot be told (hidden by hidepid, content not understood)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])    # field 22; the name may hold spaces
    except (ValueError, IndexError):
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return _GONE
        except OSError:             # EPERM: it exists, another user's, its /proc entry hidden
            pass
        return None


_FIELDS = set(LockInfo.__dataclass_fields__)


def _safe_age() -> float:
    return STALE_AFTER * SAFE_AGE_FRACTION


def list_locks(store: Store, key: MasterKey) -> list[LockInfo]:
    out = []
    for name, _ in store.list(LOCKS_PREFIX):
        try:
            d = json.loads(key.decrypt(store.get(name), _AAD, f"lock {name}"))
        except FileNotFoundError:
            continue
        d["id"] = name[len(LOCKS_PREFIX):]
        out.append(LockInfo(**{k: v for k, v in d.items() if k in _FIELDS}))   # a later version's too
    return out


def remove_locks(store: Store, key: MasterKey, *, remove_all: bool = False) -> list[LockInfo]:
    """Delete stale lock files (or every lock file: only when nothing runs, e.g. after a host was lost);
    returns what was removed. Stale locks are already ignored; this tidies them away."""
    removed = [info for info in list_locks(store, key) if remove_all or info.is_stale()]
    for info in removed:
        store.delete(LOCKS_PREFIX + info.id)
    return removed


class Lock:
    """A held lock; refreshes itself in the background until released."""

    def __init__(self, store: Store, key: MasterKey, kind: str, purpose: str) -> None:
        self.store, self.key = store, key
        now = time.time()
        boot_id = _boot_id()
        ticks = _start_ticks(os.getpid()) if boot_id and _proc_is_own() else None
        self.info = LockInfo(kind, socket.gethostname(), os.getpid(), getpass.getuser(), now, now, purpose,
                             os.urandom(16).hex(), boot_id, _pid_namespace() if boot_id else 0,
                             ticks if ticks and ticks > 0 else 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return LOCKS_PREFIX + self.info.id

    def _write(self, refreshed: float) -> None:
        body = asdict(self.info)
        body.pop("id")
        body["refreshed"] = refreshed
        previous = self.info.refreshed
        self.store.put(self.name, self.key.encrypt(json.dumps(body).encode(), _AAD))
        # only once written (what the others see), and not if it landed when the lock may have looked
        # stale: the lock stays as good as lost
        if time.time() - previous <= _safe_age():
            self.info.refreshed = refreshed

    def acquire(self) -> "Lock":
        self._write(self.info.refreshed)
        conflicts = [other for other in list_locks(self.store, self.key)
                     if other.id != self.info.id and other.kind in _CONFLICTS[self.info.kind] and not other.is_stale()]
        if conflicts:
            self.store.delete(self.name)
            raise LockedError(f"the repository is locked: {conflicts[0].describe()}",
                              "wait for it to finish; a lock whose process died is ignored automatically")
        self._thread = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        wait = REFRESH_EVERY
        while not self._stop.wait(wait):
            if self._may_look_stale():
                return            # never revive it: a gc may have acted as if it were gone
            try:
                self._write(time.time())
                wait = REFRESH_EVERY
            except Exception:     # retried soon: a store outage of a few minutes must not lose it
                wait = min(REFRESH_EVERY, RETRY_REFRESH_AFTER)
            if self._stop.is_set():                 # released while the write hung: it landed late
                try:
                    self.store.delete(self.name)
                except Exception:
                    pass

    def _may_look_stale(self) -> bool:
        """Whether another process may have judged this lock stale: the last refresh written in time
        is too old (a write that hung carries the time it started)."""
        return time.time() - self.info.refreshed > _safe_age()

    def check_still_held(self) -> None:
        """Before committing, make sure nobody could have judged this lock stale."""
        if self._may_look_stale() or not self.store.exists(self.name):
            raise LockedError("this process's repository lock went stale or was removed",
                              "the operation was not committed; run it again")

    def confirm_written(self, name: str) -> None:
        """``check_still_held`` after writing object ``name`` that others rely on: a write that landed
        when the lock may have looked stale (a gc may have acted meanwhile) is deleted again."""
        try:
            self.check_still_held()
        except LockedError:
            self.store.delete(name)
            raise

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.store.delete(self.name)

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
