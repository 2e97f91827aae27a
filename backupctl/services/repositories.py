"""Repositories in the catalogue (KubeBlocks' BackupRepo): name, URL, default flag, allowed organisations.

The passphrase is never stored: a row names where it comes from (a file, a command, or
an environment variable, BACKUPCTL_PASSWORD by default) and it is read at the moment of use.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.models import BackupRepository, Organisation
from backupctl.errors import NotFoundError, UsageError
from backupctl.repository import Repository
from backupctl.secrets import read_secret
from backupctl.services import audit
from backupctl.services.names import check_env_var_name, check_name
from backupctl.services.organisations import get_organisation

DEFAULT_PASSWORD_ENV = "BACKUPCTL_PASSWORD"


def normalise_url(url: str) -> str:
    """A plain path becomes absolute, so the row means the same from any working directory."""
    if not url:
        raise UsageError("no repository URL given", "pass --url PATH, file:///PATH or s3://BUCKET/PREFIX")
    return url if "://" in url else os.path.abspath(os.path.expanduser(url))


def _password_source(password_env: str | None, password_file: str | None, password_command: str | None
                     ) -> dict[str, str | None]:
    """The row's password fields: at most one source (none: BACKUPCTL_PASSWORD)."""
    given = [o for o, v in (("--password-env", password_env), ("--password-file", password_file),
                            ("--password-command", password_command)) if v]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} both name a password source", "give one of them")
    if password_env:
        check_env_var_name(password_env, "--password-env")
    return {"password_env": password_env, "password_command": password_command,
            "password_file": os.path.abspath(os.path.expanduser(password_file)) if password_file else None}


def add_repository(session: Session, *, name: str, url: str, default: bool = False, orgs: list[str] | tuple = (),
                   password_env: str | None = None, password_file: str | None = None,
                   password_command: str | None = None) -> BackupRepository:
    check_name(name, "repository")
    source = _password_source(password_env, password_file, password_command)
    if session.scalar(select(BackupRepository).where(BackupRepository.name == name)) is not None:
        raise UsageError(f"a repository named {name} is already in the catalogue", "choose another name")
    row = BackupRepository(name=name, url=normalise_url(url), **source,
                           organisations=[get_organisation(session, o, create=True) for o in orgs])
    session.add(row)
    if default:
        make_default(session, row)
    session.flush()
    audit.record(session, "repository.add", f"repository/{name}", url=row.url, default=default)
    return row


def set_repository(session: Session, row: BackupRepository, *, default: bool = False,
                   password_env: str | None = None, password_file: str | None = None,
                   password_command: str | None = None) -> None:
    """Change where ``row``'s password comes from (when one source is given) and make it the
    default. The caller opens the repository with the new source before committing: a source
    that does not open it must not replace one that does."""
    changed = []
    if password_env or password_file or password_command:
        for field, value in _password_source(password_env, password_file, password_command).items():
            setattr(row, field, value)
        changed.append("password source")
    if default:
        make_default(session, row)
        changed.append("default")
    if not changed:
        raise UsageError(f"nothing to change on repository {row.name}",
                         "give --password-env, --password-file, --password-command or --default")
    session.flush()
    audit.record(session, "repository.set", f"repository/{row.name}", changed=changed,
                 password_source=repository_to_dict(row)["password_source"]["kind"])


def make_default(session: Session, row: BackupRepository) -> None:
    """Make ``row`` the default of the organisations that may use it. One open to all organisations
    replaces the other such default; one open to some replaces the defaults of theirs, and leaves
    other organisations theirs (see ``default_repository``)."""
    mine = {o.id for o in row.organisations}
    for other in session.scalars(select(BackupRepository).where(BackupRepository.is_default.is_(True))):
        theirs = {o.id for o in other.organisations}
        if mine & theirs if mine else not theirs:
            other.is_default = False
    row.is_default = True


def get_repository(session: Session, name: str) -> BackupRepository:
    row = session.scalar(select(BackupRepository).where(BackupRepository.name == name))
    if row is None:
        raise NotFoundError(f"no repository {name!r} in the catalogue",
                            "see 'backupctl repo list', or add it with 'backupctl repo add NAME --url URL'")
    return row


def find_by_url(session: Session, url: str) -> BackupRepository | None:
    return session.scalar(select(BackupRepository).where(BackupRepository.url == normalise_url(url)))


def usable_by(row: BackupRepository, org: Organisation) -> bool:
    return not row.organisations or any(o.id == org.id for o in row.organisations)


def check_usable(row: BackupRepository, org: Organisation) -> None:
    if not usable_by(row, org):
        raise UsageError(f"repository {row.name} is not open to organisation {org.name}",
                         "use a repository of your organisation, or ask an administrator to allow it")


def list_repositories(session: Session, org: str | None = None) -> list[BackupRepository]:
    rows = list(session.scalars(select(BackupRepository).order_by(BackupRepository.name)))
    if org is None:
        return rows
    organisation = get_organisation(session, org)
    return [r for r in rows if usable_by(r, organisation)]


def default_repository(session: Session, org: Organisation) -> BackupRepository | None:
    """The organisation's own default repository, else the default open to all organisations."""
    rows = [r for r in session.scalars(select(BackupRepository).where(BackupRepository.is_default.is_(True))
                                       .order_by(BackupRepository.name)) if usable_by(r, org)]
    return next((r for r in rows if r.organisations), None) or next(iter(rows), None)


def repository_password(row: BackupRepository) -> str:
    return read_secret(env=row.password_env or DEFAULT_PASSWORD_ENV, file=row.password_file,
                       command=row.password_command, prompt=False, what=f"password of repository {row.name}")


def open_repository(row: BackupRepository) -> Repository:
    return Repository.open(row.url, repository_password(row))


def init_repository(row: BackupRepository) -> None:
    """Create the repository itself at the row's URL."""
    Repository.init(row.url, repository_password(row)).close()


def connect_repository(row: BackupRepository) -> bool:
    """Open the repository at the row's URL with its password source, creating it if there is
    none yet (as KubeBlocks provisions a BackupRepo). True when it was created. A wrong
    password or an unreachable store is an error now rather than at the first backup."""
    from backupctl.repository.config import CONFIG_NAME
    from repo_plugins import open_store

    store = open_store(row.url)
    try:
        exists = store.exists(CONFIG_NAME)
    finally:
        store.close()
    if not exists:
        init_repository(row)
        return True
    open_repository(row).close()
    return False


def repository_to_dict(r: BackupRepository) -> dict[str, Any]:
    source = ("file", r.password_file) if r.password_file else ("command", r.password_command) \
        if r.password_command else ("env", r.password_env or DEFAULT_PASSWORD_ENV)
    return {"name": r.name, "url": r.url, "default": r.is_default,
            "organisations": sorted(o.name for o in r.organisations),
            "password_source": {"kind": source[0], "value": source[1]},
            "created_at": r.created_at.isoformat()}
