"""The audit trail: who did what to what, when, and from where."""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.models import AuditEvent


def current_actor() -> str:
    try:
        return os.environ.get("BACKUPCTL_ACTOR") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return f"uid:{os.getuid()}"


def current_source() -> str:
    return os.environ.get("BACKUPCTL_AUDIT_SOURCE") or f"cli@{socket.gethostname()}"


def record(session: Session, action: str, obj: str, *, organisation_id: int | None = None,
           actor: str | None = None, source: str | None = None, **details: Any) -> AuditEvent:
    """Add an event to the session; it is committed with the change it describes."""
    event = AuditEvent(actor=actor or current_actor(), action=action, object=obj, organisation_id=organisation_id,
                       source=source or current_source(), details=details)
    session.add(event)
    return event


def list_events(session: Session, limit: int = 100) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)))
