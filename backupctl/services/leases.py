"""Leases: locks held in the catalogue database, across processes and hosts, with an expiry.

A backup of one cluster with one method holds the lease ``backup_lease_key(org, cluster,
method)`` while it runs, whether the scheduler or a user (``backup create``) started it, so no
two of them overlap. The holder renews the lease in a background thread; if the holder dies,
the lease expires after ``ttl`` seconds and the next one may take it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from backupctl.catalog.models import scheduler_leases as leases

log = logging.getLogger(__name__)

DEFAULT_TTL = 600.0


@dataclass(frozen=True)
class LeaseHolder:
    key: str
    owner: str
    acquired_at: datetime
    expires_at: datetime


def backup_lease_key(org: str | None, cluster: str, method: str) -> str:
    """The lease a backup of ``cluster`` with ``method`` holds (any backup type)."""
    return f"backup:{org or ''}/{cluster}:{method}"


def acquire(engine: Engine, key: str, owner: str, ttl: float) -> bool:
    """Take the lease ``key`` if it is free or expired. Atomic on SQLite and PostgreSQL."""
    now = time.time()
    with engine.begin() as conn:
        taken = conn.execute(update(leases).where(leases.c.key == key, leases.c.expires_at < now)
                             .values(owner=owner, acquired_at=now, expires_at=now + ttl)).rowcount
    if taken == 1:
        return True
    try:
        with engine.begin() as conn:
            conn.execute(insert(leases).values(key=key, owner=owner, acquired_at=now, expires_at=now + ttl))
    except IntegrityError:
        return False
    return True


def renew(engine: Engine, key: str, owner: str, ttl: float) -> bool:
    with engine.begin() as conn:
        return conn.execute(update(leases).where(leases.c.key == key, leases.c.owner == owner)
                            .values(expires_at=time.time() + ttl)).rowcount == 1


def release(engine: Engine, key: str, owner: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(leases).where(leases.c.key == key, leases.c.owner == owner))


def holder(engine: Engine, key: str) -> LeaseHolder | None:
    """Who holds ``key`` now (None if nobody, or the lease has expired)."""
    with engine.connect() as conn:
        row = conn.execute(select(leases).where(leases.c.key == key, leases.c.expires_at >= time.time())).first()
    if row is None:
        return None
    return LeaseHolder(key=row.key, owner=row.owner,
                       acquired_at=datetime.fromtimestamp(row.acquired_at, timezone.utc),
                       expires_at=datetime.fromtimestamp(row.expires_at, timezone.utc))


@contextmanager
def lease(engine: Engine, key: str, owner: str, ttl: float = DEFAULT_TTL) -> Iterator[bool]:
    """``with lease(...) as held:`` -- ``held`` is False if someone else holds it (then nothing
    is taken and nothing released). While held, the lease is renewed every ``ttl / 3`` seconds."""
    if not acquire(engine, key, owner, ttl):
        yield False
        return
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(ttl / 3):
            try:
                if not renew(engine, key, owner, ttl):
                    log.error("lease %s was lost by %s (expired and taken over?)", key, owner)
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: try again at the next beat
                log.warning("could not renew lease %s", key, exc_info=True)

    beat = threading.Thread(target=heartbeat, name=f"lease:{key}", daemon=True)
    beat.start()
    try:
        yield True
    finally:
        stop.set()
        beat.join()
        release(engine, key, owner)
