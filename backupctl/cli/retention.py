"""``backupctl retention run``: apply the policies' retention rules (or show what they would do)."""

from __future__ import annotations

import click

from backupctl.catalog.db import session_scope
from backupctl.cli.common import json_option, log_expiry_line, print_json
from backupctl.retention.policy import Decision


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
    """Delete the backups no retention rule keeps; children go before parents, chains stay whole.

    Backups in the recycle bin (of unregistered clusters) go once they have been there longer
    than BACKUPCTL_RECYCLE_BIN_RETENTION (default 30d); with --policy the recycle bin is left alone.
    """
    from backupctl.retention.sweep import apply, plan, plan_recycle_bin, preview_log_expiry

    with session_scope() as session:
        plans = plan(session, org=org, policy=policy)
        bin_plan = plan_recycle_bin(session, org=org) if policy is None else None
        report = None if dry_run else apply(session, plans, reclaim=not no_gc, recycle_bin=bin_plan)
        logs, log_errors = preview_log_expiry(session, plans, bin_plan) if dry_run else ({}, {})
        if as_json:
            print_json({"dry_run": dry_run, "policies": [p.to_dict() for p in plans],
                        **({"recycle_bin": bin_plan.to_dict()} if bin_plan else {}),
                        **({"result": report.to_dict()} if report else {}),
                        **({"log_expiry": logs, "errors": log_errors} if dry_run else {})})
            return
        if not plans:
            click.echo("no policies")
        for p in plans:
            d = p.decision
            click.echo(f"policy {p.policy.name} (cluster {p.policy.cluster.name}): {p.rules.describe()}")
            _print_decision(d, dry_run)
        if bin_plan is not None and bin_plan.decision.records:
            d = bin_plan.decision
            click.echo(f"recycle bin: period {bin_plan.to_dict()['period']}")
            _print_decision(d, dry_run)
        for cluster, figures in logs.items():
            click.echo(f"log archive of {cluster}: " + log_expiry_line(figures, dry_run=True))
        for name, why in log_errors.items():
            click.echo(f"error: {name}: {why}", err=True)
        if report:
            click.echo(f"deleted {len(report.deleted)} backup(s)")
            for cluster, figures in report.logs.items():
                click.echo(f"log archive of {cluster}: " + log_expiry_line(figures))
            for name, why in report.errors.items():
                click.echo(f"error: {name}: {why}", err=True)
            for name, result in report.gc.items():
                click.echo(f"gc {name}: {result}")


def _print_decision(d: Decision, dry_run: bool) -> None:
    for r in d.deleted():
        verb = "would delete" if dry_run else "delete"
        click.echo(f"  {verb} {r.id} ({r.type.value}): {d.delete[r.id]}")
    for r in d.kept():
        click.echo(f"  keep   {r.id} ({r.type.value}): {'; '.join(d.keep[r.id])}")

