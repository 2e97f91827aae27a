"""``backupctl restore``: restore a catalogued backup onto this host, to the latest state or a point in time."""

from __future__ import annotations

from datetime import datetime

import click

from backupctl.catalog.db import session_scope
from backupctl.cli.catalog_options import org_option, print_fields, print_table
from backupctl.cli.common import human_bytes, json_option, print_json
from backupctl.cli.progress_view import TerminalProgress
from backupctl.errors import UsageError
from backupctl.services import restores as service


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"invalid restore time {value!r}", "give ISO 8601 with a time zone, "
                         "e.g. 2026-12-02T10:00:00Z") from None
    if t.tzinfo is None:
        raise UsageError(f"the restore time {value} has no time zone", "add one, e.g. Z or +02:00")
    return t


@click.group("restore")
def command() -> None:
    """Restores of backups."""


@command.command("create")
@click.option("--backup", "backup", help="The backup to restore (its name).")
@click.option("--cluster", "cluster", help="Instead of --backup: restore this cluster from its newest backup that "
                                           "precedes --restore-time (or its newest backup).")
@click.option("--target-dir", required=True, type=click.Path(), help="New or empty data directory to restore into.")
@click.option("--restore-time", help="Recover to this time (ISO 8601 with a time zone).")
@click.option("--target-lsn", help="Recover to this log position (e.g. an LSN 0/3000148).")
@click.option("--target-xid", help="Recover up to this transaction id.")
@click.option("--target-name", help="Recover to this named restore point.")
@click.option("--start", is_flag=True, help="Start the server and wait until it has recovered and been promoted.")
@click.option("--port", type=int, help="Port of the restored server.")
@click.option("--force", is_flag=True, help="Replace the contents of a non-empty target directory.")
@click.option("--register", metavar="NAME",
              help="Register the restored server as new cluster NAME (needs --port); it archives its new "
                   "timeline's WAL into NAME's archive, so NAME can be backed up and restored in turn.")
@org_option
@json_option
def create(backup: str | None, cluster: str | None, target_dir: str, restore_time: str | None,
           target_lsn: str | None, target_xid: str | None, target_name: str | None, start: bool, port: int | None,
           force: bool, register: str | None, org: str, as_json: bool) -> None:
    """Restore a backup into TARGET-DIR, to the latest state or to a point in time."""
    if (backup is None) == (cluster is None):
        raise UsageError("name what to restore with --backup NAME or --cluster NAME (one of them)",
                         "see 'backupctl backup list'")
    at = _time(restore_time)
    with session_scope() as s, TerminalProgress("restore", enabled=False if as_json else None) as progress:
        if backup is None:
            backup = service.choose_backup(s, cluster, org, at)
        r = service.create_restore(s, backup=backup, target_dir=target_dir, org=org, restore_time=at,
                                   target_lsn=target_lsn, target_xid=target_xid, target_name=target_name,
                                   start=start, port=port, force=force, register=register, progress=progress)
        data = service.restore_to_dict(r)
    if as_json:
        print_json(data)
        return
    click.echo(_summary(data))
    if not start:
        click.echo("start it with: pg_ctl start -D " + data["target_dir"])


def _summary(data: dict) -> str:
    """One line: what was restored, how much, how fast, and each stage's time (the RTO)."""
    details = {st["name"]: st.get("details") or {} for st in data["stages"]}
    files = details.get("prepare_data", {})
    wal = details.get("fetch_wal", {})
    seconds = data["rto_seconds"]
    size = ""
    if files.get("bytes"):
        rate = human_bytes(files["bytes"] / seconds) + "/s" if seconds else "-"
        size = f"{human_bytes(files['bytes'])} in {files.get('files', 0)} files"
        if wal.get("files"):
            size += f" and {wal['files']} WAL files ({human_bytes(wal.get('bytes', 0))})"
        size += f", {seconds:.1f} s ({rate}); "
    stages = ", ".join(f"{st['name']} {st['seconds']:.1f} s" for st in data["stages"])
    return f"restore {data['name']} {data['phase']} into {data['target_dir']}: {size}stages: {stages}"


@command.command("list")
@org_option
@json_option
def list_(org: str, as_json: bool) -> None:
    """List restores, oldest first."""
    with session_scope() as s:
        data = [service.restore_to_dict(r) for r in service.list_restores(s, org)]
    if as_json:
        print_json(data)
        return
    print_table(["NAME", "TARGET", "PHASE", "RTO (s)", "STARTED"],
                [(r["name"], r["target_dir"] or r["target_cluster"], r["phase"], r["rto_seconds"], r["started_at"])
                 for r in data], empty="no restores")


@command.command("show")
@click.argument("name")
@org_option
@json_option
def show(name: str, org: str, as_json: bool) -> None:
    """Show one restore, with its stages' durations."""
    with session_scope() as s:
        data = service.restore_to_dict(service.get_restore(s, name, org))
    print_json(data) if as_json else print_fields(data)
