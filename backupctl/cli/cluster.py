"""``backupctl cluster``: register, list, show, protect and unregister the databases to protect."""

from __future__ import annotations

import click

from backupctl.catalog.db import session_scope
from backupctl.cli.catalog_options import add_protection_commands, org_option, print_fields, print_table
from backupctl.cli.common import echo_log_expiry, json_option, print_json
from backupctl.services import clusters as service


@click.group("cluster")
def command() -> None:
    """Databases registered for protection."""


@command.command("register")
@click.argument("name")
@click.option("--engine", required=True, metavar="ENGINE", help="postgresql, mysql or redis (or a plugin's engine).")
@click.option("--host", required=True, help="Host name or address of the database.")
@click.option("--port", required=True, type=int, help="TCP port of the database.")
@click.option("--user", help="User to connect as.")
@click.option("--password-env", metavar="VAR", help="NAME of the environment variable holding the password.")
@click.option("--data-dir", type=click.Path(), help="Data directory on this host (used by the volume method).")
@click.option("--environment", default=None, help="Environment the cluster runs in [default: local].")
@click.option("--version", "engine_version", help="Engine version, e.g. 16.2.")
@click.option("--deletion-protection", is_flag=True, help="Refuse to unregister until turned off.")
@org_option
@json_option
def register(name: str, engine: str, host: str, port: int, user: str | None, password_env: str | None,
             data_dir: str | None, environment: str | None, engine_version: str | None, deletion_protection: bool,
             org: str, as_json: bool) -> None:
    """Record an existing database NAME to protect."""
    import os

    with session_scope() as s:
        c = service.register_cluster(s, name=name, engine=engine, host=host, port=port, user=user,
                                     password_env=password_env,
                                     data_dir=os.path.abspath(data_dir) if data_dir else None, org=org,
                                     environment=environment, version=engine_version,
                                     deletion_protection=deletion_protection)
        data = service.cluster_to_dict(c)
    if as_json:
        print_json(data)
    else:
        click.echo(f"registered cluster {name} ({engine} at {host}:{port}) in organisation {org}")


@command.command("list")
@click.option("--all", "include_deleted", is_flag=True, help="Include unregistered clusters (recycle bin).")
@org_option
@json_option
def list_(include_deleted: bool, org: str, as_json: bool) -> None:
    """List the registered clusters."""
    with session_scope() as s:
        data = [service.cluster_to_dict(c) for c in service.list_clusters(s, org, include_deleted=include_deleted)]
    if as_json:
        print_json(data)
        return
    print_table(["NAME", "ENGINE", "ADDRESS", "ENVIRONMENT", "PROTECTED", "DELETED"],
                [(c["name"], c["engine"], f"{c['host']}:{c['port']}", c["environment"],
                  "yes" if c["deletion_protection"] else "", c["deleted_at"] or "") for c in data],
                empty="no clusters registered")


@command.command("show")
@click.argument("name")
@click.option("--archive-config", is_flag=True,
              help="Print the server configuration lines that archive its logs into backupctl.")
@org_option
@json_option
def show(name: str, archive_config: bool, org: str, as_json: bool) -> None:
    """Show one cluster."""
    if archive_config:
        from backupctl.services import archiving

        with session_scope() as s:
            click.echo(archiving.archive_config(s, name, org))
        return
    with session_scope() as s:
        data = service.cluster_to_dict(service.get_cluster(s, name, org))
    print_json(data) if as_json else print_fields(data)


add_protection_commands(command, "cluster", service.set_deletion_protection)


@command.command("unregister")
@click.argument("name")
@click.option("--keep", type=click.Choice(service.KEEP_CHOICES), default=None,
              help="What to do with its backups: keep the latest (and the chain it needs), all, or none. "
                   "Kept backups go to the recycle bin.")
@org_option
@json_option
def unregister(name: str, keep: str | None, org: str, as_json: bool) -> None:
    """Stop protecting cluster NAME."""
    with session_scope() as s:
        result = service.unregister_cluster(s, name, org, keep)
    if as_json:
        print_json({"cluster": result.cluster, "kept": result.kept, "deleted": result.deleted,
                    "log_expiry": result.log_expiry, "log_expiry_error": result.log_expiry_error})
        return
    click.echo(f"unregistered cluster {name}: {len(result.kept)} backup(s) kept in the recycle bin, "
               f"{len(result.deleted)} deleted")
    echo_log_expiry(name, result.log_expiry, result.log_expiry_error)
