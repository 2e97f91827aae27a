"""Files of another OS user give one line naming the file, its owner and who we are, not a traceback.

The common case: backupctl run as root made the catalogue and the repository, then the database
server runs ``backupctl wal-push`` as postgres from archive_command (its log showed an internal
PermissionError line).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

BACKUPCTL = shutil.which("backupctl")


@pytest.fixture
def root_made():
    """A catalogue and a repository made by root, readable by nobody else; the directories searchable
    (pytest's own temporary directories are not)."""
    tmp_path = Path(tempfile.mkdtemp(prefix="backupctl-perm-"))
    os.chmod(tmp_path, 0o755)
    env = {**os.environ, "BACKUPCTL_HOME": str(tmp_path / "home"), "BACKUPCTL_KDF_N": "1024"}
    (tmp_path / "pw").write_text("pw\n")
    subprocess.run([BACKUPCTL, "repo", "add", "main", "--url", str(tmp_path / "repo"), "--default",
                    "--password-file", str(tmp_path / "pw")], env=env, check=True, capture_output=True)
    os.chmod(tmp_path / "pw", 0o644)                 # the password is not what is refused
    yield tmp_path, env
    shutil.rmtree(tmp_path)


def as_postgres(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", BACKUPCTL, *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_repository_of_another_user(root_made):
    tmp, env = root_made
    proc = as_postgres(env, "snapshot", "list", "--repo", str(tmp / "repo"), "--password-file", str(tmp / "pw"))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: permission denied: {tmp / 'repo' / 'config'}: it belongs to root "
                                  "and backupctl runs as postgres"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_catalogue_of_another_user(root_made):
    tmp, env = root_made
    proc = as_postgres(env, "cluster", "register", "c1", "--engine", "postgresql", "--host", "/tmp", "--port", "5432")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: permission denied: {tmp / 'home' / 'catalog.db'}: it belongs to root"), \
        proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    listed = subprocess.run([BACKUPCTL, "cluster", "list", "--json"], env=env, capture_output=True, text=True)
    assert listed.stdout.strip() == "[]"             # nothing half-written
