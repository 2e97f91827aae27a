"""Which backup method and type a cluster's engine allows, asked of the engine tool registry.

One check for ``backup create`` and for policies' schedules, so both refuse the same things
with the same line (e.g. the ``volume`` method takes full backups only).
"""

from __future__ import annotations

from backupctl.errors import UsageError
from engine_tools import registry
from engine_tools.base import Capability
from engine_tools.registry import ResolvedMethod

TYPES_BY_CAPABILITY = {"full": Capability.FULL, "incremental": Capability.INCREMENTAL,
                       "continuous": Capability.CONTINUOUS, "snapshot": Capability.SNAPSHOT}


def resolve(engine: str, method: str | None, type: str = "full",
            allowed_types: tuple[str, ...] = tuple(TYPES_BY_CAPABILITY)) -> ResolvedMethod:
    """The plugin and method for ``engine`` (the default full one if ``method`` is None), checked
    to be able to take ``type`` backups."""
    if type not in allowed_types:
        raise UsageError(f"unknown backup type {type!r}", f"choose one of: {', '.join(allowed_types)}")
    resolved = registry.resolve_method(engine, method)
    spec = resolved.spec
    if not spec.can(TYPES_BY_CAPABILITY[type]):
        can = ", ".join(sorted(c.value for c in spec.capabilities))
        raise UsageError(f"method {spec.name} cannot take {type} backups of {engine}", f"it can: {can}")
    return resolved
