"""Organisations (tenants) and environments."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.models import DEFAULT_ENVIRONMENT, DEFAULT_ORG, Environment, Organisation
from backupctl.errors import NotFoundError
from backupctl.services.names import check_name


def get_organisation(session: Session, name: str | None, *, create: bool = False) -> Organisation:
    name = name or DEFAULT_ORG
    org = session.scalar(select(Organisation).where(Organisation.name == name))
    if org is None:
        if not create:
            raise NotFoundError(f"no organisation {name!r}", "check --org")
        org = Organisation(name=check_name(name, "organisation"))
        session.add(org)
        session.flush()
    return org


def get_environment(session: Session, name: str | None = None) -> Environment:
    name = name or DEFAULT_ENVIRONMENT
    env = session.scalar(select(Environment).where(Environment.name == name))
    if env is None:
        known = ", ".join(session.scalars(select(Environment.name).order_by(Environment.name)))
        raise NotFoundError(f"no environment {name!r}", f"known environments: {known}")
    return env
