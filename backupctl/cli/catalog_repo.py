"""``backupctl repo add``, ``repo set`` and ``repo list``: repositories in the catalogue (the ``repo`` group
in backupctl/cli/repo.py loads them on first use)."""

from __future__ import annotations

import click

from backupctl.catalog.db import session_scope
from backupctl.cli.catalog_options import print_table
from backupctl.cli.common import json_option, print_json
from backupctl.services import repositories as service


@click.command("add")
@click.argument("name")
@click.option("--url", required=True, help="Repository URL: a path, file:///path, s3://bucket/prefix.")
@click.option("--default", "default", is_flag=True, help="Make it the default repository.")
@click.option("--org", "orgs", multiple=True, help="An organisation allowed to use it (repeat); none = all.")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the password "
                                                    f"[default: {service.DEFAULT_PASSWORD_ENV}].")
@click.option("--password-file", metavar="FILE", help="File holding the password.")
@click.option("--password-command", metavar="CMD", help="Command printing the password.")
@click.option("--init", "init", is_flag=True, hidden=True, help="Kept for compatibility: creating is the default.")
@click.option("--no-connect", is_flag=True,
              help="Only record it: do not open (or create) the repository now, e.g. while its store is offline.")
@json_option
def add(name: str, url: str, default: bool, orgs: tuple[str, ...], password_env: str | None,
        password_file: str | None, password_command: str | None, init: bool, no_connect: bool,
        as_json: bool) -> None:
    """Record repository NAME in the catalogue, opening it with its password (created if new).

    The catalogue keeps where the password comes from, never the password."""
    with session_scope() as s:
        row = service.add_repository(s, name=name, url=url, default=default, orgs=orgs, password_env=password_env,
                                     password_file=password_file, password_command=password_command)
        created = False if no_connect else service.connect_repository(row)
        data = service.repository_to_dict(row)
    if as_json:
        print_json({**data, "created": created})
    else:
        click.echo(f"added repository {name} ({data['url']}){' as the default' if default else ''}"
                   f"{', created it' if created else ''}")


@click.command("set")
@click.argument("name")
@click.option("--default", "default", is_flag=True, help="Make it the default repository.")
@click.option("--password-env", metavar="VAR", help="Read the password from this environment variable from now on.")
@click.option("--password-file", metavar="FILE", help="Read the password from this file from now on.")
@click.option("--password-command", metavar="CMD", help="Run this command for the password from now on.")
@click.option("--no-connect", is_flag=True, help="Do not open the repository with the new password source first.")
@json_option
def set_(name: str, default: bool, password_env: str | None, password_file: str | None, password_command: str | None,
         no_connect: bool, as_json: bool) -> None:
    """Change where repository NAME's password comes from, or make it the default.

    The repository is opened with the new source first: one that does not open it changes nothing."""
    with session_scope() as s:
        row = service.get_repository(s, name)
        service.set_repository(s, row, default=default, password_env=password_env, password_file=password_file,
                               password_command=password_command)
        if not no_connect:
            service.open_repository(row).close()
        data = service.repository_to_dict(row)
    if as_json:
        print_json(data)
    else:
        source = data["password_source"]
        click.echo(f"repository {name}: password from {source['kind']}:{source['value']}"
                   f"{', the default' if data['default'] else ''}")


@click.command("list")
@click.option("--org", default=None, help="Only repositories this organisation may use.")
@json_option
def list_(org: str | None, as_json: bool) -> None:
    """List the repositories in the catalogue."""
    with session_scope() as s:
        data = [service.repository_to_dict(r) for r in service.list_repositories(s, org)]
    if as_json:
        print_json(data)
        return
    print_table(["NAME", "URL", "DEFAULT", "ORGANISATIONS", "PASSWORD FROM"],
                [(r["name"], r["url"], "yes" if r["default"] else "", ",".join(r["organisations"]) or "(all)",
                  f"{r['password_source']['kind']}:{r['password_source']['value']}") for r in data],
                empty="no repositories in the catalogue")
