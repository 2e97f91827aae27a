"""Exporting a policy as KubeBlocks custom resources: a BackupPolicy and a BackupSchedule.

The objects validate against the dataprotection.kubeblocks.io/v1alpha1 CRD schemas. KubeBlocks
cron expressions are in UTC unless prefixed with ``CRON_TZ=<zone>`` (robfig/cron syntax,
which KubeBlocks uses); a schedule in another time zone is exported with that prefix.

KubeBlocks makes a backup's type a property of its method (the ActionSet's ``backupType``), so
an incremental schedule of method M is exported as its own method ``M-incremental`` whose
``compatibleMethod`` is M (the full method it builds on, as KubeBlocks' incremental methods
name theirs), scheduled under that name. Full schedules keep the method's own name.
"""

from __future__ import annotations

from typing import Any

from backupctl.catalog.models import BackupPolicy
from engine_tools import registry

API_VERSION = "dataprotection.kubeblocks.io/v1alpha1"


def _method_entry(engine: str, method: str) -> dict[str, Any]:
    spec = registry.resolve_method(engine, method).spec
    entry: dict[str, Any] = {"name": method}
    if spec.snapshot_volumes:
        entry["snapshotVolumes"] = True
    else:
        entry["actionSetName"] = spec.action_set or f"{engine}-{method}"
        entry["snapshotVolumes"] = False
    return entry


def incremental_method_name(method: str) -> str:
    return f"{method}-incremental"


def _incremental_method_entry(engine: str, method: str) -> dict[str, Any]:
    spec = registry.resolve_method(engine, method).spec
    return {"name": incremental_method_name(method),
            "actionSetName": f"{spec.action_set or f'{engine}-{method}'}-incremental",
            "snapshotVolumes": False, "compatibleMethod": method}


def export_policy(policy: BackupPolicy, namespace: str = "default") -> list[dict[str, Any]]:
    cluster = policy.cluster
    labels = {"app.kubernetes.io/instance": cluster.name, "app.kubernetes.io/managed-by": "backupctl"}
    incremental = list(dict.fromkeys(s.backup_method for s in policy.schedules if s.backup_type == "incremental"))
    spec: dict[str, Any] = {
        "backupMethods": [_method_entry(cluster.engine, m) for m in policy.backup_methods]
                         + [_incremental_method_entry(cluster.engine, m) for m in incremental],
        "target": {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": cluster.name}}},
    }
    if policy.repository is not None:
        spec["backupRepoName"] = policy.repository.name
    backup_policy = {
        "apiVersion": API_VERSION, "kind": "BackupPolicy",
        "metadata": {"name": policy.name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }
    schedules = []
    for s in policy.schedules:
        cron = s.cron_expression if s.timezone == "UTC" else f"CRON_TZ={s.timezone} {s.cron_expression}"
        method = s.backup_method if s.backup_type == "full" else incremental_method_name(s.backup_method)
        entry: dict[str, Any] = {"name": method, "backupMethod": method, "cronExpression": cron,
                                 "enabled": s.enabled}
        if s.retention_period:
            entry["retentionPeriod"] = s.retention_period
        schedules.append(entry)
    backup_schedule = {
        "apiVersion": API_VERSION, "kind": "BackupSchedule",
        "metadata": {"name": f"{policy.name}-schedule", "namespace": namespace, "labels": labels},
        "spec": {"backupPolicyName": policy.name, "schedules": schedules},
    }
    return [backup_policy, backup_schedule]
