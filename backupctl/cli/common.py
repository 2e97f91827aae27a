"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from backupctl.secrets import read_secret

if TYPE_CHECKING:
    from backupctl.repository import Repository


def repo_options(func: Callable) -> Callable:
    """--repo and the password sources, each also from an environment variable."""

    @click.option("--repo", "-r", "repo_url", envvar="BACKUPCTL_REPO", required=True, metavar="URL",
                  help="Repository: a path, file:///path, s3://bucket/prefix or an fsspec URL [env BACKUPCTL_REPO].")
    @click.option("--password-file", envvar="BACKUPCTL_PASSWORD_FILE", metavar="FILE",
                  help="Read the repository password from FILE [env BACKUPCTL_PASSWORD_FILE].")
    @click.option("--password-command", envvar="BACKUPCTL_PASSWORD_COMMAND", metavar="CMD",
                  help="Run CMD and use its output as the password [env BACKUPCTL_PASSWORD_COMMAND].")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def password_from(password_file: str | None, password_command: str | None, confirm: bool = False) -> str:
    return read_secret(env="BACKUPCTL_PASSWORD", file=password_file, command=password_command, confirm=confirm)


def open_repository(repo_url: str, password_file: str | None, password_command: str | None) -> Repository:
    # imported on use: wal-push's spool answer needs none of it
    from backupctl.repository import Repository

    return Repository.open(repo_url, password_from(password_file, password_command))


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def log_expiry_line(figures: dict, dry_run: bool = False) -> str:
    """One line on what a log expiry did (or would do) to a cluster's log archive."""
    if figures.get("held"):
        return f"nothing {'would be ' if dry_run else ''}expired: {figures['held']}"
    kept = "; ".join(f"timeline {tl}: {first}" for timelines in figures.get("kept_from", {}).values()
                     for tl, first in timelines.items())
    return f"{'would expire' if dry_run else 'expired'} {figures.get('files_expired', 0)} file(s) in " \
           f"{figures.get('snapshots_forgotten', 0)} snapshot(s); " + \
           (f"kept from {kept}" if kept else "no database system looked at (no base backup, or nothing archived)")


def echo_log_expiry(cluster: str, logs: dict | None, error: str | None) -> None:
    """What trimming an unregistered cluster's log archive did (services.archiving.trim_retired_archive)."""
    if logs is not None:
        click.echo(f"log archive of cluster {cluster} in {logs['repository']}: {log_expiry_line(logs)}")
    if error is not None:
        click.echo(f"warning: the log archive of cluster {cluster} was left as it is: {error}", err=True)
