"""``backupctl backup``: take, list, show, protect, delete catalogued backups, and recover them
from the recycle bin."""

from __future__ import annotations

from datetime import datetime

import click

from backupctl.catalog.db import session_scope
from backupctl.cli.catalog_options import (
    add_protection_commands,
    org_option,
    print_fields,
    print_table,
)
from backupctl.cli.common import echo_log_expiry, human_bytes, json_option, print_json
from backupctl.cli.progress_view import TerminalProgress
from backupctl.services import backups as service


@click.group("backup")
def command() -> None:
    """Backups of registered clusters."""


@command.command("create")
@click.option("--cluster", required=True, help="The cluster to back up.")
@click.option("--method", default=None, help="Backup method [default: the engine's default full method].")
@click.option("--type", "type_", default="full", show_default=True, metavar="full|incremental",
              help="full or incremental.")
@click.option("--repo", "repository", help="Repository name [default: the policy's, else the default one].")
@org_option
@json_option
def create(cluster: str, method: str | None, type_: str, repository: str | None, org: str, as_json: bool) -> None:
    """Back up a cluster now."""
    with session_scope() as s, TerminalProgress(f"backup {cluster}", enabled=False if as_json else None) as progress:
        b = service.create_backup(s, cluster=cluster, org=org, method=method, type=type_, repository=repository,
                                  progress=progress)
        data = service.backup_to_dict(b)
    if as_json:
        print_json(data)
    else:
        click.echo(_summary(data, progress.done_files))


def _summary(data: dict, files: int = 0) -> str:
    """One line: files and size read, bytes added after dedup and compression, duration and speed."""
    read = f"{files} files, {human_bytes(data['logical_size'] or 0)}" if files else human_bytes(data['logical_size'] or 0)
    line = (f"backup {data['name']} {data['phase']}: {read} read, "
            f"{human_bytes(data['bytes_added'] or 0)} added to repository {data['repository']}")
    if data.get("started_at") and data.get("completed_at"):
        seconds = (datetime.fromisoformat(data["completed_at"]) - datetime.fromisoformat(data["started_at"])
                   ).total_seconds()
        line += f", {seconds:.1f} s ({human_bytes(data.get('throughput') or 0)}/s)"
    return line


@command.command("list")
@click.option("--cluster", help="Only this cluster's backups.")
@click.option("--recycled", is_flag=True, help="Only the recycle bin (backups of unregistered clusters).")
@org_option
@json_option
def list_(cluster: str | None, recycled: bool, org: str, as_json: bool) -> None:
    """List backups, oldest first."""
    with session_scope() as s:
        service.mark_interrupted(s, org)
        data = [service.backup_to_dict(b)
                for b in service.list_backups(s, org, cluster=cluster, recycled=True if recycled else None)]
    if as_json:
        print_json(data)
        return
    print_table(["NAME", "CLUSTER", "METHOD", "TYPE", "PHASE", "COMPLETED", "SIZE", "PARENT", "FLAGS"],
                [(b["name"], b["cluster"], b["method"], b["type"], b["phase"], b["completed_at"] or "",
                  human_bytes(b["logical_size"]) if b["logical_size"] is not None else "", b["parent"] or "",
                  " ".join(f for f, on in (("protected", b["deletion_protection"]), ("recycled", b["recycled"])) if on))
                 for b in data], empty="no backups")


@command.command("show")
@click.argument("name")
@org_option
@json_option
def show(name: str, org: str, as_json: bool) -> None:
    """Show one backup."""
    with session_scope() as s:
        service.mark_interrupted(s, org)
        data = service.backup_to_dict(service.get_backup(s, name, org))
    print_json(data) if as_json else print_fields(data)


add_protection_commands(command, "backup", service.set_deletion_protection)


@command.command("delete")
@click.argument("name")
@org_option
def delete(name: str, org: str) -> None:
    """Delete backup NAME: its record and its repository snapshots (space is reclaimed by gc)."""
    from backupctl.services.archiving import trim_retired_archive

    logs = error = cluster_name = None
    with session_scope() as s:
        backup = service.get_backup(s, name, org)
        cluster = backup.cluster
        service.delete_backup(s, backup)
        s.commit()
        if cluster is not None:        # an unregistered cluster's archive: no sweep trims it again
            cluster_name = cluster.name
            logs, error = trim_retired_archive(s, cluster)
    click.echo(f"deleted backup {name}")
    echo_log_expiry(cluster_name, logs, error)


@command.command("recover")
@click.argument("name")
@click.option("--cluster", required=True,
              help="A registered cluster of the backup's engine (a new one or an existing one) to attach it to.")
@org_option
@json_option
def recover(name: str, cluster: str, org: str, as_json: bool) -> None:
    """Take backup NAME out of the recycle bin, with the backups it needs, into CLUSTER."""
    with session_scope() as s:
        recovered = service.recover_backup(s, name, cluster, org)
        data = [service.backup_to_dict(b) for b in recovered]
    if as_json:
        print_json(data)
    else:
        click.echo(f"recovered {', '.join(b['name'] for b in data)} into cluster {cluster}")
