"""Running PostgreSQL's own programs (pg_ctl, pg_controldata) on a data directory of this host.

PostgreSQL refuses to run as root: when backupctl runs as root, the programs run as the
owner of the data directory (``runuser -u OWNER --``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

from backupctl.errors import BackupctlError, UsageError


def find_bindir(major: int | None) -> str:
    """Where pg_ctl lives: $BACKUPCTL_PG_BINDIR, Debian's /usr/lib/postgresql/MAJOR/bin, else PATH."""
    candidates = []
    if os.environ.get("BACKUPCTL_PG_BINDIR"):
        candidates.append(os.environ["BACKUPCTL_PG_BINDIR"])
    if major:
        candidates.append(f"/usr/lib/postgresql/{major}/bin")
        candidates.append(f"/usr/pgsql-{major}/bin")
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(os.path.dirname(on_path))
    for c in candidates:
        if os.path.isfile(os.path.join(c, "pg_ctl")):
            return c
    raise UsageError(f"cannot find the PostgreSQL {major or ''} programs (pg_ctl)".replace("  ", " "),
                     "install them, or set BACKUPCTL_PG_BINDIR to their directory")


def as_owner(data_dir: str, argv: list[str]) -> list[str]:
    """``argv`` run as the data directory's owner when we are root."""
    if os.geteuid() != 0:
        return argv
    owner = pwd.getpwuid(os.stat(data_dir).st_uid).pw_name
    if owner == "root":
        raise UsageError(f"the data directory {data_dir} is owned by root and PostgreSQL refuses to run as root",
                         "chown it to the database's OS user (e.g. postgres)")
    return ["runuser", "-u", owner, "--", *argv]


def run(data_dir: str, argv: list[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(as_owner(data_dir, argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise BackupctlError(f"{os.path.basename(argv[0])} failed on {data_dir}: "
                             f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['exit ' + str(proc.returncode)]}",
                             "see the server log in the data directory")
    return proc


def controldata(bindir: str, data_dir: str) -> dict[str, str]:
    proc = run(data_dir, [os.path.join(bindir, "pg_controldata"), "-D", data_dir], timeout=30)
    out = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def is_running(bindir: str, data_dir: str) -> bool:
    return run(data_dir, [os.path.join(bindir, "pg_ctl"), "status", "-D", data_dir], check=False).returncode == 0
