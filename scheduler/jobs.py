"""The functions scheduled jobs call. Module-level, so APScheduler can store them by reference."""

from __future__ import annotations

import logging
from typing import Any

from scheduler.context import ScheduledBackup, Skipped, current_fire_time, current_runtime
from scheduler.lease import lease

log = logging.getLogger(__name__)


def backup_lease_key(org: str | None, cluster: str, method: str) -> str:
    return f"backup:{org or ''}/{cluster}:{method}"


def run_policy_backup(policy_id: Any, org: str | None, cluster: str, method: str) -> Any:
    """Take the backup a policy's schedule asks for, unless one of the same cluster and method
    is still running (in this or any other scheduler process sharing the catalogue)."""
    runtime = current_runtime.get()
    key = backup_lease_key(org, cluster, method)
    with lease(runtime.engine, key, runtime.owner, runtime.lease_ttl) as held:
        if not held:
            log.warning("skipping %s backup of %s: the previous one is still running", method, cluster)
            return Skipped(f"a {method} backup of {cluster} is still running")
        return runtime.run_backup(ScheduledBackup(policy_id=policy_id, org=org, cluster=cluster, method=method,
                                                  fire_time=current_fire_time.get()))


def run_retention_sweep() -> Any:
    runtime = current_runtime.get()
    if runtime.sweep is None:
        return Skipped("no retention sweep configured")
    with lease(runtime.engine, "retention-sweep", runtime.owner, runtime.lease_ttl) as held:
        if not held:
            return Skipped("a retention sweep is still running")
        return runtime.sweep()
