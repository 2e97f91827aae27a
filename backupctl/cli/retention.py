"""``backupctl retention run``: apply the policies' retention rules (or show what they would do)."""

from __future__ import annotations

import click

from backupctl.catalog.db import session_scope
from backupctl.cli.common import json_option, print_json


@click.group("retention")
def command() -> None:
    """Retention: keep the last N, hourly..yearly, a period like 7d, and a PITR window."""


@command.command("run")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted and what keeps the rest.")
@click.option("--org", default=None, metavar="ORG", help="Only this organisation's policies.")
@click.option("--policy", default=None, metavar="NAME", help="Only this policy.")
@click.option("--no-gc", is_flag=True, help="Do not reclaim repository space afterwards.")
@json_option
def run(dry_run: bool, org: str | None, policy: str | None, no_gc: bool, as_json: bool) -> None:
    """Delete the backups no retention rule keeps; children go before parents, chains stay whole."""
    from backupctl.retention.sweep import apply, plan

    with session_scope() as session:
        plans = plan(session, org=org, policy=policy)
        report = None if dry_run else apply(session, plans, reclaim=not no_gc)
        if as_json:
            print_json({"dry_run": dry_run, "policies": [p.to_dict() for p in plans],
                        **({"result": report.to_dict()} if report else {})})
            return
        if not plans:
            click.echo("no policies")
        for p in plans:
            d = p.decision
            click.echo(f"policy {p.policy.name} (cluster {p.policy.cluster.name}): {p.rules.describe()}")
            for r in d.deleted():
                verb = "would delete" if dry_run else "delete"
                click.echo(f"  {verb} {r.id} ({r.type.value}): {d.delete[r.id]}")
            for r in d.kept():
                click.echo(f"  keep   {r.id} ({r.type.value}): {'; '.join(d.keep[r.id])}")
        if report:
            click.echo(f"deleted {len(report.deleted)} backup(s)")
            for name, why in report.errors.items():
                click.echo(f"error: {name}: {why}", err=True)
            for name, result in report.gc.items():
                click.echo(f"gc {name}: {result}")
