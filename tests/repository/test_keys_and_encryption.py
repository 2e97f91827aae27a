"""Invariant 3: nothing is readable without the key; key slots can change without rewriting data."""

from __future__ import annotations

import os
import subprocess

import pytest
from click.testing import CliRunner

from backupctl.cli import cli
from backupctl.errors import WrongPasswordError
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.restore import restore_snapshot
from tests.conftest import PASSWORD
from tests.helpers import back_up_files, tree_digest

MARKER = b"PLAINTEXT-MARKER-4f1d9"


def test_no_plaintext_and_no_file_names_in_the_repository(fs_repo_url, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret-file-name.txt").write_bytes(MARKER * 1000)
    repo = Repository.init(fs_repo_url, PASSWORD)
    backup_paths(repo, [str(src)])
    for dirpath, _dirs, files in os.walk(fs_repo_url):
        for name in files:
            data = open(os.path.join(dirpath, name), "rb").read()
            assert MARKER not in data
            assert b"secret-file-name" not in data


def test_wrong_password_is_a_clear_error(repo_url):
    Repository.init(repo_url, PASSWORD)
    with pytest.raises(WrongPasswordError, match="wrong password"):
        Repository.open(repo_url, "not the password")


def test_wrong_password_on_the_command_line_is_one_line_and_exit_3(fs_repo_url, monkeypatch):
    Repository.init(fs_repo_url, PASSWORD)
    env = dict(os.environ, BACKUPCTL_PASSWORD="nope", BACKUPCTL_KDF_N="1024")
    proc = subprocess.run(["backupctl", "snapshot", "list", "--repo", fs_repo_url], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: wrong password")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_key_add_passwd_remove(fs_repo_url, tmp_path, monkeypatch):
    src = tmp_path / "src"
    repo, snap = back_up_files(fs_repo_url, src, {"f": b"data"})
    runner = CliRunner()
    base = ["--repo", fs_repo_url]

    monkeypatch.setenv("BACKUPCTL_NEW_PASSWORD", "second password")
    assert runner.invoke(cli, ["repo", "key", "add", *base]).exit_code == 0
    second = Repository.open(fs_repo_url, "second password")
    listed = runner.invoke(cli, ["repo", "key", "list", *base, "--json"])
    slots = __import__("json").loads(listed.output)
    assert len(slots) == 2 and sum(s["current"] for s in slots) == 1

    # Change the first password; the old one stops working, the data stays readable.
    monkeypatch.setenv("BACKUPCTL_NEW_PASSWORD", "third password")
    assert runner.invoke(cli, ["repo", "key", "passwd", *base]).exit_code == 0
    with pytest.raises(WrongPasswordError):
        Repository.open(fs_repo_url, PASSWORD)
    third = Repository.open(fs_repo_url, "third password")
    restore_snapshot(third, third.find_snapshot(snap.id), str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out") == tree_digest(src)

    # The key in use cannot be removed; another one can.
    monkeypatch.setenv("BACKUPCTL_PASSWORD", "third password")
    refused = runner.invoke(cli, ["repo", "key", "remove", *base, third.slot.id[:8]])
    assert refused.exit_code == 2 and refused.output.startswith("error: refusing to remove")
    assert runner.invoke(cli, ["repo", "key", "remove", *base, second.slot.id[:10]]).exit_code == 0
    with pytest.raises(WrongPasswordError):
        Repository.open(fs_repo_url, "second password")


def test_the_passphrase_kdf_is_standard_scrypt() -> None:
    """RFC 7914's test vector (the first 32 bytes: PBKDF2's output for 32 is a prefix of that for 64):
    keys derived by any scrypt implementation, as the one used before, keep opening repositories."""
    from backupctl.repository.crypto import KdfParams

    assert KdfParams(n=1024, r=8, p=16).derive(b"password", b"NaCl").hex() == \
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
