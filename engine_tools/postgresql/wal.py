"""WAL archiving into the repository: ``archive_command`` (push), ``restore_command`` (fetch), status.

Layout in the repository: each push stores one snapshot holding one or more WAL files
(segments, ``.history``, ``.backup``, ``.partial``) under their own names, tagged ``wal``
and ``cluster=NAME``, with ``metadata["wal"]`` listing them (see ``ARCHIVE_KEY``).

Keeping up with a busy server (pgBackRest's asynchronous archive-push idea, without a
daemon): when PostgreSQL asks to archive segment N, the push also stores every other
segment already waiting (``pg_wal/archive_status/*.ready``) in the same repository
session, then leaves a marker per extra file in the spool (``state_dir/pushed``). When
PostgreSQL asks for those files next, the marker answers "archived" at once. A marker is
written only after the snapshot holding the file is committed, so a crash never makes an
unarchived file look archived.

Fetching is fast for a present file and, as important, for a missing one: recovery asks
for files that do not exist (the next segment at the end of the archive, history files of
future timelines) and must hear "no" quickly. Fetch keeps a local listing of the
archive (``state_dir/listing-*.json``: snapshot id -> the WAL files it holds), and only
reads the snapshots created since the last call.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO

from backupctl import archive_spool
from backupctl.durable import fsync_dir
from backupctl.errors import BackupctlError, UsageError
from backupctl.repository import Repository, Snapshot
from backupctl.repository.backup import backup_paths, backup_stream
from backupctl.repository.restore import copy_stream, reader_for, restore_stream
from backupctl.repository.snapshot import list_snapshot_ids, load_snapshot
from engine_tools.postgresql import lsn as L

ARCHIVE_KEY = "wal"          # snapshot metadata key: {"format", "cluster", "org", "files": [...], ...}
FORMAT = 1
MAX_BATCH_FILES = 64
MAX_BATCH_BYTES = 1 << 30


# -- the local state of one cluster's archiving ---------------------------------------------------
@dataclass
class ArchivedFile:
    name: str
    snapshot: str
    time: str                      # when its snapshot was committed (UTC ISO 8601)
    size: int = 0
    system_identifier: str | None = None
    written: str | None = None     # when the server last wrote it (files archived before this was recorded: None)


@dataclass
class RestorePointRecord:
    name: str
    lsn: str
    time: str
    timeline: int
    snapshot: str


@dataclass
class Listing:
    """What the archive of one cluster holds, as far as the snapshots read so far say."""

    files: dict[str, ArchivedFile] = field(default_factory=dict)
    restore_points: dict[str, RestorePointRecord] = field(default_factory=dict)
    repeated_points: dict[str, list[str]] = field(default_factory=dict)   # name -> LSNs, when made twice
    segment_size: int | None = None

    def segments(self, timeline: int | None = None) -> list[ArchivedFile]:
        out = [f for n, f in self.files.items() if L.is_segment(n)]
        if timeline is not None:
            out = [f for f in out if L.timeline_of(f.name) == timeline]
        return sorted(out, key=lambda f: f.name)


def _listing_path(state_dir: str, repo: Repository) -> str:
    return os.path.join(state_dir, f"listing-{repo.config.id[:16]}.json")


def _write_whole(path: str, fill: Callable[[BinaryIO], Any], *, durable: bool, mode: int | None = None) -> Any:
    """Write ``path`` with ``fill`` (its result returned) through a temporary file of its own in the
    same directory, renamed into place once whole (and, ``durable``, synced first): no reader, and
    no other process writing the same name, ever sees part of it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            result = fill(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        return result
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_write(path: str, data: bytes) -> None:
    """A cache file, whole or not at all (it is rebuilt if lost)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_whole(path, lambda f: f.write(data), durable=False)


def _describe(snap_meta: dict[str, Any], cluster: str, org: str) -> dict[str, Any] | None:
    w = snap_meta.get(ARCHIVE_KEY) if isinstance(snap_meta, dict) else None
    if not isinstance(w, dict) or w.get("cluster") != cluster or w.get("org", "default") != org:
        return None
    return w


def refresh_listing(repo: Repository, state_dir: str, cluster: str, org: str,
                    system_identifier: str | None = None) -> Listing:
    """The archive's listing: the cached one, updated with the snapshots created since it was written.
    With ``system_identifier``, only the files of that database system: a cluster initialised again
    under the same name archives WAL of the same names, which a restore of the earlier system's
    backups must never replay (PostgreSQL would take it for the end of the WAL and promote)."""
    return _listing_from(_archive_snapshots(repo, state_dir, cluster, org), system_identifier)


def _archive_snapshots(repo: Repository, state_dir: str, cluster: str, org: str) -> dict[str, Any]:
    """The cluster's archive snapshots (id -> what each holds), from the cached listing brought up to date."""
    path = _listing_path(state_dir, repo)
    try:
        with open(path, "rb") as f:
            cached = json.load(f)
        if cached.get("cluster") != cluster or cached.get("org") != org:
            cached = {}
    except (OSError, ValueError):
        cached = {}
    seen: dict[str, Any] = cached.get("snapshots", {})
    ids = set(list_snapshot_ids(repo.store))
    new = sorted(ids - set(seen))
    gone = set(seen) - ids
    for sid in gone:
        seen.pop(sid)
    if new:
        def load(sid: str) -> tuple[str, Any]:
            try:
                snap = load_snapshot(repo.store, repo.key, sid)
            except FileNotFoundError:      # forgotten meanwhile
                return sid, None
            w = _describe(snap.metadata, cluster, org)
            return sid, ({"time": snap.time, **w} if w else 0)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for sid, entry in pool.map(load, new):
                if entry is not None:
                    seen[sid] = entry
    if new or gone:
        try:
            _atomic_write(path, json.dumps({"cluster": cluster, "org": org, "snapshots": seen}).encode())
        except OSError:
            pass                            # a read-only state directory only costs speed
    return seen


def _listing_from(seen: dict[str, Any], system_identifier: str | None = None) -> Listing:
    listing = Listing()
    for sid, entry in sorted(seen.items(), key=lambda kv: (kv[1]["time"] if kv[1] else "", kv[0])):
        if not entry or system_identifier and entry.get("system_identifier") not in (None, system_identifier):
            continue
        for f in entry.get("files", []):        # later snapshots win: a re-pushed file
            listing.files[f["name"]] = ArchivedFile(f["name"], sid, entry["time"], f.get("size", 0),
                                                    entry.get("system_identifier"), f.get("written"))
        rp = entry.get("restore_point")
        if rp:
            earlier = listing.restore_points.get(rp["name"])
            if earlier is not None:
                listing.repeated_points.setdefault(rp["name"], [earlier.lsn]).append(rp["lsn"])
            listing.restore_points[rp["name"]] = RestorePointRecord(rp["name"], rp["lsn"], entry["time"],
                                                                    rp["timeline"], sid)
        if entry.get("segment_size"):
            listing.segment_size = int(entry["segment_size"])
    return listing


# -- push ------------------------------------------------------------------------------------------------
read_system_identifier = archive_spool.system_identifier     # the cluster's, from global/pg_control


@dataclass
class PushResult:
    name: str
    stored: list[str]               # the files stored by this call (the asked one first, unless it was archived
                                    # already with the same bytes); empty if spooled or nothing was new
    from_spool: bool = False
    snapshot: str | None = None


def push(repo: Repository, path: str, *, cluster: str, org: str, state_dir: str, tags: list[str],
         batch: bool = True) -> PushResult:
    """Archive the WAL file at ``path`` (``%p``: relative to the data directory, the working directory)."""
    abspath = os.path.abspath(path)
    name = os.path.basename(abspath)
    if not L.is_wal_file(name):
        raise UsageError(f"{path} is not a WAL file", "archive_command must pass %p")
    if not os.path.isfile(abspath):
        raise UsageError(f"WAL file {abspath} does not exist", "archive_command must pass %p, run from the data directory")
    if archive_spool.take(state_dir, abspath):
        return PushResult(name, [], from_spool=True)
    files = [abspath]
    if batch:
        files += _waiting(os.path.dirname(abspath), name, state_dir)
    pg_wal = os.path.dirname(abspath)
    data_dir = os.path.dirname(pg_wal)
    system = read_system_identifier(data_dir)
    files = _not_archived_yet(repo, files, refresh_listing(repo, state_dir, cluster, org, system))
    if not files:                                     # archived before, the same bytes: done
        return PushResult(name, [])
    stats = [os.stat(f) for f in files]            # before reading: what is stored
    entries = [_entry(f, st) for f, st in zip(files, stats)]
    segment_sizes = [e["size"] for e in entries if L.is_segment(e["name"])]
    snap = _archive(repo, files, entries, state_dir=state_dir, cluster=cluster, org=org, system=system,
                    segment_size=max(segment_sizes) if segment_sizes else None, tags=tags)
    for e, st in zip(entries, stats):
        if e["name"] != name:                          # the others: PostgreSQL asks for each later
            archive_spool.mark(state_dir, e["name"], archive_spool.identity_of(st))
    return PushResult(name, [e["name"] for e in entries], snapshot=snap.id)


def _archive(repo: Repository, paths: list[str], entries: list[dict[str, Any]], *, state_dir: str, cluster: str,
             org: str, system: str, segment_size: int | None, tags: list[str]) -> Snapshot:
    """Store files of pg_wal (``entries`` describe them) as one archive snapshot, and add it to the
    cached listing."""
    meta = {ARCHIVE_KEY: {"format": FORMAT, "cluster": cluster, "org": org, "files": entries,
                          "system_identifier": system, "segment_size": segment_size}}
    # WAL hardly ever repeats stored chunks (a zeroed tail compresses to nothing anyway, and gc keeps
    # one copy of a chunk stored twice): storing it without reading the index keeps a push's cost
    # independent of the repository's size.
    snap = backup_paths(repo, paths, tags=["wal", *tags], metadata=meta, parent=None, reuse_stored=False)
    if snap.summary.get("warning_count"):
        raise BackupctlError(f"archiving {entries[0]['name']} did not read every file: "
                             f"{snap.summary.get('warnings')}", "PostgreSQL will retry; check the permissions of pg_wal")
    _remember(repo, state_dir, cluster, org, snap.id, snap.time, meta[ARCHIVE_KEY])
    return snap


def _not_archived_yet(repo: Repository, files: list[str], listing: Listing) -> list[str]:
    """``files`` (the asked one first) without those the archive holds already. PostgreSQL archives a
    file again after a crash before it noted the success: the same bytes are done. Other bytes
    under an archived name would replace WAL that backups need: refused, as pgBackRest does, and
    the archived copy kept. Only the asked file is compared (once per time PostgreSQL asks); a
    waiting one whose name is archived is left for PostgreSQL to ask for."""
    asked, waiting = files[0], files[1:]
    archived = listing.files.get(os.path.basename(asked))
    out = [f for f in waiting if os.path.basename(f) not in listing.files]
    if archived is None:
        return [asked, *out]
    # A damaged archived copy fails here (IntegrityError, with what to run): storing the file again
    # would not mend it, the repository's index still pointing at the damaged blobs.
    if not _same_bytes(repo, archived, asked):
        raise BackupctlError(f"WAL file {archived.name} is archived already, with other contents, from the same "
                             "database system", "find out which server wrote it (a former primary after a "
                             "failover, or a restored copy archiving under its source's name); the archived "
                             "copy is kept")
    return out


class _Compare:
    """A stream's bytes compared, as they are written, with a file's: no copy of either in memory."""

    def __init__(self, f) -> None:
        self.f, self.same = f, True

    def write(self, data: bytes) -> None:
        self.same = self.same and self.f.read(len(data)) == data

    def flush(self) -> None:
        pass


def _same_bytes(repo: Repository, archived: ArchivedFile, path: str) -> bool:
    if archived.size != os.path.getsize(path):
        return False
    with open(path, "rb") as f:
        compare = _Compare(f)
        restore_stream(repo, load_snapshot(repo.store, repo.key, archived.snapshot), compare, name=archived.name)
        return compare.same and not f.read(1)


def _entry(path: str, st: os.stat_result) -> dict[str, Any]:
    # when the server last wrote it: every commit in a segment is before that, and every later one
    # after it, so the restorable window ends there (not when it was archived, which can be much later)
    return {"name": os.path.basename(path), "size": st.st_size,
            "written": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat()}


def _waiting(pg_wal: str, asked: str, state_dir: str) -> list[str]:
    """Other WAL files PostgreSQL has marked ready to archive, oldest first, within the batch limits."""
    status = os.path.join(pg_wal, "archive_status")
    try:
        ready = sorted(n[:-len(".ready")] for n in os.listdir(status) if n.endswith(".ready"))
    except OSError:
        return []
    out, total = [], 0
    for n in ready:
        if n == asked or not L.is_wal_file(n) or archive_spool.is_marked(state_dir, n):
            continue
        p = os.path.join(pg_wal, n)
        try:
            size = os.path.getsize(p)
        except OSError:
            continue
        if len(out) + 1 >= MAX_BATCH_FILES or total + size > MAX_BATCH_BYTES:
            break
        out.append(p)
        total += size
    return out


def _remember(repo: Repository, state_dir: str, cluster: str, org: str, sid: str, when: str,
              entry: dict[str, Any]) -> None:
    """Add a snapshot this process wrote to the cached listing, saving the next fetch a read."""
    path = _listing_path(state_dir, repo)
    try:
        with open(path, "rb") as f:
            cached = json.load(f)
        if cached.get("cluster") != cluster or cached.get("org") != org:
            return
        cached["snapshots"][sid] = {"time": when, **entry}
        _atomic_write(path, json.dumps(cached).encode())
    except (OSError, ValueError, KeyError):
        pass                                # the next fetch reads it from the repository


# -- fetch ----------------------------------------------------------------------------------------------
def fetch(repo: Repository, name: str, dest: str, *, cluster: str, org: str, state_dir: str) -> bool:
    """Write archived WAL file ``name`` to ``dest`` (``%f`` and ``%p``). False if the archive does not hold it."""
    if not L.is_wal_file(name):
        raise UsageError(f"{name!r} is not a WAL file name", "restore_command must pass %f %p")
    dest = os.path.abspath(dest)
    # %p is pg_wal/RECOVERYXLOG in the data directory being recovered: its system's files only
    system = read_system_identifier(os.path.dirname(os.path.dirname(dest)))
    listing = refresh_listing(repo, state_dir, cluster, org, system)
    entry = listing.files.get(name)
    if entry is None:
        return False
    snap = load_snapshot(repo.store, repo.key, entry.snapshot)
    _write_whole(dest, lambda out: restore_stream(repo, snap, out, name=name), durable=True)
    try:
        read_ahead(repo, listing, name, archive_spool.fetched_dir(state_dir, system))
    except (BackupctlError, OSError) as exc:      # the file asked for is in place: only later calls pay
        print(f"backupctl: WAL after {name} was not fetched ahead: {exc}", file=sys.stderr)
    return True


# A temporary file in the read-ahead spool older than this was left by a killed fetch; younger,
# another process may still be writing it.
STALE_TEMPORARY = 3600


def read_ahead(repo: Repository, listing: Listing, name: str, spool: str) -> list[str]:
    """Fetch the segments that follow segment ``name`` on its timeline, without a gap, into ``spool``
    (see ``backupctl.archive_spool``), up to BACKUPCTL_FETCH_AHEAD_MB; drop every other file there
    (passed, another timeline's, or left by a recovery that ended elsewhere), so the spool never
    holds more than that. The names fetched."""
    if not L.is_segment(name):
        return []                                # a timeline probe (history file): the spool stays
    cap = archive_spool.fetch_ahead_bytes()
    window: list[str] = []
    if cap:
        size = listing.segment_size or L.DEFAULT_SEGMENT_SIZE
        timeline, segno = L.parse_segment_name(name, size)
        for n in range(1, cap // size + 1):
            nxt = L.segment_name(timeline, segno + n, size)
            if nxt not in listing.files:
                break                            # recovery stops at a gap: nothing after it is needed yet
            window.append(nxt)
    if not os.path.isdir(spool):
        if not window:
            return []
        os.makedirs(spool, mode=0o700, exist_ok=True)
    waiting = set()
    for f in os.listdir(spool):
        path = os.path.join(spool, f)
        try:
            if f in window:
                waiting.add(f)
            elif not (f.startswith(".") and time.time() - os.stat(path).st_mtime < STALE_TEMPORARY):
                os.unlink(path)                  # (a young temporary file: another process is writing it)
        except FileNotFoundError:
            pass                                 # taken or renamed meanwhile
    wanted = [n for n in window if n not in waiting]
    if wanted:
        prefetch(repo, listing, wanted, spool)
    return wanted


# -- prefetch for a restore -------------------------------------------------------------------------------
def prefetch(repo: Repository, listing: Listing, names: list[str], spool: str, threads: int = 4) -> tuple[int, int]:
    """Write archived files ``names`` into directory ``spool`` in this one repository session, several
    snapshots at a time; returns (files, bytes). restore_command then copies from the spool (see
    restore.py) instead of starting a backupctl per file, which costs ~0.7 s each."""
    by_snapshot: dict[str, list[str]] = {}
    for name in names:
        entry = listing.files.get(name)
        if entry is not None:
            by_snapshot.setdefault(entry.snapshot, []).append(name)

    def fetch_snapshot(item: tuple[str, list[str]]) -> int:
        sid, wanted = item
        snap = load_snapshot(repo.store, repo.key, sid)
        reader = reader_for(repo, snap)
        total = 0
        for name in wanted:
            # synced before it has the name a restore_command serves (readable by the server's user)
            total += _write_whole(os.path.join(spool, name), lambda out, n=name: copy_stream(reader, snap, out, name=n),
                                  durable=True, mode=0o644)
        return total

    with repo.lock("shared", "restore"), ThreadPoolExecutor(max_workers=threads) as pool:
        if repo.index_loaded:
            repo.reload_index()          # else loaded when a blob is not where its snapshot says
        sizes = list(pool.map(fetch_snapshot, by_snapshot.items()))
    fsync_dir(spool)
    return sum(len(v) for v in by_snapshot.values()), sum(sizes)


# -- restore points --------------------------------------------------------------------------------------
def record_restore_point(repo: Repository, *, cluster: str, org: str, name: str, lsn: str, timeline: int,
                         state_dir: str, tags: list[str], system_identifier: str | None = None) -> str:
    """Note a named restore point in the archive, so a restore can check the name and its place in the
    window (of its own database system's archive: see refresh_listing)."""
    body = json.dumps({"name": name, "lsn": lsn, "timeline": timeline}).encode()
    meta = {ARCHIVE_KEY: {"format": FORMAT, "cluster": cluster, "org": org, "files": [],
                          "system_identifier": system_identifier,
                          "restore_point": {"name": name, "lsn": lsn, "timeline": timeline}}}
    snap = backup_stream(repo, io.BytesIO(body), "restore-point.json", tags=["wal", "restore-point", *tags],
                         metadata=meta)
    _remember(repo, state_dir, cluster, org, snap.id, snap.time, meta[ARCHIVE_KEY])
    return snap.id


# -- expiry ----------------------------------------------------------------------------------------------
@dataclass
class Expiry:
    snapshots: int = 0               # archive snapshots forgotten (their data goes with the repository's gc)
    files: int = 0                   # WAL files in them
    # database system -> timeline -> the first segment kept ("all", "none")
    kept_from: dict[str, dict[str, str]] = field(default_factory=dict)
    held: str | None = None          # why nothing was expired, when something stopped it

    def to_dict(self) -> dict[str, Any]:
        return {"snapshots_forgotten": self.snapshots, "files_expired": self.files, "kept_from": self.kept_from,
                "held": self.held}


# A cutoff past every LSN: the whole timeline goes.
NOTHING_KEPT = 1 << 64


def expire(repo: Repository, state_dir: str, cluster: str, org: str, bases: list[dict[str, Any]],
           dry_run: bool = False, others: list[dict[str, Any]] | None = None, tags: list[str] | None = None,
           retired: bool = False) -> Expiry:
    """Forget the archived WAL that no base backup in ``bases`` (the positions of every base backup
    of the cluster) replays: segments, partial segments, backup history files and restore points.
    As pgBackRest's expire, timeline history files stay (they are small, and a restore follows
    them): one archived with WAL that goes is stored again on its own first, so that the status
    shows no gap where WAL went.

    Timelines decide what a base replays: a base on timeline A starting at LSN s needs, on timeline
    T, the WAL from s on when T is A or branched from A's line at or after s (T's history file
    says where). LSNs alone do not order timelines: after an in-place restore to an earlier point,
    the new timeline's WAL has lower LSNs than bases of the old one. A timeline no base replays
    goes whole, unless it is the newest: the server runs on that one, and a backup may be running
    there (it starts past every base that replays that timeline, as a backup starts past its
    timeline's branch point, so nothing it needs goes).

    ``others``: bases catalogued elsewhere that may replay this archive (of the same database system:
    a backup recovered into another cluster). They can only keep more: their timelines are numbered
    by their own cluster's promotions, so one on "timeline 2" says nothing about this archive's
    timeline 2. With ``dry_run``, only counts what would go.

    ``retired``: the cluster is unregistered, so no server archives into it or backs it up any
    more: its newest timeline is not kept for one, every database system in the archive is looked
    at (not only those of ``bases``), and WAL that no base replays goes whole, history files
    included. Entries that record no database system stay."""
    unplaced = [p for p in bases if not (p.get("system_identifier") and p.get("start_lsn") and p.get("segment_size"))]
    if unplaced:           # a base whose start is unknown could need any WAL: expire none
        return Expiry(held=f"{len(unplaced)} base backup(s) record no start LSN or database system")
    snapshots = _archive_snapshots(repo, state_dir, cluster, org)
    result = Expiry()
    doomed: dict[str, dict[str, Any]] = {}
    homeless: dict[str, dict[str, bytes]] = {}          # system -> history files only doomed snapshots hold
    systems = {p["system_identifier"] for p in bases}
    if retired:
        systems |= {e["system_identifier"] for e in snapshots.values() if e and e.get("system_identifier")}
    for system in sorted(systems):
        own = [p for p in bases if p["system_identifier"] == system]
        foreign = [p for p in others or [] if p.get("system_identifier") == system and p.get("start_lsn")]
        listing = _listing_from(snapshots, system)
        timelines = sorted({L.timeline_of(n) for n in listing.files})
        if retired and not own and not foreign:      # nothing replays any of it
            doomed.update({sid: e for sid, e in snapshots.items() if e and e.get("system_identifier") == system})
            result.kept_from[system] = {str(tl): "none" for tl in timelines}
            continue
        size = int(own[0]["segment_size"]) if own else listing.segment_size
        if not size:                 # neither a base nor the archive says how long a segment is: keep it
            continue
        histories = _history_files(repo, listing)
        history = _parsed(histories)
        newest = max(timelines, default=0)
        cutoffs: dict[int, int | None] = {}

        def cutoff(timeline: int) -> int | None:
            """Where the timeline's WAL is kept from: the start of the earliest base that replays it;
            for the newest timeline that none of the cluster's bases replays, None (all kept); for
            another that no base replays at all, NOTHING_KEPT."""
            if timeline not in cutoffs:
                def reaching(ps: list[dict[str, Any]]) -> list[int]:
                    return [L.parse_lsn(p["start_lsn"]) for p in ps
                            if replays(int(p.get("timeline", 1)), L.parse_lsn(p["start_lsn"]), timeline, history)]

                mine, theirs = reaching(own), reaching(foreign)
                if mine:
                    cutoffs[timeline] = min(mine + theirs)
                elif timeline == newest and not retired:
                    cutoffs[timeline] = None
                else:              # no backup runs on a timeline the server left: only others may keep some
                    cutoffs[timeline] = min(theirs, default=NOTHING_KEPT)
            return cutoffs[timeline]

        for sid, entry in snapshots.items():
            if entry and entry.get("system_identifier") == system and _before(entry, cutoff, size):
                doomed[sid] = entry
        homeless[system] = {n: raw for n, raw in histories.items() if listing.files[n].snapshot in doomed}
        result.kept_from[system] = {str(tl): _kept_from(tl, cutoff(tl), size) for tl in timelines}
    if not dry_run:
        for system, files in homeless.items():
            if files:
                _store_again(repo, state_dir, cluster, org, system, files, tags or [])
    for sid, entry in doomed.items():
        try:
            snapshot = load_snapshot(repo.store, repo.key, sid)
            if not dry_run:
                repo.forget(snapshot)
        except FileNotFoundError:
            continue                                    # forgotten meanwhile
        result.snapshots += 1
        result.files += sum(1 for f in entry.get("files", []) if not L.HISTORY_RE.match(f["name"]))
    return result


def _kept_from(timeline: int, cutoff: int | None, segment_size: int) -> str:
    if cutoff is None:
        return "all"
    if cutoff == NOTHING_KEPT:
        return "none"
    return L.segment_name(timeline, L.segment_of(cutoff, segment_size), segment_size)


def _history_files(repo: Repository, listing: Listing) -> dict[str, bytes]:
    """The timeline history files the archive holds, by name, and their bytes."""
    out = {}
    for name, f in sorted(listing.files.items()):
        if L.HISTORY_RE.match(name):
            buf = io.BytesIO()
            restore_stream(repo, load_snapshot(repo.store, repo.key, f.snapshot), buf, name=name)
            out[name] = buf.getvalue()
    return out


def timeline_history(repo: Repository, listing: Listing) -> dict[int, dict[int, int]]:
    """For each timeline whose history file is archived: its ancestor timelines -> the LSN at which
    its line left each (the file's lines: ``parent-timeline  switch-LSN  reason``)."""
    return _parsed(_history_files(repo, listing))


def _parsed(histories: dict[str, bytes]) -> dict[int, dict[int, int]]:
    return {L.timeline_of(n): parse_history(raw.decode(errors="replace")) for n, raw in histories.items()}


def _store_again(repo: Repository, state_dir: str, cluster: str, org: str, system: str, files: dict[str, bytes],
                 tags: list[str]) -> None:
    """Archive history files again, in a snapshot of their own (as wal-push would have)."""
    with tempfile.TemporaryDirectory(prefix="backupctl-history-") as tmp:
        paths = []
        for name, raw in sorted(files.items()):
            paths.append(os.path.join(tmp, name))
            with open(paths[-1], "wb") as f:
                f.write(raw)
        entries = [{"name": name, "size": len(raw)} for name, raw in sorted(files.items())]
        _archive(repo, paths, entries, state_dir=state_dir, cluster=cluster, org=org, system=system,
                 segment_size=None, tags=tags)


def parse_history(text: str) -> dict[int, int]:
    ends = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            ends[int(fields[0])] = L.parse_lsn(fields[1])
    return ends


def replays(base_timeline: int, base_lsn: int, timeline: int, history: dict[int, dict[int, int]]) -> bool:
    """Whether a base on ``base_timeline`` starting at ``base_lsn`` replays WAL of ``timeline``."""
    if base_timeline == timeline:
        return True
    left_at = history.get(timeline, {}).get(base_timeline)
    return left_at is not None and left_at >= base_lsn


def _before(entry: dict[str, Any], cutoff: Callable[[int], int | None], segment_size: int) -> bool:
    """Whether an archive snapshot holds WAL only from before ``cutoff(timeline)`` on each file's
    timeline (where the timeline's WAL is kept from; None: all of it), besides history files
    (which ``expire`` stores again)."""
    rp = entry.get("restore_point")
    if rp:
        start = cutoff(int(rp["timeline"]))
        return start is not None and L.parse_lsn(rp["lsn"]) < start
    files = [f["name"] for f in entry.get("files", []) if not L.HISTORY_RE.match(f["name"])]

    def gone(name: str) -> bool:
        # segments, partial segments and backup history files are named after a segment
        timeline, segno = L.parse_segment_name(name[:24], segment_size)
        start = cutoff(timeline)
        return start is not None and segno < L.segment_of(start, segment_size)

    return bool(files) and all(gone(n) for n in files)


# -- status ----------------------------------------------------------------------------------------------
def _end_of(segment: ArchivedFile, segment_size: int) -> int:
    _, segno = L.parse_segment_name(segment.name, segment_size)
    return (segno + 1) * segment_size


def status(listing: Listing, *, current_lsn: int | None = None, current_timeline: int | None = None,
           now: datetime | None = None) -> dict[str, Any]:
    """The archived range per timeline, gaps, and the lag (time since the last archived file, LSN gap)."""
    now = now or datetime.now(timezone.utc)
    size = listing.segment_size or L.DEFAULT_SEGMENT_SIZE
    timelines: dict[int, dict[str, Any]] = {}
    for tl in sorted({L.timeline_of(f.name) for f in listing.segments()}):
        segs = listing.segments(tl)
        numbers = [L.parse_segment_name(s.name, size)[1] for s in segs]
        present = set(numbers)
        missing = [L.segment_name(tl, n, size) for n in range(numbers[0], numbers[-1] + 1) if n not in present]
        last = max(segs, key=lambda s: s.time)
        timelines[tl] = {"first": segs[0].name, "last": segs[-1].name, "segments": len(segs),
                         "missing": missing[:100], "missing_count": len(missing),
                         "archived_to_lsn": L.format_lsn(_end_of(segs[-1], size)), "last_archived_at": last.time}
    last_time = max((f.time for f in listing.files.values()), default=None)
    out: dict[str, Any] = {"timelines": timelines, "segment_size": size,
                           "history_files": sorted(n for n in listing.files if L.HISTORY_RE.match(n)),
                           "restore_points": sorted(listing.restore_points),
                           "last_archived_at": last_time,
                           "lag_seconds": round((now - datetime.fromisoformat(last_time)).total_seconds(), 3)
                           if last_time else None}
    if current_lsn is not None:
        out["current_lsn"] = L.format_lsn(current_lsn)
        tl = current_timeline if current_timeline in timelines else (max(timelines) if timelines else None)
        if tl is not None:
            archived = L.parse_lsn(timelines[tl]["archived_to_lsn"])
            out["lag_bytes"] = max(0, current_lsn - archived)
        else:
            out["lag_bytes"] = None
    return out
