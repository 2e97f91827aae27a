"""A lease: a lock held in the catalogue database, across processes and hosts, with an expiry.

Used so that no two runs of the same cluster and method overlap even when they are started by
different scheduler processes. The holder renews the lease in a background thread; if the
holder dies, the lease expires after ``ttl`` seconds and the next run may take it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, delete, insert, update
from sqlalchemy.exc import IntegrityError

from scheduler.tables import leases

log = logging.getLogger(__name__)


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


@contextmanager
def lease(engine: Engine, key: str, owner: str, ttl: float = 600.0) -> Iterator[bool]:
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
