"""``backupctl wal-push``, ``wal-fetch`` (the server's archive_command and restore_command) and
``backupctl wal status|restore-point``.

``wal-fetch`` exit status, as restore_command must answer: 0 when the file was written, 1 when
the archive does not hold it (recovery then ends normally), and 126 for any other failure
(repository unreachable, wrong password): above 125, PostgreSQL aborts recovery instead of
taking the failure for the end of the archive and promoting too early.

The server runs ``wal-push`` and ``wal-fetch`` once per file, so this module imports the
catalogue (SQLAlchemy) only inside the commands; ``wal-push`` answers a file that an earlier
batch push already stored, and ``wal-fetch`` one an earlier fetch read ahead, from the spool
(``backupctl.archive_spool``) before importing it at all.
"""

from __future__ import annotations

import sys

import click

from backupctl import archive_spool
from backupctl.cli.catalog_options import org_option, print_fields, print_table
from backupctl.cli.common import json_option, print_json
from backupctl.errors import BackupctlError, IntegrityError

FETCH_MISSING, FETCH_FAILED = 1, 126


@click.command("wal-push")
@click.option("--cluster", required=True, help="The registered cluster whose WAL this is.")
@click.argument("path", metavar="PATH")
@org_option
def push_command(cluster: str, path: str, org: str) -> None:
    """Archive WAL file PATH (archive_command: backupctl wal-push --cluster NAME %p)."""
    if archive_spool.take(archive_spool.state_dir(org, cluster), path):
        return                                   # stored by an earlier batch push
    from backupctl.catalog.db import session_scope
    from backupctl.services import archiving as service

    with session_scope() as s:
        service.push(s, cluster, path, org)


@click.command("wal-fetch")
@click.option("--cluster", required=True, help="The cluster whose archive to read.")
@click.option("--repository", default=None, metavar="NAME",
              help="Read the archive in this catalogue repository (a restore names its backup's); the cluster "
                   "may then be unregistered.")
@click.argument("name", metavar="FILE")
@click.argument("dest", metavar="PATH")
@org_option
def fetch_command(cluster: str, repository: str | None, name: str, dest: str, org: str) -> None:
    """Write archived WAL file FILE to PATH (restore_command: backupctl wal-fetch --cluster NAME %f %p)."""
    try:
        if archive_spool.take_fetched(archive_spool.state_dir(org, cluster), name, dest):
            return                                   # fetched ahead by an earlier call
        from backupctl.catalog.db import session_scope
        from backupctl.services import archiving as service

        with session_scope() as s:
            found = service.fetch(s, cluster, name, dest, org, repository)
    except BackupctlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(FETCH_FAILED)
    except (Exception, KeyboardInterrupt) as exc:    # a full pg_wal, the catalogue unreachable, a bug:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)   # never "not archived" (exit 1),
        sys.exit(FETCH_FAILED)                       # which would end recovery and promote too early
    if not found:
        click.echo(f"{name} is not in the archive of cluster {cluster}", err=True)
        sys.exit(FETCH_MISSING)


@click.group("wal")
def command() -> None:
    """The WAL archive of a cluster: status and restore points."""


def _status(cluster: str, org: str) -> dict:
    from backupctl.catalog.db import session_scope
    from backupctl.services import archiving as service

    with session_scope() as s:
        return service.status(s, cluster, org)


def _archiving_failure(data: dict) -> str | None:
    """What the server says about archiving failing now: its last failure is newer than its last success."""
    a = data.get("archiver") or {}
    if not a.get("failed_count") or not a.get("last_failed_wal"):
        return None
    if a.get("last_archived_time") and a["last_archived_time"] >= (a.get("last_failed_time") or ""):
        return None
    return (f"archive_command is failing: {a['last_failed_wal']} failed at {a.get('last_failed_time')} "
            f"({a['failed_count']} failures; last success {a.get('last_archived_time') or 'never'})")


def _print_status(data: dict, as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    print_table(["TIMELINE", "FIRST", "LAST", "SEGMENTS", "MISSING", "ARCHIVED TO", "LAST ARCHIVED"],
                [(tl, t["first"], t["last"], t["segments"], t["missing_count"], t["archived_to_lsn"],
                  t["last_archived_at"]) for tl, t in data["timelines"].items()], empty="no WAL archived")
    lag = data.get("lag_seconds")
    click.echo(f"lag: {'-' if lag is None else f'{lag:.1f} s'} since the last archived file"
               + (f", {data['lag_bytes']} bytes of WAL not archived (current LSN {data['current_lsn']})"
                  if data.get("lag_bytes") is not None else ""))
    if data["archiver"].get("server") != "reachable":
        click.echo(f"server: {data['archiver'].get('server')}")
    failure = _archiving_failure(data)
    if failure:
        click.echo(failure)


@command.command("status")
@click.option("--cluster", required=True)
@org_option
@json_option
def status(cluster: str, org: str, as_json: bool) -> None:
    """Archived range per timeline, gaps, and the archive lag (the RPO right now)."""
    _print_status(_status(cluster, org), as_json)


@click.command("wal-verify")
@click.option("--cluster", required=True)
@org_option
@json_option
def verify_command(cluster: str, org: str, as_json: bool) -> None:
    """'wal status', exiting with status 4 when archiving fails now, nothing is archived, or a
    timeline's archive has a gap (for monitoring)."""
    data = _status(cluster, org)
    _print_status(data, as_json)
    failure = _archiving_failure(data)
    if failure:
        raise IntegrityError(f"cluster {cluster}: {failure}",
                             "the server log says why (look for 'archive command failed'); the archive lag grows "
                             "until it is fixed")
    if not data["timelines"]:
        raise IntegrityError(f"nothing is archived for cluster {cluster}",
                             f"set the lines of 'backupctl cluster show {cluster} --archive-config' in "
                             "postgresql.conf and restart the server")
    gaps = [(tl, t) for tl, t in data["timelines"].items() if t["missing_count"]]
    if gaps:
        tl, t = gaps[0]
        raise IntegrityError(f"the WAL archive of cluster {cluster} misses {t['missing_count']} segment(s) on "
                             f"timeline {tl}, from {t['missing'][0]}",
                             "no restore can replay across the gap: take a full backup now, and see why "
                             "archive_command failed (server log, 'backupctl wal status')")


command.add_command(verify_command, "verify")


@command.command("restore-point")
@click.argument("name")
@click.option("--cluster", required=True)
@click.option("--wait", default=60.0, show_default=True, help="Seconds to wait for the segment to be archived.")
@org_option
@json_option
def restore_point(name: str, cluster: str, wait: float, org: str, as_json: bool) -> None:
    """Create restore point NAME on the cluster and archive the WAL segment holding it."""
    from backupctl.catalog.db import session_scope
    from backupctl.services import archiving as service

    with session_scope() as s:
        data = service.restore_point(s, cluster, name, org, wait)
    if as_json:
        print_json(data)
    else:
        print_fields(data)
    if not data.get("archived"):
        raise BackupctlError(f"restore point {name} was created at {data['lsn']} but segment {data['segment']} was "
                             f"not archived within {wait:.0f} s", "check archive_command and 'backupctl wal status'")
