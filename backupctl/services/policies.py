"""Backup policies and their per-method schedules, after KubeBlocks' BackupPolicy and BackupSchedule.

A policy belongs to a cluster. It lists backup methods (``backup_methods``), a repository
(else the default one is used), retention rules (JSON, read by the retention module), and
per method and backup type a schedule: a five-field cron expression in a time zone (UTC by
default), an enabled flag and a ``retention_period`` (``7d``, ``12h``, ``30d12h``, as in
KubeBlocks). A method may be scheduled once per type, e.g. ``full`` weekly and ``incremental``
daily; the engine tool registry says which types a method can take.

On the command line a schedule is ``METHOD=CRON`` (a full backup) or ``METHOD:TYPE=CRON``; a
schedule is named ``METHOD`` (its full one, or every type of it where that is unambiguous, see
``select_schedules``) or ``METHOD:TYPE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.models import SCHEDULE_TYPES, BackupPolicy, BackupSchedule
from backupctl.cron import cron_trigger, time_zone
from backupctl.errors import NotFoundError, UsageError
from backupctl.retention.period import parse_period
from backupctl.services import audit
from backupctl.services import methods as method_checks
from backupctl.services.clusters import get_cluster
from backupctl.services.names import check_name
from backupctl.services.organisations import get_organisation
from backupctl.services.repositories import check_usable, get_repository
from engine_tools import registry

DEFAULT_RETENTION_PERIOD = "7d"     # KubeBlocks' default
RETENTION_INT_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
RETENTION_PERIOD_KEYS = ("period", "pitr_window")


@dataclass
class ScheduleSpec:
    method: str
    cron: str
    timezone: str = "UTC"
    enabled: bool = True
    retention_period: str | None = DEFAULT_RETENTION_PERIOD
    backup_type: str = "full"

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.backup_type)


_SCHEDULE_HINT = ("write --schedule METHOD=CRON for full backups or METHOD:incremental=CRON, "
                  "e.g. --schedule 'volume=0 3 * * 0'")


def parse_schedule_name(text: str) -> tuple[str, str | None]:
    """``METHOD`` or ``METHOD:TYPE`` -> (method, type or None)."""
    method, sep, type_ = text.strip().partition(":")
    method, type_ = method.strip(), type_.strip()
    if not method or (sep and not type_):
        raise UsageError(f"invalid schedule name {text!r}", "write METHOD or METHOD:TYPE, e.g. volume:full")
    if sep and type_ not in SCHEDULE_TYPES:
        raise UsageError(f"unknown schedule type {type_!r} in {text!r}",
                         f"a schedule takes {' or '.join(SCHEDULE_TYPES)} backups")
    return method, (type_ if sep else None)


def parse_schedule(text: str) -> tuple[str, str, str]:
    """``METHOD=CRON`` (a full backup) or ``METHOD:TYPE=CRON`` as given to --schedule ->
    (method, type, cron)."""
    name, sep, cron = text.partition("=")
    if not sep or not name.strip() or not cron.strip():
        raise UsageError(f"invalid schedule {text!r}", _SCHEDULE_HINT)
    method, type_ = parse_schedule_name(name)
    return method, type_ or "full", " ".join(cron.split())


def schedule_label(method: str, backup_type: str) -> str:
    """How a schedule is written back to the user: ``METHOD`` for full, ``METHOD:TYPE`` otherwise."""
    return method if backup_type == "full" else f"{method}:{backup_type}"


def validate_timezone(tz: str) -> str:
    time_zone(tz)
    return tz


def validate_cron(expr: str, tz: str = "UTC") -> str:
    """A standard five-field cron expression (minute hour day-of-month month day-of-week)."""
    cron_trigger(expr, tz)
    return " ".join(expr.split())


def validate_period(value: str, what: str = "retention period") -> str:
    """One parser for periods everywhere: the retention module's."""
    try:
        parse_period(value)
    except UsageError as exc:
        raise UsageError(f"invalid {what} {value!r}: {exc.message}", exc.hint) from None
    return value


def validate_retention(rules: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in rules.items():
        if value is None:
            continue
        if key in RETENTION_INT_KEYS:
            if not isinstance(value, int) or value < 0:
                raise UsageError(f"invalid {key.replace('_', '-')} {value!r}", "give a whole number, 0 or more")
        elif key in RETENTION_PERIOD_KEYS:
            validate_period(value, key.replace("_", "-"))
        else:
            raise UsageError(f"unknown retention rule {key!r}",
                             f"rules: {', '.join(RETENTION_INT_KEYS + RETENTION_PERIOD_KEYS)}")
        out[key] = value
    return out


def _check_method(engine: str, method: str) -> None:
    registry.resolve_method(engine, method)   # raises the clear "unknown backup method" line


def _check_schedule(engine: str, spec: ScheduleSpec) -> None:
    """The method exists for the engine and can take the schedule's type of backup."""
    method_checks.resolve(engine, spec.method, spec.backup_type, allowed_types=SCHEDULE_TYPES)


def select_schedules(policy: BackupPolicy, name: str) -> list[BackupSchedule]:
    """The schedules ``name`` (``METHOD`` or ``METHOD:TYPE``) means: with a type, that one; with a
    method alone, every schedule of that method."""
    method, type_ = parse_schedule_name(name)
    found = [s for s in policy.schedules if s.backup_method == method and type_ in (None, s.backup_type)]
    if not found:
        scheduled = ", ".join(schedule_label(s.backup_method, s.backup_type) for s in policy.schedules)
        raise UsageError(f"policy {policy.name} has no schedule for {name}", f"scheduled: {scheduled or 'none'}")
    return found


def create_policy(session: Session, *, name: str, cluster: str, org: str | None = None, repository: str | None = None,
                  methods: list[str] | tuple = (), schedules: list[ScheduleSpec] | tuple = (),
                  retention: dict[str, Any] | None = None) -> BackupPolicy:
    check_name(name, "policy")
    organisation = get_organisation(session, org)
    target = get_cluster(session, cluster, org)
    if session.scalar(select(BackupPolicy).where(BackupPolicy.organisation_id == organisation.id,
                                                 BackupPolicy.name == name)) is not None:
        raise UsageError(f"a policy named {name} already exists", f"change it with 'backupctl policy update {name}'")
    repo_row = None
    if repository:
        repo_row = get_repository(session, repository)
        check_usable(repo_row, organisation)
    seen: set[tuple[str, str]] = set()
    rows = []
    for spec in schedules:
        _check_schedule(target.engine, spec)
        if spec.key in seen:
            raise UsageError(f"two schedules for {schedule_label(*spec.key)}",
                             "give one --schedule per method and type")
        seen.add(spec.key)
        rows.append(_schedule_row(spec))
    all_methods = list(dict.fromkeys([*methods, *(m for m, _ in seen)]))
    for m in all_methods:
        _check_method(target.engine, m)
    if not all_methods:
        raise UsageError(f"policy {name} names no backup method",
                         "pass --schedule METHOD=CRON or --method METHOD")
    policy = BackupPolicy(name=name, organisation=organisation, cluster=target, repository=repo_row,
                          backup_methods=all_methods, retention=validate_retention(retention or {}), schedules=rows)
    session.add(policy)
    session.flush()
    audit.record(session, "policy.create", f"policy/{name}", organisation_id=organisation.id, cluster=cluster)
    return policy


def _schedule_row(spec: ScheduleSpec) -> BackupSchedule:
    return BackupSchedule(backup_method=spec.method, backup_type=spec.backup_type,
                          cron_expression=validate_cron(spec.cron, spec.timezone),
                          timezone=spec.timezone, enabled=spec.enabled,
                          retention_period=validate_period(spec.retention_period) if spec.retention_period else None)


def get_policy(session: Session, name: str, org: str | None = None) -> BackupPolicy:
    organisation = get_organisation(session, org)
    policy = session.scalar(select(BackupPolicy).where(BackupPolicy.organisation_id == organisation.id,
                                                       BackupPolicy.name == name))
    if policy is None:
        raise NotFoundError(f"no policy {name!r} in organisation {organisation.name}", "see 'backupctl policy list'")
    return policy


def list_policies(session: Session, org: str | None = None, cluster: str | None = None) -> list[BackupPolicy]:
    organisation = get_organisation(session, org)
    q = select(BackupPolicy).where(BackupPolicy.organisation_id == organisation.id)
    if cluster:
        q = q.where(BackupPolicy.cluster_id == get_cluster(session, cluster, org).id)
    return list(session.scalars(q.order_by(BackupPolicy.name)))


def policies_of_cluster(session: Session, cluster_id: int) -> list[BackupPolicy]:
    return list(session.scalars(select(BackupPolicy).where(BackupPolicy.cluster_id == cluster_id)
                                .order_by(BackupPolicy.id)))


def update_policy(session: Session, name: str, org: str | None = None, *, repository: str | None = None,
                  schedules: list[ScheduleSpec] | tuple = (), remove: list[str] | tuple = (),
                  enable: list[str] | tuple = (), disable: list[str] | tuple = (), methods: list[str] | tuple = (),
                  timezone: str | None = None, retention_period: str | None = None,
                  retention: dict[str, Any] | None = None) -> BackupPolicy:
    """Change a policy: add or replace schedules (one per method and type), remove or toggle them
    (``remove``/``enable``/``disable`` name them as ``METHOD`` or ``METHOD:TYPE``, see
    ``select_schedules``), change repository/retention."""
    policy = get_policy(session, name, org)
    engine = policy.cluster.engine
    if repository is not None:
        repo_row = get_repository(session, repository)
        check_usable(repo_row, policy.organisation)
        policy.repository = repo_row
    by_key = {(s.backup_method, s.backup_type): s for s in policy.schedules}
    for spec in schedules:
        _check_schedule(engine, spec)
        row = by_key.get(spec.key)
        if row is None:
            row = _schedule_row(spec)
            policy.schedules.append(row)
            by_key[spec.key] = row
        else:
            row.cron_expression = validate_cron(spec.cron, spec.timezone)
            row.timezone = spec.timezone
    to_remove = [row for n in remove for row in select_schedules(policy, n)]
    to_enable = [row for n in enable for row in select_schedules(policy, n)]
    to_disable = [row for n in disable for row in select_schedules(policy, n)]
    for row in to_remove:
        if row in policy.schedules:
            policy.schedules.remove(row)
            del by_key[(row.backup_method, row.backup_type)]
    for row in to_enable:
        row.enabled = True
    for row in to_disable:
        row.enabled = False
    if timezone is not None:
        validate_timezone(timezone)
        for row in by_key.values():
            validate_cron(row.cron_expression, timezone)
            row.timezone = timezone
    if retention_period is not None:
        validate_period(retention_period)
        for row in by_key.values():
            row.retention_period = retention_period
    for m in methods:
        _check_method(engine, m)
    policy.backup_methods = list(dict.fromkeys([*policy.backup_methods, *methods, *(m for m, _ in by_key)]))
    if retention:
        merged = dict(policy.retention)
        merged.update(retention)
        policy.retention = validate_retention({k: v for k, v in merged.items() if v is not None})
    session.flush()
    audit.record(session, "policy.update", f"policy/{name}", organisation_id=policy.organisation_id)
    return policy


def delete_policy(session: Session, name: str, org: str | None = None) -> None:
    policy = get_policy(session, name, org)
    audit.record(session, "policy.delete", f"policy/{name}", organisation_id=policy.organisation_id)
    session.delete(policy)
    session.flush()


def policy_to_dict(p: BackupPolicy) -> dict[str, Any]:
    return {
        "name": p.name, "organisation": p.organisation.name, "cluster": p.cluster.name,
        "repository": p.repository.name if p.repository else None, "backup_methods": list(p.backup_methods),
        "retention": dict(p.retention),
        "schedules": [{"backup_method": s.backup_method, "backup_type": s.backup_type,
                       "cron_expression": s.cron_expression, "timezone": s.timezone, "enabled": s.enabled,
                       "retention_period": s.retention_period}
                      for s in p.schedules],
        "created_at": p.created_at.isoformat(), "updated_at": p.updated_at.isoformat(),
    }
