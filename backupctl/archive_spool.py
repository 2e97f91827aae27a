"""The log archive spool: files a batch push already stored, answered without the catalogue or the repository.

A push of log file N (PostgreSQL's ``archive_command``) may store other files waiting to be
archived in the same repository session (see engine_tools/postgresql/wal.py). After that
snapshot is committed it leaves a marker per extra file here: ``STATE/pushed/NAME``
holding the file's size. When the server then asks to archive NAME, the marker answers
"archived" at once. ``backupctl wal-push`` checks the spool before it imports the catalogue
(SQLAlchemy) or opens the repository, so a spooled file costs a Python start and a stat.

This module imports nothing but the standard library: it is on that fast path.
"""

from __future__ import annotations

import os


def backupctl_home() -> str:
    """$BACKUPCTL_HOME, else ~/.backupctl (as backupctl.catalog.db.backupctl_home)."""
    return os.path.expanduser(os.environ.get("BACKUPCTL_HOME") or os.path.join(os.path.expanduser("~"), ".backupctl"))


def state_dir(org: str, cluster: str) -> str:
    """The private archiving state directory of one cluster."""
    return os.path.join(backupctl_home(), "archive", org, cluster)


def _marker(state: str, name: str) -> str:
    return os.path.join(state, "pushed", name)


def mark(state: str, name: str, size: int) -> None:
    """Note that ``name`` (``size`` bytes) is archived: call only once the snapshot holding it is committed."""
    os.makedirs(os.path.join(state, "pushed"), exist_ok=True)
    with open(_marker(state, name), "w") as f:
        f.write(str(size))


def is_marked(state: str, name: str) -> bool:
    return os.path.exists(_marker(state, name))


def take(state: str, path: str) -> bool:
    """True if the file at ``path`` was archived by a batch (its marker has its size); the marker is consumed.

    A marker whose size differs (the same name with other content) is dropped: store the file again.
    """
    marker = _marker(state, os.path.basename(path))
    try:
        with open(marker) as f:
            recorded = int(f.read().strip() or -1)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        recorded = -1
    try:
        size = os.path.getsize(path)
    except OSError:
        return False                 # the caller reports the missing file
    try:
        os.unlink(marker)
    except FileNotFoundError:
        pass
    return size == recorded
