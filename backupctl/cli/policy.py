"""``backupctl policy``: per-cluster backup policies and schedules (KubeBlocks BackupPolicy/BackupSchedule)."""

from __future__ import annotations

from typing import Any

import click
import yaml

from backupctl.catalog.db import session_scope
from backupctl.cli.catalog_options import org_option, print_table
from backupctl.cli.common import json_option, print_json
from backupctl.services import policies as service
from backupctl.services.policy_export import export_policy


def retention_options(func: Any) -> Any:
    for key in reversed(service.RETENTION_INT_KEYS):
        func = click.option(f"--{key.replace('_', '-')}", key, type=int, default=None, metavar="N",
                            help=f"Retention: {key.replace('_', ' ')} backups.")(func)
    func = click.option("--pitr-window", "pitr_window", default=None, metavar="PERIOD",
                        help="Retention: point-in-time window for continuous backups, e.g. 7d.")(func)
    func = click.option("--period", "period", default=None, metavar="PERIOD",
                        help="Retention: keep backups younger than PERIOD, e.g. 30d12h.")(func)
    return func


def _specs(schedules: tuple[str, ...], timezone: str, retention_period: str | None,
           disabled: bool = False) -> list[service.ScheduleSpec]:
    specs = []
    for text in schedules:
        method, backup_type, cron = service.parse_schedule(text)
        specs.append(service.ScheduleSpec(method=method, cron=cron, timezone=timezone, enabled=not disabled,
                                          retention_period=retention_period, backup_type=backup_type))
    return specs


@click.group("policy")
def command() -> None:
    """Backup policies: methods, schedules, repository, retention."""


@command.command("create")
@click.argument("name")
@click.option("--cluster", required=True, help="The cluster the policy protects.")
@click.option("--schedule", "schedules", multiple=True, metavar="METHOD[:TYPE]=CRON",
              help="A schedule: method, backup type (full, the default, or incremental) and five-field cron, "
                   "e.g. 'pgbackup=0 3 * * 0' (full, Sundays) and 'pgbackup:incremental=0 3 * * 1-6'. "
                   "Repeat per method and type.")
@click.option("--method", "methods", multiple=True, help="A method the policy allows without a schedule.")
@click.option("--timezone", default="UTC", show_default=True, help="Time zone of the cron expressions.")
@click.option("--retention-period", default=service.DEFAULT_RETENTION_PERIOD, show_default=True,
              help="KubeBlocks retentionPeriod of each schedule (7d, 12h, 30d12h).")
@click.option("--repo", "repository", help="Repository name [default: the default repository].")
@click.option("--disabled", is_flag=True, help="Create the schedules disabled.")
@retention_options
@org_option
@json_option
def create(name: str, cluster: str, schedules: tuple[str, ...], methods: tuple[str, ...], timezone: str,
           retention_period: str, repository: str | None, disabled: bool, org: str, as_json: bool,
           **retention: Any) -> None:
    """Create policy NAME for a cluster."""
    with session_scope() as s:
        p = service.create_policy(s, name=name, cluster=cluster, org=org, repository=repository, methods=methods,
                                  schedules=_specs(schedules, service.validate_timezone(timezone), retention_period,
                                                   disabled),
                                  retention={k: v for k, v in retention.items() if v is not None})
        data = service.policy_to_dict(p)
    print_json(data) if as_json else click.echo(
        f"created policy {name} for cluster {cluster}: {len(data['schedules'])} schedule(s)")


@command.command("update")
@click.argument("name")
@click.option("--schedule", "schedules", multiple=True, metavar="METHOD[:TYPE]=CRON",
              help="Add or replace the schedule of METHOD and TYPE (full, the default, or incremental).")
@click.option("--remove", "remove", multiple=True, metavar="METHOD[:TYPE]",
              help="Remove the schedule of METHOD:TYPE; METHOD alone: all of its schedules.")
@click.option("--enable", "enable", multiple=True, metavar="METHOD[:TYPE]",
              help="Enable the schedule of METHOD:TYPE; METHOD alone: all of its schedules.")
@click.option("--disable", "disable", multiple=True, metavar="METHOD[:TYPE]",
              help="Disable the schedule of METHOD:TYPE; METHOD alone: all of its schedules.")
@click.option("--method", "methods", multiple=True, help="Allow another method.")
@click.option("--timezone", default=None, help="New time zone for every schedule.")
@click.option("--retention-period", default=None, help="New retentionPeriod for every schedule.")
@click.option("--repo", "repository", help="New repository name.")
@retention_options
@org_option
@json_option
def update(name: str, schedules: tuple[str, ...], remove: tuple[str, ...], enable: tuple[str, ...],
           disable: tuple[str, ...], methods: tuple[str, ...], timezone: str | None, retention_period: str | None,
           repository: str | None, org: str, as_json: bool, **retention: Any) -> None:
    """Change policy NAME."""
    with session_scope() as s:
        current = service.get_policy(s, name, org)
        tz = timezone or (current.schedules[0].timezone if current.schedules else "UTC")
        p = service.update_policy(s, name, org, repository=repository,
                                  schedules=_specs(schedules, service.validate_timezone(tz),
                                                   retention_period or service.DEFAULT_RETENTION_PERIOD),
                                  remove=remove, enable=enable, disable=disable, methods=methods, timezone=timezone,
                                  retention_period=retention_period,
                                  retention={k: v for k, v in retention.items() if v is not None})
        data = service.policy_to_dict(p)
    print_json(data) if as_json else click.echo(f"updated policy {name}")


@command.command("list")
@click.option("--cluster", help="Only the policies of this cluster.")
@org_option
@json_option
def list_(cluster: str | None, org: str, as_json: bool) -> None:
    """List policies."""
    with session_scope() as s:
        data = [service.policy_to_dict(p) for p in service.list_policies(s, org, cluster)]
    if as_json:
        print_json(data)
        return
    print_table(["NAME", "CLUSTER", "REPOSITORY", "METHODS", "SCHEDULES"],
                [(p["name"], p["cluster"], p["repository"] or "(default)", ",".join(p["backup_methods"]),
                  "; ".join(f"{service.schedule_label(x['backup_method'], x['backup_type'])}: "
                            f"{x['cron_expression']} {x['timezone']}"
                            f"{'' if x['enabled'] else ' (disabled)'}" for x in p["schedules"]))
                 for p in data], empty="no policies")


@command.command("show")
@click.argument("name")
@org_option
@json_option
def show(name: str, org: str, as_json: bool) -> None:
    """Show policy NAME."""
    with session_scope() as s:
        data = service.policy_to_dict(service.get_policy(s, name, org))
    if as_json:
        print_json(data)
        return
    click.echo(f"policy {data['name']} (cluster {data['cluster']}, organisation {data['organisation']})")
    click.echo(f"  repository: {data['repository'] or '(default)'}")
    click.echo(f"  backup methods: {', '.join(data['backup_methods'])}")
    click.echo(f"  retention: {', '.join(f'{k}={v}' for k, v in data['retention'].items()) or '-'}")
    for x in data["schedules"]:
        click.echo(f"  schedule {service.schedule_label(x['backup_method'], x['backup_type'])}: "
                   f"'{x['cron_expression']}' {x['timezone']}, "
                   f"{'enabled' if x['enabled'] else 'disabled'}, retentionPeriod {x['retention_period'] or '-'}")


@command.command("delete")
@click.argument("name")
@org_option
def delete(name: str, org: str) -> None:
    """Delete policy NAME (its backups stay)."""
    with session_scope() as s:
        service.delete_policy(s, name, org)
    click.echo(f"deleted policy {name}")


@command.command("export")
@click.argument("name")
@click.option("--namespace", default="default", show_default=True, help="Kubernetes namespace of the objects.")
@org_option
def export(name: str, namespace: str, org: str) -> None:
    """Print policy NAME as KubeBlocks BackupPolicy and BackupSchedule YAML."""
    with session_scope() as s:
        docs = export_policy(service.get_policy(s, name, org), namespace)
    click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
