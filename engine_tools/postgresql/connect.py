"""Connecting to a PostgreSQL cluster with psycopg 3, and the checks a physical backup needs.

Connection failures become one-line errors that say what to check: the address (a host
name, or a Unix socket directory given as the host), the user and the password variable.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

from backupctl.errors import BackupctlError, UsageError
from engine_tools.base import ClusterTarget

MIN_VERSION = 150000      # pg_backup_start/pg_backup_stop (PostgreSQL 15 names)


def where(cluster: ClusterTarget) -> str:
    return f"{cluster.host or 'localhost'}:{cluster.port or 5432}"


def connect(cluster: ClusterTarget, *, autocommit: bool = True, timeout: int = 10) -> psycopg.Connection:
    """A connection as the cluster's user; errors name the cluster, the address and what to check."""
    params: dict[str, Any] = {"host": cluster.host or "localhost", "port": cluster.port or 5432,
                              "dbname": "postgres", "connect_timeout": timeout,
                              "application_name": "backupctl"}
    if cluster.user:
        params["user"] = cluster.user
    if cluster.password_env:
        password = os.environ.get(cluster.password_env)
        if password is None:
            raise UsageError(f"the password of cluster {cluster.name} is read from ${cluster.password_env}, "
                             "which is not set", f"export {cluster.password_env} in this environment")
        params["password"] = password
    try:
        return psycopg.connect(autocommit=autocommit, **params)
    except psycopg.OperationalError as exc:
        detail = " ".join(str(exc).split())
        who = f" as {cluster.user}" if cluster.user else ""
        if "password authentication failed" in detail or "authentication failed" in detail \
                or "no password supplied" in detail:
            raise BackupctlError(f"PostgreSQL cluster {cluster.name} at {where(cluster)} refused the credentials "
                                 f"of user {cluster.user or '(default)'}: {detail}",
                                 f"check the user and the password in ${cluster.password_env or 'PASSWORD_ENV'} "
                                 "(backupctl cluster register --user/--password-env)") from None
        raise BackupctlError(f"cannot connect to PostgreSQL cluster {cluster.name} at {where(cluster)}{who}: {detail}",
                             "check that the server is running and that host and port are right "
                             "('backupctl cluster show " + cluster.name + "')") from None


def server_system_identifier(conn: psycopg.Connection) -> str:
    """The server's system identifier as pg_control stores it (unsigned: PostgreSQL's int8 shows one
    made after January 2038 as negative), the form read_system_identifier reads from the file."""
    return str(int(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]) % 2**64)


def settings(conn: psycopg.Connection, *names: str) -> dict[str, str]:
    rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [list(names)]).fetchall()
    return dict(rows)


def check_backup_ready(conn: psycopg.Connection, cluster: ClusterTarget, archive_hint: str) -> dict[str, str]:
    """Refuse what a consistent physical backup with point-in-time recovery needs and lacks."""
    s = settings(conn, "server_version_num", "wal_level", *ARCHIVING_SETTINGS, "data_directory", "wal_segment_size",
                 "is_superuser")
    if int(s["server_version_num"]) < MIN_VERSION:
        raise UsageError(f"cluster {cluster.name} runs PostgreSQL {s['server_version_num']}; the physical method "
                         "needs PostgreSQL 15 or later", "use the volume method for older versions")
    if s["wal_level"] == "minimal":
        raise UsageError(f"cluster {cluster.name} has wal_level = minimal, which cannot be archived or restored "
                         "to a point in time", "set wal_level = replica in postgresql.conf and restart the server")
    check_archiving(s, cluster, archive_hint, "the WAL a backup needs to be consistent")
    return s


ARCHIVING_SETTINGS = ("archive_mode", "archive_command", "archive_library")


def check_archiving(s: dict[str, str], cluster: ClusterTarget, archive_hint: str, needed: str) -> None:
    """Refuse a server that does not archive its WAL (``s``: its ARCHIVING_SETTINGS at least), saying
    what would never reach the archive (``needed``)."""
    if s.get("archive_mode", "off") == "off":
        raise UsageError(f"cluster {cluster.name} has archive_mode = off, so {needed} is never archived",
                         f"enable it: put these lines in postgresql.conf and restart the server: {archive_hint}")
    if not (s.get("archive_command") or s.get("archive_library")):
        raise UsageError(f"cluster {cluster.name} has archive_mode on but no archive_command",
                         f"set it in postgresql.conf and reload: {archive_hint}")
