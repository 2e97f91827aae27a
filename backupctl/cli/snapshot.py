"""``backupctl snapshot``: create, list, show, forget and restore snapshots."""

from __future__ import annotations

import sys

import click

from backupctl.cli.common import human_bytes, json_option, open_repository, print_json, repo_options
from backupctl.cli.progress_view import TerminalProgress
from backupctl.errors import UsageError
from backupctl.repository.backup import backup_paths, backup_stream
from backupctl.repository.restore import restore_snapshot, restore_stream
from backupctl.repository.tree import walk_tree


@click.group("snapshot")
def command() -> None:
    """Back up to and restore from a repository."""


def _rate(nbytes: float, seconds: float) -> str:
    return f"{human_bytes(nbytes / seconds)}/s" if seconds > 0 else "-"


@command.command("create")
@repo_options
@click.option("--tag", "tags", multiple=True, help="Tag the snapshot (repeatable).")
@click.option("--stdin-name", default="stdin", show_default=True, help="Entry name when backing up - (stdin).")
@click.option("--compression", type=click.IntRange(0, 22), help="zstd level for this backup (default: repository's).")
@click.option("--parent", help="Compare against this snapshot instead of the latest of the same paths.")
@click.option("--force", is_flag=True, help="Read every file, even ones unchanged since the parent.")
@click.argument("paths", nargs=-1, required=True)
@json_option
def create(repo_url, password_file, password_command, tags, stdin_name, compression, parent, force, paths, as_json):
    """Back up PATHS (files or directories), or - to read a stream from stdin."""
    with open_repository(repo_url, password_file, password_command) as repo, \
            TerminalProgress("backup", enabled=None if not as_json else False) as progress:
        if paths == ("-",):
            snap = backup_stream(repo, sys.stdin.buffer, stdin_name, tags=tags, progress=progress, compression=compression)
        elif "-" in paths:
            raise UsageError("- (stdin) cannot be mixed with paths", "back up the stream in its own snapshot")
        else:
            snap = backup_paths(repo, list(paths), tags=tags, progress=progress, compression=compression,
                                parent=None if force else (parent or "auto"))
    s = snap.summary
    if as_json:
        print_json({"id": snap.id, "time": snap.time, "parent": snap.parent, "tags": snap.tags, "summary": s})
        return
    for w in s.get("warnings", []):
        click.echo(f"warning: {w}", err=True)
    click.echo(f"snapshot {snap.short_id} saved: {s['files_new'] + s['files_changed'] + s['files_unmodified']} files "
               f"({s['files_new']} new, {s['files_changed']} changed, {s['files_unmodified']} unmodified), "
               f"{human_bytes(s['bytes_total'])} total, {human_bytes(s['bytes_read'])} read, "
               f"{human_bytes(s['bytes_added'])} added to the repository, in {s['duration']:.2f}s "
               f"({_rate(s['bytes_total'], s['duration'])})")
    if s.get("warning_count"):
        click.echo(f"snapshot {snap.short_id} is incomplete: {s['warning_count']} path(s) could not be read", err=True)
        raise SystemExit(3)


def _snapshot_row(snap) -> dict:
    return {"id": snap.id, "short_id": snap.short_id, "time": snap.time, "hostname": snap.hostname,
            "username": snap.username, "paths": snap.paths, "tags": snap.tags, "parent": snap.parent,
            "summary": snap.summary, "metadata": snap.metadata}


@command.command("list")
@repo_options
@click.option("--tag", "tags", multiple=True, help="Only snapshots with this tag.")
@json_option
def list_cmd(repo_url, password_file, password_command, tags, as_json):
    """List snapshots, oldest first."""
    with open_repository(repo_url, password_file, password_command) as repo:
        snaps = [s for s in repo.snapshots() if not tags or set(tags) <= set(s.tags)]
    if as_json:
        print_json([_snapshot_row(s) for s in snaps])
        return
    if not snaps:
        click.echo("no snapshots")
        return
    click.echo(f"{'ID':8}  {'Time (UTC)':19}  {'Host':12}  {'Size':>10}  {'Tags':15}  Paths")
    for s in snaps:
        click.echo(f"{s.short_id:8}  {s.time[:19].replace('T', ' ')}  {s.hostname[:12]:12}  "
                   f"{human_bytes(s.summary.get('bytes_total', 0)):>10}  {','.join(s.tags)[:15]:15}  {' '.join(s.paths)}")
    click.echo(f"{len(snaps)} snapshots")


@command.command("show")
@repo_options
@click.argument("snapshot_id")
@click.option("--files", is_flag=True, help="List the snapshot's entries too.")
@json_option
def show(repo_url, password_file, password_command, snapshot_id, files, as_json):
    """Show one snapshot (ID, a unique prefix, or 'latest')."""
    with open_repository(repo_url, password_file, password_command) as repo:
        snap = repo.find_snapshot(snapshot_id)
        row = _snapshot_row(snap)
        if files:
            row["entries"] = [{"path": n.path, "type": n.type, "size": n.size, "mode": n.mode}
                              for n in walk_tree(repo, snap.tree)]
    if as_json:
        print_json(row)
        return
    for k in ("id", "time", "hostname", "username", "paths", "tags", "parent"):
        click.echo(f"{k:10} {row[k]}")
    click.echo(f"{'summary':10} " + ", ".join(f"{k}={v}" for k, v in snap.summary.items() if k != "warnings"))
    if snap.metadata:
        click.echo(f"{'metadata':10} {snap.metadata}")
    for e in row.get("entries", []):
        click.echo(f"  {e['type']:7} {e['size']:>12}  {e['path']}")


@command.command("forget")
@repo_options
@click.argument("snapshot_ids", nargs=-1, required=True)
@json_option
def forget(repo_url, password_file, password_command, snapshot_ids, as_json):
    """Remove snapshots (their data is reclaimed by 'repo gc')."""
    removed = []
    with open_repository(repo_url, password_file, password_command) as repo:
        ids = [repo.snapshot_id(ref) for ref in snapshot_ids]  # resolve all first: all or nothing
        for snap_id in ids:
            repo.forget(snap_id)                                  # read none: a damaged one goes too
            removed.append(snap_id)
    if as_json:
        print_json({"removed": removed})
    else:
        for sid in removed:
            click.echo(f"removed snapshot {sid[:8]}")
        click.echo("run 'backupctl repo gc' to reclaim the space")


@command.command("restore")
@repo_options
@click.argument("snapshot_id")
@click.argument("target")
@click.option("--include", "include", multiple=True, help="Restore only this path inside the snapshot (repeatable).")
@click.option("--path", "entry", help="With TARGET '-': the entry to write to stdout.")
@click.option("--overwrite", is_flag=True, help="Allow a non-empty target directory; files in the snapshot replace it.")
@json_option
def restore(repo_url, password_file, password_command, snapshot_id, target, include, entry, overwrite, as_json):
    """Restore SNAPSHOT_ID into TARGET (a new or empty directory), or - to write a stream to stdout."""
    with open_repository(repo_url, password_file, password_command) as repo:
        snap = repo.find_snapshot(snapshot_id)
        if target == "-":
            with TerminalProgress("restore", enabled=False if as_json else None) as progress:
                n = restore_stream(repo, snap, sys.stdout.buffer, name=entry, progress=progress)
            click.echo(f"restored {human_bytes(n)} from snapshot {snap.short_id} to stdout", err=True)
            return
        with TerminalProgress("restore", enabled=False if as_json else None) as progress:
            summary = restore_snapshot(repo, snap, target, include=list(include) or None, overwrite=overwrite,
                                       progress=progress)
    d = summary.to_dict()
    if as_json:
        print_json({"id": snap.id, "target": target, **d})
    else:
        click.echo(f"restored snapshot {snap.short_id} to {target}: {d['files']} files, {d['dirs']} dirs, "
                   f"{human_bytes(d['bytes_restored'])} in {d['duration']:.2f}s ({_rate(d['bytes_restored'], d['duration'])})")
