"""The functions scheduled jobs call. Module-level, so APScheduler can store them by reference."""

from __future__ import annotations

import logging
from typing import Any

from backupctl.services.leases import backup_lease_key, lease
from scheduler.context import (
    ScheduledBackup,
    Skipped,
    current_fire_time,
    current_runtime,
)

log = logging.getLogger(__name__)


def run_policy_backup(policy_id: Any, org: str | None, cluster: str, method: str, backup_type: str = "full") -> Any:
    """Take the backup a policy's schedule asks for, unless one of the same cluster and method
    (of any type) is still running: in this or any other scheduler process sharing the
    catalogue, or started by hand with ``backup create``."""
    runtime = current_runtime.get()
    key = backup_lease_key(org, cluster, method)
    with lease(runtime.engine, key, runtime.owner, runtime.lease_ttl) as held:
        if not held:
            log.warning("skipping %s %s backup of %s: the previous one is still running", backup_type, method,
                        cluster)
            return Skipped(f"a {method} backup of {cluster} is still running")
        return runtime.run_backup(ScheduledBackup(policy_id=policy_id, org=org, cluster=cluster, method=method,
                                                  fire_time=current_fire_time.get(), backup_type=backup_type,
                                                  lease_owner=runtime.owner))


def run_retention_sweep() -> Any:
    runtime = current_runtime.get()
    if runtime.sweep is None:
        return Skipped("no retention sweep configured")
    with lease(runtime.engine, "retention-sweep", runtime.owner, runtime.lease_ttl) as held:
        if not held:
            return Skipped("a retention sweep is still running")
        return runtime.sweep()
