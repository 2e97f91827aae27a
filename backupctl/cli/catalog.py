"""``backupctl catalog``: the catalogue itself: rebuild from a repository, migrate, where it is."""

from __future__ import annotations

import os

import click

from backupctl.catalog import db
from backupctl.cli.common import json_option, print_json
from backupctl.repository import Repository
from backupctl.secrets import read_secret
from backupctl.services import repositories as repo_service
from backupctl.services.rebuild import rebuild_from_repository


@click.group("catalog")
def command() -> None:
    """The catalogue database."""


@command.command("rebuild")
@click.option("--repo", "repo_url", required=True, metavar="URL", help="Repository to read the backups from.")
@click.option("--name", default=None, help="Catalogue name for the repository if it is not recorded yet "
                                           "[default: the last part of the URL].")
@click.option("--password-file", envvar="BACKUPCTL_PASSWORD_FILE", metavar="FILE",
              help="Read the repository password from FILE.")
@click.option("--password-command", envvar="BACKUPCTL_PASSWORD_COMMAND", metavar="CMD",
              help="Run CMD and use its output as the password.")
@json_option
def rebuild(repo_url: str, name: str | None, password_file: str | None, password_command: str | None,
            as_json: bool) -> None:
    """Recreate backup records from the repository's snapshot manifests."""
    with db.session_scope() as s:
        row = repo_service.find_by_url(s, repo_url)
        if row is None:
            derived = os.path.basename(repo_service.normalise_url(repo_url).rstrip("/")).lower() or "rebuilt"
            row = repo_service.add_repository(s, name=name or derived, url=repo_url,
                                              password_file=password_file, password_command=password_command)
        if password_file or password_command:
            password = read_secret(env=repo_service.DEFAULT_PASSWORD_ENV, file=password_file,
                                   command=password_command, prompt=False)
        else:
            password = repo_service.repository_password(row)
        with Repository.open(row.url, password) as repo:
            report = rebuild_from_repository(s, repo, row)
    if as_json:
        print_json({"repository": row.name, "created": report.created, "existing": report.existing,
                    "ignored_snapshots": report.ignored_snapshots, "missing_parents": report.missing_parents,
                    "incomplete": report.incomplete})
        return
    click.echo(f"rebuilt from repository {row.name}: {len(report.created)} backup(s) recreated, "
               f"{len(report.existing)} already known, {report.ignored_snapshots} snapshot(s) without catalogue "
               f"metadata ignored")
    if report.missing_parents:
        click.echo(f"warning: the parent of {', '.join(report.missing_parents)} is not in the repository; "
                   "those backups cannot be restored", err=True)
    if report.incomplete:
        click.echo(f"warning: {', '.join(report.incomplete)} not recreated: snapshot(s) of theirs are gone from the "
                   "repository (a backup killed midway, then deleted)", err=True)


@command.command("upgrade")
def upgrade() -> None:
    """Bring the catalogue schema to the latest migration (done automatically on first use)."""
    engine = db.get_engine()
    click.echo(f"catalogue at revision {db.current_revision(engine)}")


@command.command("info")
@json_option
def info(as_json: bool) -> None:
    """Where the catalogue is and its schema revision."""
    engine = db.get_engine()
    data = {"url": engine.url.render_as_string(hide_password=True), "revision": db.current_revision(engine),
            "head": db.head_revision()}
    if as_json:
        print_json(data)
    else:
        for k, v in data.items():
            click.echo(f"{k}: {v}")
