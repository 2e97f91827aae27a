"""The ``postgresql`` engine tool plugin: physical full backups, WAL archiving, point-in-time restore.

One file per idea: ``backup.py`` (full backup through the backup API), ``wal.py``
(archive push/fetch/status), ``pitr.py`` (the restorable window), ``restore.py`` (the
restore stages), ``connect.py``, ``server.py`` (pg_ctl and friends), ``lsn.py``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from backupctl.errors import BackupctlError, UsageError
from backupctl.repository import Repository
from engine_tools.base import (
    BackupRequest,
    BackupResult,
    Capability,
    ClusterTarget,
    LogContext,
    MethodSpec,
    RestoreRequest,
    RestoreStage,
)
from engine_tools.postgresql import lsn as L
from engine_tools.postgresql import wal

# backup, restore and connect (psycopg) are imported where used: the server runs wal-push and
# wal-fetch once per WAL file, and they need none of them.

METHOD = "pg-physical"


class PostgresTool:
    name = "postgresql"
    engines = ("postgresql",)
    methods = (
        MethodSpec(METHOD, frozenset({Capability.FULL, Capability.INCREMENTAL, Capability.CONTINUOUS, Capability.PITR}),
                   default=True,
                   description="physical backup through the backup API with WAL archiving (point-in-time restore)"),
    )

    # -- backup ----------------------------------------------------------------------------
    def check(self, cluster: ClusterTarget, method: str) -> None:
        """The method, and the server: reachable, and set up to be backed up (archiving on, ...),
        before the backup is recorded; the backup checks again, the server may change meanwhile."""
        if method != METHOD:
            raise UsageError(f"unknown method {method!r} for PostgreSQL", f"use {METHOD}")
        from engine_tools.postgresql.connect import check_backup_ready, connect

        with connect(cluster) as conn:
            check_backup_ready(conn, cluster, self._hint(cluster))

    def backup(self, repo: Repository, request: BackupRequest) -> BackupResult:
        if request.type == "continuous":
            raise UsageError("continuous backup of PostgreSQL is WAL archiving, run by the server itself",
                             f"set archive_command: see 'backupctl cluster show {request.cluster.name} "
                             "--archive-config'")
        if request.type not in ("full", "incremental"):
            raise UsageError(f"the {METHOD} method does not take {request.type} backups", "use --type full")
        from engine_tools.postgresql.backup import full_backup

        return full_backup(repo, request, self._hint(request.cluster))

    @staticmethod
    def _hint(cluster: ClusterTarget) -> str:
        return (f"archive_mode = on, archive_command = 'backupctl wal-push --cluster {cluster.name} %p' "
                f"(exact lines: 'backupctl cluster show {cluster.name} --archive-config')")

    # -- restore ---------------------------------------------------------------------------
    def restore_stages(self, repo: Repository, request: RestoreRequest) -> list[RestoreStage]:
        from engine_tools.postgresql import restore as restore_mod

        return restore_mod.stages(repo, request)

    def restore(self, repo: Repository, request: RestoreRequest) -> None:
        for stage in self.restore_stages(repo, request):
            stage.run()

    # -- WAL archiving ----------------------------------------------------------------------
    def archive_config(self, cluster: ClusterTarget, context: LogContext) -> str:
        base = f"{context.command} wal-push --org {context.org} --cluster {cluster.name}"
        fetch = f"{context.command} wal-fetch --org {context.org} --cluster {cluster.name}"
        return "\n".join([
            f"# WAL archiving of cluster {cluster.name} into its backupctl repository",
            "wal_level = replica",
            "archive_mode = on",
            f"archive_command = '{base} %p'",
            "archive_timeout = 60",
            "# for a restore (backupctl restore create writes it itself):",
            f"# restore_command = '{fetch} %f %p'",
        ])

    def push_log(self, repo: Repository, cluster: ClusterTarget, path: str, context: LogContext) -> dict[str, Any]:
        r = wal.push(repo, path, cluster=cluster.name, org=context.org, state_dir=context.state_dir,
                     tags=context.tags)
        return {"file": r.name, "stored": r.stored, "from_spool": r.from_spool, "snapshot": r.snapshot}

    def fetch_log(self, repo: Repository, cluster: ClusterTarget, name: str, dest: str, context: LogContext) -> bool:
        return wal.fetch(repo, name, dest, cluster=cluster.name, org=context.org, state_dir=context.state_dir)

    def log_status(self, repo: Repository, cluster: ClusterTarget, context: LogContext) -> dict[str, Any]:
        from engine_tools.postgresql.connect import connect, server_system_identifier

        current = timeline = system = None
        archiver: dict[str, Any] = {}
        try:
            conn = connect(cluster, timeout=5)
        except BackupctlError as exc:
            archiver["server"] = f"unreachable: {exc.message}"
        else:
            with conn:
                system = server_system_identifier(conn)
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    current = L.parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
                    timeline = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
                row = conn.execute("SELECT archived_count, last_archived_wal, last_archived_time, failed_count, "
                                   "last_failed_wal, last_failed_time FROM pg_stat_archiver").fetchone()
                archiver.update(server="reachable", archived_count=row[0], last_archived_wal=row[1],
                                last_archived_time=row[2].isoformat() if row[2] else None, failed_count=row[3],
                                last_failed_wal=row[4], last_failed_time=row[5].isoformat() if row[5] else None)
        # the server's own system only (another one initialised under this name may have archived files of
        # the same names, which would hide a gap); the whole archive when the server cannot be asked
        listing = wal.refresh_listing(repo, context.state_dir, cluster.name, context.org, system)
        out = wal.status(listing, current_lsn=current, current_timeline=timeline)
        out["archiver"] = archiver
        return out

    def log_windows(self, repo: Repository, cluster: ClusterTarget, context: LogContext,
                    positions: list[dict[str, Any]]) -> list[tuple[datetime, datetime] | None]:
        from engine_tools.postgresql.pitr import window

        listings: dict[str | None, wal.Listing] = {}    # one per database system (see refresh_listing)
        out: list[tuple[datetime, datetime] | None] = []
        for p in positions:
            system = p.get("system_identifier")
            if system not in listings:
                listings[system] = wal.refresh_listing(repo, context.state_dir, cluster.name, context.org, system)
            try:
                w = window(p, listings[system], cluster=cluster.name)
            except (BackupctlError, KeyError, ValueError):   # WAL to make it consistent missing, or no positions
                out.append(None)
            else:
                out.append((w.start_time, w.end_time))
        return out

    def expire_logs(self, repo: Repository, cluster: ClusterTarget, context: LogContext,
                    positions: list[dict[str, Any]], others: list[dict[str, Any]],
                    dry_run: bool = False, retired: bool = False) -> dict[str, Any]:
        return wal.expire(repo, context.state_dir, cluster.name, context.org, positions, dry_run, others,
                          context.tags, retired).to_dict()

    def restore_point(self, repo: Repository, cluster: ClusterTarget, name: str, context: LogContext,
                      wait: float) -> dict[str, Any]:
        if not name or len(name) >= 64:
            raise UsageError(f"invalid restore point name {name!r}", "give 1 to 63 characters")
        from engine_tools.postgresql.connect import (
            ARCHIVING_SETTINGS,
            check_archiving,
            connect,
            server_system_identifier,
            settings,
        )

        with connect(cluster) as conn:
            # else the point would be made and its WAL never archived: the wait would run out
            check_archiving(settings(conn, *ARCHIVING_SETTINGS), cluster, self._hint(cluster),
                            "the WAL holding a restore point")
            system = server_system_identifier(conn)
            made = wal.refresh_listing(repo, context.state_dir, cluster.name, context.org, system).restore_points
            if name in made:       # recovery_target_name stops at the first of two: the later could not be reached
                raise UsageError(f"cluster {cluster.name} has a restore point named {name!r} already "
                                 f"(LSN {made[name].lsn}, {made[name].time})", "choose another name")
            lsn = conn.execute("SELECT pg_create_restore_point(%s)::text", [name]).fetchone()[0]
            timeline = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
            segment = conn.execute("SELECT pg_walfile_name(%s::pg_lsn)", [lsn]).fetchone()[0]
            conn.execute("SELECT pg_switch_wal()")
            wal.record_restore_point(repo, cluster=cluster.name, org=context.org, name=name, lsn=lsn,
                                     timeline=timeline, state_dir=context.state_dir, tags=context.tags,
                                     system_identifier=system)
            archived = self._wait_archived(conn, segment, wait)
        return {"name": name, "lsn": lsn, "timeline": timeline, "segment": segment, "archived": archived}

    @staticmethod
    def _wait_archived(conn: Any, segment: str, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while True:
            last = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
            if last and L.is_segment(last) and last[8:] >= segment[8:] and last[:8] >= segment[:8]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
