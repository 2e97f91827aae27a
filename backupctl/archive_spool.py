"""The log archive spool: files a batch push already stored, and files a fetch read ahead, answered
without the catalogue or the repository.

A push of log file N (PostgreSQL's ``archive_command``) may store other files waiting to be
archived in the same repository session (see engine_tools/postgresql/wal.py). After that
snapshot is committed it leaves a marker per extra file here: ``STATE/pushed/NAME``
holding the file's identity (size and mtime in ns, taken before it was read). When the server
then asks to archive NAME, the marker answers "archived" at once, if the file at that path
is still the one stored: a file of the same name and size from a cluster initialised again
under the same name (WAL names start over) is stored again, never answered from a stale
marker. ``backupctl wal-push`` checks the spool before it imports the catalogue (SQLAlchemy)
or opens the repository, so a spooled file costs a Python start and a stat.

A fetch (``wal-fetch``, PostgreSQL's ``restore_command``) that had to open the repository also
fetches the segments after the one asked for, up to ``BACKUPCTL_FETCH_AHEAD_MB`` (128 MiB, as
pgBackRest's ``archive-get-queue-max``; 0 turns it off), into ``STATE/fetched/SYSTEM/``: the
calls for those move the file into place and are done. SYSTEM is the database system identifier
of the data directory being recovered, so a file is only ever served to the system whose archive
it came from. A file is served once; those before the one asked for are dropped.

This module imports nothing but the standard library: it is on that fast path.
"""

from __future__ import annotations

import os
import shutil
import struct


def backupctl_home() -> str:
    """$BACKUPCTL_HOME, else ~/.backupctl (as backupctl.catalog.db.backupctl_home)."""
    return os.path.expanduser(os.environ.get("BACKUPCTL_HOME") or os.path.join(os.path.expanduser("~"), ".backupctl"))


def state_dir(org: str, cluster: str) -> str:
    """The private archiving state directory of one cluster."""
    return os.path.join(backupctl_home(), "archive", org, cluster)


def _marker(state: str, name: str) -> str:
    return os.path.join(state, "pushed", name)


def identity(path: str) -> str:
    """What tells this file from another of the same name: its size and modification time (ns)."""
    return identity_of(os.stat(path))


def identity_of(st: os.stat_result) -> str:
    """``identity`` from a stat already taken."""
    return f"{st.st_size}:{st.st_mtime_ns}"


def mark(state: str, name: str, ident: str) -> None:
    """Note that ``name`` (``identity`` taken before it was read) is archived: call only once the
    snapshot holding it is committed."""
    os.makedirs(os.path.join(state, "pushed"), exist_ok=True)
    with open(_marker(state, name), "w") as f:
        f.write(ident)


def is_marked(state: str, name: str) -> bool:
    return os.path.exists(_marker(state, name))


def take(state: str, path: str) -> bool:
    """True if the file at ``path`` was archived by a batch (its marker has its identity); the marker
    is consumed. A marker with another identity (another file of that name, or one written before
    markers held more than the size) is dropped: the file is stored again.
    """
    marker = _marker(state, os.path.basename(path))
    try:
        with open(marker) as f:
            recorded = f.read().strip()
    except FileNotFoundError:
        return False
    except OSError:
        recorded = ""
    try:
        current = identity(path)
    except OSError:
        return False                 # the caller reports the missing file
    try:
        os.unlink(marker)
    except FileNotFoundError:
        pass
    return current == recorded


# -- read ahead of fetches ---------------------------------------------------------------------------
def fetch_ahead_bytes() -> int:
    try:
        return max(0, int(os.environ.get("BACKUPCTL_FETCH_AHEAD_MB", "128"))) << 20
    except ValueError:
        return 128 << 20


def system_identifier(data_dir: str) -> str | None:
    """A PostgreSQL data directory's system identifier: the first 8 bytes of global/pg_control."""
    try:
        with open(os.path.join(data_dir, "global", "pg_control"), "rb") as f:
            return str(struct.unpack("<Q", f.read(8))[0])
    except (OSError, struct.error):
        return None


def fetched_dir(state: str, system: str | None) -> str:
    """Where files fetched ahead for database system ``system`` wait."""
    return os.path.join(state, "fetched", system or "unknown")


def take_fetched(state: str, name: str, dest: str) -> bool:
    """Move file ``name``, fetched ahead for the system whose data directory ``dest`` (``%p``, in
    its pg_wal) lies in, to ``dest``. False when it was not fetched ahead."""
    if not name or os.path.basename(name) != name or name.startswith("."):
        return False
    src = os.path.join(fetched_dir(state, system_identifier(os.path.dirname(os.path.dirname(os.path.abspath(dest))))),
                       name)
    try:
        os.rename(src, dest)
        return True
    except FileNotFoundError:
        return False
    except OSError:                    # another file system, or a spool this user may not change: copy
        pass
    try:
        spooled = open(src, "rb")
    except OSError:                    # gone meanwhile, or not this user's: not fetched ahead, as far
        return False                   # as this call goes (the repository has it)
    tmp = f"{dest}.backupctl-{os.getpid()}"
    try:
        with spooled, open(tmp, "wb") as out:    # failing to write the destination is a failure
            shutil.copyfileobj(spooled, out, 1 << 20)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:
        os.unlink(src)
    except OSError:
        pass
    return True

