"""Full physical backup: the non-exclusive backup API, with the data files read directly.

``pg_backup_start`` and ``pg_backup_stop`` run on one held connection (closing it aborts
the backup); between them the data directory is stored with ``backup_paths``, leaving out
what pg_basebackup leaves out (WAL, the postmaster's files, replication slots, runtime
directories). The files are copied while the server writes them: the WAL from the start
LSN to the stop LSN, archived by ``archive_command``, makes them consistent at restore.

Two snapshots make one backup: the data files (metadata ``postgresql.part = "data"``, no
catalogue keys), then, once ``pg_backup_stop`` returned, the ``backup_label`` with every
position and the catalogue keys. The second is the commit point: a backup whose source
crashed, or whose ``pg_backup_stop`` failed, has no label snapshot and is never usable.
"""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone
from typing import Any

import google_crc32c
import psycopg

from backupctl.catalog.manifest import K_MEMBERS, K_POSITIONS, K_RESTORABLE_FROM, K_RESTORABLE_TO
from backupctl.errors import BackupctlError, NotFoundError, UsageError
from backupctl.repository import Repository, Snapshot
from backupctl.repository.backup import backup_paths, backup_stream
from backupctl.repository.restore import restore_stream
from engine_tools.base import BackupRequest, BackupResult, ClusterTarget
from engine_tools.postgresql import delta
from engine_tools.postgresql import lsn as L
from engine_tools.postgresql.connect import check_backup_ready, connect, server_system_identifier
from engine_tools.postgresql.layout import CONTROL_FILE, ENGINE_KEY, EXCLUDED
from engine_tools.postgresql.wal import read_system_identifier

STOP_TIMEOUT = int(os.environ.get("BACKUPCTL_PG_STOP_TIMEOUT", "600"))


def local_data_dir(conn: psycopg.Connection, cluster: ClusterTarget, server_dir: str) -> str:
    """The data directory as seen from this host, checked to be the server's own (same system identifier)."""
    path = cluster.data_dir or server_dir
    server_id = server_system_identifier(conn)
    if not os.path.isdir(path):
        raise UsageError(f"the data directory {path} of cluster {cluster.name} is not on this host; the physical "
                         "method reads the data files directly",
                         "run backupctl on the database host, or register the cluster with --data-dir set to the "
                         "local path of its data directory")
    if not os.access(os.path.join(path, "global"), os.R_OK | os.X_OK):
        raise UsageError(f"cannot read the data directory {path} of cluster {cluster.name}",
                         "run backupctl as the database's OS user (e.g. postgres) or as root")
    local_id = read_system_identifier(path)
    if local_id != server_id:
        raise UsageError(f"{path} is not the data directory of cluster {cluster.name} (system identifier "
                         f"{local_id} here, {server_id} on the server)",
                         "register the cluster with --data-dir set to the local path of its data directory")
    return path


def _server_now(conn: psycopg.Connection) -> datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0].astimezone(timezone.utc)


def parse_backup_label(label: str) -> dict[str, str]:
    out = {}
    for line in label.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _label_of(repo: Repository, snapshot_ids: list[str]) -> tuple[dict[str, Any], Snapshot, list[str]] | None:
    """A backup's positions, data snapshot, and chain of data snapshots, from its backup_label snapshot."""
    labels = [s for s in (repo.find_snapshot(i) for i in snapshot_ids)
              if (s.metadata.get(ENGINE_KEY) or {}).get("part") == "label"]
    if not labels:
        return None
    info = labels[0].metadata[ENGINE_KEY]
    return labels[0].metadata[K_POSITIONS], repo.find_snapshot(info["data_snapshot"]), \
        list(info.get("chain") or [info["data_snapshot"]])


def _parent(repo: Repository, request: BackupRequest) -> tuple[dict[str, Any], Snapshot, list[str]] | None:
    """For an incremental: the parent's positions, data snapshot, and chain of data snapshots."""
    if request.type != "incremental":
        return None
    parent = _label_of(repo, request.parent_snapshot_ids)
    if parent is None:
        raise BackupctlError(f"the parent of this incremental backup of {request.cluster.name} has no backup_label "
                             "snapshot", "take a full backup first")
    return parent


# A file whose metadata still matches the parent's is taken from the parent only if it was last
# modified this long before the parent started: one written while the parent read it (a page
# flushed during the backup) can be stored torn, and only WAL from the parent's start repairs it;
# an incremental restored replays WAL from its own start. The margin covers the file system's
# coarse timestamps (a clock tick). The earlier of the server's clock and this host's is taken:
# the files' times come from whichever machine holds them.
SETTLE_NS = 1_000_000_000


def _settled_before(parent_positions: dict[str, Any]) -> int:
    starts = [datetime.fromisoformat(parent_positions[k]) for k in ("start_time", "host_start_time")
              if parent_positions.get(k)]
    return int(min(starts).timestamp() * 1_000_000_000) - SETTLE_NS


def _guide(repo: Repository, request: BackupRequest) -> Snapshot | None:
    """For a full: the previous full's data files, to re-cut changed files faster (every file is still
    read: a full depends on no earlier backup). None when there is none, or it is gone."""
    try:
        previous = _label_of(repo, request.previous_snapshot_ids)
    except NotFoundError:                      # forgotten meanwhile: a full needs no guide
        return None
    return previous[1] if previous else None


def _archive_own_wal(repo: Repository, ctx, data_dir: str, timeline: int, start_lsn: str, stop_lsn: str,
                     segment_size: int) -> None:
    """Archive the WAL segments from the backup's start to its stop, in this repository session,
    and check that the archive holds every one: the backup is restorable only with them.

    pg_backup_stop(false) switched to a new segment, so the stop segment is complete in pg_wal;
    segments the archiver already stored (``.done``) or that a batch push stored are skipped. Each
    one stored here is marked in the archive spool, so the server's own archive_command for it
    answers at once (see backupctl/archive_spool.py). ``.done`` says only that the server's
    archive_command succeeded, which may not be this cluster's wal-push: the archive's listing
    decides (pgBackRest too waits for the segments in its own repository).
    """
    from backupctl import archive_spool
    from engine_tools.postgresql import wal

    pg_wal = os.path.join(data_dir, "pg_wal")
    first = L.segment_of(L.parse_lsn(start_lsn), segment_size)
    last = L.segment_of(L.parse_lsn(stop_lsn) - 1, segment_size)
    for seg in range(first, last + 1):
        name = L.segment_name(timeline, seg, segment_size)
        path = os.path.join(pg_wal, name)
        if os.path.exists(os.path.join(pg_wal, "archive_status", f"{name}.done")) \
                or archive_spool.is_marked(ctx.state_dir, name):
            continue
        try:
            ident = archive_spool.identity(path)
        except FileNotFoundError:          # gone (archived and recycled): the check below decides
            continue
        wal.push(repo, path, cluster=ctx.cluster, org=ctx.org, state_dir=ctx.state_dir, tags=ctx.tags)
        archive_spool.mark(ctx.state_dir, name, ident)
    archived = wal.refresh_listing(repo, ctx.state_dir, ctx.cluster, ctx.org, read_system_identifier(data_dir)).files
    missing = [n for n in (L.segment_name(timeline, seg, segment_size) for seg in range(first, last + 1))
               if n not in archived]
    if missing:
        raise BackupctlError(f"the archive of cluster {ctx.cluster} lacks {len(missing)} WAL segment(s) the backup "
                             f"needs, first {missing[0]}: the server's archive_command did not store them there",
                             f"set archive_command as 'backupctl cluster show {ctx.cluster} --archive-config' "
                             "prints, and take the backup again")


def control_file_is_whole(data: bytes) -> bool:
    """pg_control's ControlFileData ends with a CRC-32C of the bytes before it, at an offset that
    depends on the server's version (288 in PostgreSQL 15): look for it. A chance match is one in
    2^32 per offset tried."""
    return any(google_crc32c.value(data[:end]) == int.from_bytes(data[end:end + 4], "little")
               for end in range(16, min(len(data), 512) - 3, 4))


def _check_control_file(repo: Repository, data: Snapshot) -> None:
    """The stored copy of pg_control must be whole: read while the server rewrote it (at a checkpoint),
    it can be torn, and the restored server would refuse to start (pgBackRest checks it too)."""
    stored = io.BytesIO()
    restore_stream(repo, data, stored, name=CONTROL_FILE)
    if not control_file_is_whole(stored.getvalue()):
        raise BackupctlError(f"the copy of {CONTROL_FILE} is torn: it was read while the server rewrote it",
                             "take the backup again")


def full_backup(repo: Repository, request: BackupRequest, archive_hint: str) -> BackupResult:
    """A full backup, or with ``request.type == "incremental"`` one that stores only the pages of
    relation files changed since its parent's start (see delta.py); the rest is the same.

    Each snapshot is reported (``request.committed``) as soon as it is stored: if the backup fails
    or is killed later, the core forgets it (no backup would ever name it, and gc keeps every
    snapshot)."""
    cluster = request.cluster
    parent = _parent(repo, request)
    conn = connect(cluster)
    try:
        s = check_backup_ready(conn, cluster, archive_hint)
        data_dir = local_data_dir(conn, cluster, s["data_directory"])
        spaces = conn.execute("SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')"
                              ).fetchall()
        if spaces:
            raise UsageError(f"cluster {cluster.name} has tablespaces ({', '.join(r[0] for r in spaces)}), which the "
                             "physical method does not back up yet", "use the volume method on a frozen volume")
        label_name = f"backupctl {request.metadata.get('backup') or cluster.name}"[:100]
        start_time = _server_now(conn)
        host_start_time = datetime.now(timezone.utc)      # the clock of the data files' times
        try:
            start_lsn = conn.execute("SELECT pg_backup_start(%s, true)::text", [label_name]).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            raise BackupctlError(f"user {cluster.user or '(default)'} may not take backups of cluster {cluster.name}",
                                 "connect as a superuser, or GRANT EXECUTE ON FUNCTION pg_backup_start, "
                                 "pg_backup_stop TO the user") from None
        tags = list(request.tags)
        if parent is not None and parent[0].get("system_identifier") != read_system_identifier(data_dir):
            raise UsageError(f"cluster {cluster.name} is not the database its parent backup was taken of "
                             "(system identifiers differ)", "take a full backup")
        entries = [os.path.join(data_dir, n) for n in sorted(os.listdir(data_dir)) if n not in EXCLUDED]
        settled = _settled_before(parent[0]) if parent else None
        data = backup_paths(repo, entries, tags=[*tags, "pg-data"],
                            parent=parent[1] if parent else _guide(repo, request),
                            reuse_unchanged=parent is not None,     # a full reads every file
                            settled_before=settled, progress=request.progress,
                            content_hook=delta.content_hook(L.parse_lsn(parent[0]["start_lsn"]), settled)
                            if parent else None,
                            fixed_chunks=delta.fixed_chunk_size,
                            metadata={ENGINE_KEY: {"part": "data", "cluster": cluster.name,
                                                   "backup": request.metadata.get("backup")}})
        request.committed(data.id)
        # Files deleted while it ran are replayed from WAL, sockets skipped (as pg_basebackup); every
        # other error counts, however many vanished files came before it.
        if data.summary.get("unreadable_count"):
            raise BackupctlError(f"could not read {data.summary['unreadable_count']} file(s) of {data_dir}, "
                                 f"first {data.summary['unreadable'][0]}",
                                 "run backupctl as the database's OS user (e.g. postgres) or as root")
        _check_control_file(repo, data)
        conn.execute(f"SET statement_timeout = '{STOP_TIMEOUT}s'")
        # With the logs going to this repository, store the backup's WAL here and now rather than
        # wait for the server to run archive_command (a process per segment); see _archive_own_wal.
        archive_self = request.log_context is not None
        try:
            stop_lsn, label, space_map = conn.execute(
                "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(%s)", [not archive_self]).fetchone()
        except psycopg.errors.QueryCanceled:
            failed = conn.execute("SELECT last_failed_wal, last_failed_time FROM pg_stat_archiver").fetchone()
            raise BackupctlError(f"the WAL needed by the backup of {cluster.name} was not archived within "
                                 f"{STOP_TIMEOUT} s (last failure: {failed[0]} at {failed[1]})",
                                 "check archive_command and the server log; see 'backupctl wal status'") from None
        stop_time = _server_now(conn)
    except psycopg.OperationalError as exc:
        raise BackupctlError(f"the connection to cluster {cluster.name} broke during the backup: "
                             f"{' '.join(str(exc).split())}", "the backup is not usable; take it again") from None
    finally:
        conn.close()
    fields = parse_backup_label(label)
    timeline = int(fields.get("START TIMELINE", "1"))
    segment_size = int(s["wal_segment_size"]) if int(s["wal_segment_size"]) > 1 << 16 \
        else int(s["wal_segment_size"]) * 8192          # older servers report it in 8 KiB blocks
    if archive_self:
        _archive_own_wal(repo, request.log_context, data_dir, timeline, start_lsn, stop_lsn, segment_size)
    positions: dict[str, Any] = {
        "start_lsn": start_lsn, "stop_lsn": stop_lsn, "timeline": timeline,
        "start_time": start_time.isoformat(), "stop_time": stop_time.isoformat(),
        "host_start_time": host_start_time.isoformat(),
        "start_wal_file": L.segment_name(timeline, L.segment_of(L.parse_lsn(start_lsn), segment_size), segment_size),
        "stop_wal_file": L.segment_name(timeline, L.segment_of(L.parse_lsn(stop_lsn) - 1, segment_size), segment_size),
        "segment_size": segment_size, "server_version_num": int(s["server_version_num"]),
        "system_identifier": read_system_identifier(data_dir), "data_snapshot": data.id,
    }
    metadata = dict(request.metadata)
    metadata[K_POSITIONS] = positions
    metadata[K_RESTORABLE_FROM] = metadata[K_RESTORABLE_TO] = stop_time.isoformat()
    metadata[K_MEMBERS] = [data.id]              # the data snapshot carries no manifest (see K_MEMBERS)
    metadata[ENGINE_KEY] = {"part": "label", "data_snapshot": data.id, "tablespace_map": space_map or "",
                            "entries": [os.path.basename(e) for e in entries],
                            # the data snapshots to apply in order, full first: the label makes the
                            # repository self-describing, so 'catalog rebuild' loses no chain
                            "chain": [*(parent[2] if parent else []), data.id]}
    snap = backup_stream(repo, io.BytesIO(label.encode()), "backup_label", tags=[*tags, "pg-label"], metadata=metadata)
    request.committed(snap.id)
    summary = data.summary or {}
    return BackupResult(snapshot_ids=[data.id, snap.id],
                        logical_size=int(summary.get("bytes_total", 0) or 0),
                        bytes_added=int(summary.get("bytes_added", 0) or 0) + int(snap.summary.get("bytes_added", 0)),
                        positions=positions, restorable_from=stop_time, restorable_to=stop_time)
