"""``backupctl repo``: create, inspect, check and clean a repository, and manage its keys."""

from __future__ import annotations

from datetime import datetime

import click

from backupctl.cli.common import (human_bytes, json_option, open_repository, password_from, print_json,
                                  repo_options)
from backupctl.cli.lazy import LazyGroup
from backupctl.cli.progress_view import TerminalProgress
from backupctl.errors import UsageError
from backupctl.repository import Repository
from backupctl.repository import key as keys
from backupctl.repository.check import check_repository
from backupctl.repository.gc import gc as run_gc
from backupctl.repository.lock import list_locks, remove_locks
from backupctl.repository.stats import repository_stats


@click.group("repo", cls=LazyGroup, lazy_subcommands={
    # The catalogue's named repositories (KubeBlocks' BackupRepo) live under the same group.
    "add": "backupctl.cli.catalog_repo:add", "set": "backupctl.cli.catalog_repo:set_",
    "list": "backupctl.cli.catalog_repo:list_"})
def command() -> None:
    """Create, inspect, check and clean repositories."""


@command.command("init")
@repo_options
@click.option("--compression", type=click.IntRange(0, 22), default=3, show_default=True,
              help="zstd level for new data (0 = off).")
@click.option("--pack-size", type=click.IntRange(4, 512), default=32, show_default=True, help="Target pack size in MiB.")
@json_option
def init(repo_url, password_file, password_command, compression, pack_size, as_json):
    """Create a new repository."""
    password = password_from(password_file, password_command, confirm=True)
    repo = Repository.init(repo_url, password, compression=compression, pack_size=pack_size * 1024 * 1024)
    if as_json:
        print_json({"id": repo.config.id, "url": repo_url})
    else:
        click.echo(f"created repository {repo.config.id[:8]} at {repo_url}")
        click.echo("Keep the password safe: without it the data cannot be read.")


@command.command("info")
@repo_options
@json_option
def info(repo_url, password_file, password_command, as_json):
    """Show the repository's id, format and parameters."""
    with open_repository(repo_url, password_file, password_command) as repo:
        c = repo.config
        data = {"id": c.id, "url": repo_url, "format_version": 1, "compression": c.compression,
                "pack_size": c.pack_size, "chunk_min": c.chunk_min, "chunk_avg": c.chunk_avg + c.chunk_min,
                "chunk_max": c.chunk_max, "snapshots": len(repo.snapshots()), "key_slots": len(keys.list_slots(repo.store))}
    if as_json:
        print_json(data)
    else:
        for k, v in data.items():
            click.echo(f"{k:15} {v}")


@command.command("check")
@repo_options
@click.option("--read-data", is_flag=True, help="Download, decrypt and verify every blob.")
@click.option("--read-data-subset", metavar="N%", help="Verify a random N% of the packs (e.g. 10%).")
@json_option
def check(repo_url, password_file, password_command, read_data, read_data_subset, as_json):
    """Verify the repository's structure (and with --read-data, every byte)."""
    subset = None
    if read_data_subset:
        try:
            subset = float(read_data_subset.rstrip("%")) / 100
        except ValueError:
            raise UsageError(f"--read-data-subset {read_data_subset!r} is not a percentage", "write it like 10%") from None
        if not 0 < subset <= 1:
            raise UsageError("--read-data-subset must be between 0% and 100%", "write it like 10%")
    with open_repository(repo_url, password_file, password_command) as repo, TerminalProgress("check") as progress:
        result = check_repository(repo, read_data=read_data or subset is not None, subset=subset, progress=progress)
    if as_json:
        print_json(result.to_dict())
    else:
        for w in result.warnings:
            click.echo(f"warning: {w}", err=True)
        for e in result.errors:
            click.echo(f"error: {e}", err=True)
        if result.damaged_snapshots:
            click.echo("damaged snapshots: " + ", ".join(s[:8] for s in result.damaged_snapshots), err=True)
        click.echo(result.summary_line())
    if result.errors:
        raise SystemExit(1)


@command.command("stats")
@repo_options
@json_option
def stats(repo_url, password_file, password_command, as_json):
    """Sizes: logical data in snapshots, stored after dedup and compression, and the ratio."""
    with open_repository(repo_url, password_file, password_command) as repo:
        data = repository_stats(repo)
    if as_json:
        print_json(data)
    else:
        click.echo(f"snapshots        {data['snapshots']}")
        click.echo(f"logical size     {human_bytes(data['logical_bytes'])}")
        click.echo(f"unique data      {human_bytes(data['unique_raw_bytes'])} in {data['blobs']} blobs")
        click.echo(f"stored           {human_bytes(data['stored_bytes'])} in {data['packs']} packs")
        click.echo(f"dedup+compress   {data['ratio']:.2f}x")


@command.command("gc")
@repo_options
@click.option("--dry-run", is_flag=True, help="Say what would be removed; change nothing.")
@click.option("--repack-threshold", type=click.FloatRange(0.01, 1.0), default=0.3, show_default=True,
              help="Repack packs at least this fraction unused.")
@json_option
def gc_cmd(repo_url, password_file, password_command, dry_run, repack_threshold, as_json):
    """Remove data no snapshot needs; safe while backups run."""
    with open_repository(repo_url, password_file, password_command) as repo:
        report = run_gc(repo, dry_run=dry_run, repack_threshold=repack_threshold,
                        log=(lambda m: None) if as_json else (lambda m: click.echo(m, err=True)))
    if as_json:
        print_json(report.__dict__)
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"gc: {verb} {report.packs_deleted} packs ({human_bytes(report.bytes_freed)} freed), "
               f"repacked {report.packs_repacked} packs, {report.orphan_packs} leftover packs, "
               f"{report.unused_blobs} unused blobs")
    if report.plans_waiting:
        click.echo(f"gc: {report.plans_waiting} deletion plan(s) wait for running operations; run gc again later")
    if report.unindexed_packs_kept:
        click.echo(f"gc: kept {report.unindexed_packs_kept} pack(s) that no index lists but snapshots need; run "
                   "'backupctl repo repair index'")


@command.group("repair")
def repair_group() -> None:
    """Repair a damaged repository."""


@repair_group.command("index")
@repo_options
@click.option("--read-all-packs", is_flag=True,
              help="Read every pack's header, not only those of packs no readable index file lists.")
@json_option
def repair_index_cmd(repo_url, password_file, password_command, read_all_packs, as_json):
    """Rebuild the index from the packs' own headers (after an index file was lost or damaged)."""
    from backupctl.repository.repair import repair_index

    with open_repository(repo_url, password_file, password_command) as repo, \
            TerminalProgress("repair", enabled=False if as_json else None) as progress:
        report = repair_index(repo, read_all_packs=read_all_packs, progress=progress,
                              log=(lambda m: None) if as_json else (lambda m: click.echo(m, err=True)))
    if as_json:
        print_json(report.to_dict())
        return
    click.echo(report.summary_line())
    if report.damaged_packs:
        click.echo("next: 'backupctl repo check --read-data' names the snapshots that needed the unreadable packs",
                   err=True)


@command.command("locks")
@repo_options
@json_option
def locks_cmd(repo_url, password_file, password_command, as_json):
    """List the repository's locks: who holds them, since when, and whether they are stale."""
    with open_repository(repo_url, password_file, password_command) as repo:
        found = list_locks(repo.store, repo.key)
    if as_json:
        print_json([info.to_dict() for info in found])
        return
    if not found:
        click.echo("no locks")
    for info in found:
        click.echo(f"{info.id[:8]}  {info.describe()}{'  STALE' if info.is_stale() else ''}")


@command.command("unlock")
@repo_options
@click.option("--remove-all", is_flag=True,
              help="Remove every lock, live ones too: only when you know nothing runs on the repository.")
@json_option
def unlock(repo_url, password_file, password_command, remove_all, as_json):
    """Remove stale locks (a process that died, or one not refreshed for 30 minutes)."""
    with open_repository(repo_url, password_file, password_command) as repo:
        removed = remove_locks(repo.store, repo.key, remove_all=remove_all)
    if as_json:
        print_json({"removed": [info.to_dict() for info in removed]})
        return
    for info in removed:
        click.echo(f"removed {info.describe()}")
    click.echo(f"unlock: removed {len(removed)} lock(s)")


@command.group("key")
def key_group() -> None:
    """Manage the repository's key slots (passwords)."""


def _new_password(new_password_file: str | None) -> str:
    from backupctl.secrets import read_secret

    return read_secret(env="BACKUPCTL_NEW_PASSWORD", file=new_password_file, what="new password", confirm=True)


@key_group.command("list")
@repo_options
@json_option
def key_list(repo_url, password_file, password_command, as_json):
    """List key slots; * marks the one this password opened."""
    with open_repository(repo_url, password_file, password_command) as repo:
        slots = keys.list_slots(repo.store)
        rows = [{"id": s.id, "current": s.id == repo.slot.id, "username": s.username, "hostname": s.hostname,
                 "created": s.created, "kdf": f"scrypt N={s.kdf.n} r={s.kdf.r} p={s.kdf.p}"} for s in slots]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        when = datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{'*' if r['current'] else ' '} {r['id'][:8]}  {r['username']}@{r['hostname']}  {when}")


@key_group.command("add")
@repo_options
@click.option("--new-password-file", envvar="BACKUPCTL_NEW_PASSWORD_FILE", help="File holding the new password "
              "[env BACKUPCTL_NEW_PASSWORD_FILE; or BACKUPCTL_NEW_PASSWORD].")
def key_add(repo_url, password_file, password_command, new_password_file):
    """Add a key slot for another password."""
    with open_repository(repo_url, password_file, password_command) as repo:
        slot = keys.new_slot(repo.key, _new_password(new_password_file))
        keys.save_slot(repo.store, slot)
    click.echo(f"added key {slot.id[:8]}")


@key_group.command("remove")
@repo_options
@click.argument("key_id")
def key_remove(repo_url, password_file, password_command, key_id):
    """Remove a key slot (not the one in use, not the last)."""
    with open_repository(repo_url, password_file, password_command) as repo:
        slot = keys.find_slot(repo.store, key_id)
        if slot.id == repo.slot.id:
            raise UsageError("refusing to remove the key slot this password opened",
                             "open the repository with another password to remove this one, or use 'key passwd'")
        repo.store.delete(keys.KEYS_PREFIX + slot.id)
    click.echo(f"removed key {slot.id[:8]}")


@key_group.command("passwd")
@repo_options
@click.option("--new-password-file", envvar="BACKUPCTL_NEW_PASSWORD_FILE", help="File holding the new password.")
def key_passwd(repo_url, password_file, password_command, new_password_file):
    """Change the password of the key slot in use (no data is rewritten)."""
    with open_repository(repo_url, password_file, password_command) as repo:
        slot = keys.new_slot(repo.key, _new_password(new_password_file))
        keys.save_slot(repo.store, slot)  # the new slot is durable before the old one goes
        repo.store.delete(keys.KEYS_PREFIX + repo.slot.id)
    click.echo(f"password changed (key {slot.id[:8]} replaces {repo.slot.id[:8]})")
