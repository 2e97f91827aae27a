"""Helpers for tests: generated data, byte-for-byte tree comparison, and commands run on a terminal."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
from pathlib import Path


def write_random(path: Path, size: int, seed: int) -> None:
    rnd = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rnd.randbytes(n))
            left -= n


def back_up_files(repo_url: str, src: Path, files: dict[str, bytes], **backup_args):
    """A new repository at ``repo_url`` and its snapshot of ``files``, written under ``src`` first."""
    from backupctl.repository import Repository
    from backupctl.repository.backup import backup_paths
    from tests.conftest import PASSWORD

    src.mkdir(parents=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    repo = Repository.init(repo_url, PASSWORD)
    return repo, backup_paths(repo, [str(src)], **backup_args)


def make_tree(root: Path, seed: int = 1) -> Path:
    """Empty files, large files, many small files, binary and text, sparse, odd names, symlinks."""
    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty").touch()
    (root / "emptydir").mkdir()
    write_random(root / "large.bin", 9 * 1024 * 1024 + 123, seed)
    (root / "text.csv").write_bytes(b"".join(b"%d,user%d,%f,some filler text\n" % (i, i % 97, rnd.random())
                                             for i in range(120_000)))
    small = root / "many" / "small"
    for i in range(300):
        (small / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (small / f"d{i % 7}" / f"f{i}.dat").write_bytes(rnd.randbytes(rnd.randint(0, 5000)))
    with open(root / "sparse.img", "wb") as f:
        f.seek(5 * 1024 * 1024)
        f.write(b"middle")
        f.seek(12 * 1024 * 1024)
        f.write(b"end")
        f.truncate(16 * 1024 * 1024)  # trailing hole
    odd = root / "odd names"
    odd.mkdir()
    (odd / "spaces and\ttab").write_bytes(b"1")
    (odd / "ünïcødé-名前").write_bytes(b"2")
    (odd / "new\nline").write_bytes(b"3")
    os.symlink("../large.bin", odd / "link-to-large")
    os.symlink("/nonexistent/target", odd / "dangling")
    latin1 = os.fsencode(str(odd)) + b"/latin1-\xe9\xff"
    with open(latin1, "wb") as f:
        f.write(b"not utf-8 name")
    exe = root / "run.sh"
    exe.write_bytes(b"#!/bin/sh\necho hi\n")
    exe.chmod(0o750)
    return root


def tree_digest(root: Path) -> dict[bytes, tuple]:
    """Map each relative path (bytes) to what must survive a restore."""
    out = {}
    base = os.fsencode(str(root))
    for dirpath, dirs, files in os.walk(base):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, hashlib.sha256(f.read()).hexdigest(),
                                st.st_mtime_ns)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_on_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str, bytes]:
    """Run ``argv`` with stderr on a pseudo-terminal, as for a person at a shell: (exit status, what
    the terminal showed, stdout)."""
    import pty

    primary, secondary = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=secondary, env={**os.environ, **env, "COLUMNS": "150"})
    os.close(secondary)
    shown = b""
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:                           # the other end closed: the process is done
            break
        if not data:
            break
        shown += data
    out, _ = proc.communicate()
    os.close(primary)
    return proc.returncode, shown.decode(errors="replace"), out
