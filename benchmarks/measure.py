"""Measuring child processes fairly, shared by the benchmarks: wall time, the child's own rusage
(peak RSS via wait4), CPU used by anything else meanwhile, waiting for a quiet machine, and
warming the page cache so both tools start from the same state."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MB = 1_000_000
MiB = 2**20
WAIT_IDLE_S = 60.0  # the scripts' --wait-idle sets it


def backupctl_executable() -> str:
    """The backupctl of this interpreter's environment: a version manager's shim on the PATH (pyenv's
    is a bash script) would add its own start-up to every timed command."""
    own = os.path.join(os.path.dirname(sys.executable), "backupctl")
    return own if os.access(own, os.X_OK) else shutil.which("backupctl") or "backupctl"


def postgres_can_run_backupctl(backupctl: str) -> None:
    """archive_command runs backupctl as postgres: give it the search bit on the way to this Python
    (what tests/engines/postgresql/conftest.py does)."""
    for path in {os.path.realpath(sys.executable), os.path.realpath(backupctl)}:
        d = os.path.dirname(path)
        while d != "/":
            mode = os.stat(d).st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(d, mode | stat.S_IXOTH)
            d = os.path.dirname(d)
    r = subprocess.run(["runuser", "-u", "postgres", "--", backupctl, "--version"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"postgres cannot run {backupctl}: {r.stderr}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all CPUs, from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    busy = sum(v[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def wait_idle(max_wait: float | None = None) -> float:
    """Wait until the machine is quiet (< 0.3 busy CPU over 2 consecutive seconds).

    Returns the seconds waited; gives up after max_wait (then the step's
    other_cpu_s shows the disturbance)."""
    max_wait = WAIT_IDLE_S if max_wait is None else max_wait
    t0 = time.monotonic()
    quiet = 0
    while time.monotonic() - t0 < max_wait:
        b0 = cpu_busy_s()
        time.sleep(0.5)
        quiet = quiet + 1 if (cpu_busy_s() - b0) / 0.5 < 0.3 else 0
        if quiet >= 4:
            break
    waited = time.monotonic() - t0
    if max_wait > 0 and quiet < 4:
        log(f"machine still busy after waiting {waited:.0f} s; measuring anyway")
    return waited


def run_measured(cmd: list[str], env: dict, out_path: Path, cwd: str | None = None,
                 server_cpu: Callable[[], float] | None = None) -> dict:
    """Run cmd with stdout/stderr to files; wall time and the child's own rusage.

    ``server_cpu``: CPU seconds of a server the command talks to (a database), counted apart.

    os.wait4 gives the rusage of exactly this child (ru_maxrss = its peak RSS,
    or that of a descendant it reaped if larger), not an accumulation over
    all children of this script.
    """
    err_path = out_path.with_suffix(".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        busy0, srv0 = cpu_busy_s(), server_cpu() if server_cpu else 0.0
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        busy = cpu_busy_s() - busy0
        server = max(0.0, server_cpu() - srv0) if server_cpu else 0.0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {
        "cmd": cmd,
        "rc": p.returncode,
        "wall_s": wall,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "maxrss_bytes": ru.ru_maxrss * 1024,  # Linux: kilobytes
        # CPU seconds used on the machine by anything else while the tool ran
        # (other processes, kernel writeback): a sign of a disturbed measurement
        "server_cpu_s": server,
        "other_cpu_s": max(0.0, busy - ru.ru_utime - ru.ru_stime - server),
        "stdout": out_path.read_text(errors="replace")[-20000:],
        "stderr": err_path.read_text(errors="replace")[-5000:],
    }


def du_sb(path: Path) -> int:
    # du exits 1 when a file vanished during its walk (a running server recycles WAL, removes
    # temporary files); its total is still the size of what was there
    r = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True)
    if r.returncode not in (0, 1) or not r.stdout.strip():
        raise RuntimeError(f"du -sb {path} failed: {r.stderr.strip()}")
    return int(r.stdout.split()[0])


def warm(path: Path) -> int:
    """Read every regular file under path once (page cache warm-up)."""
    n = 0
    buf = bytearray(4 * MiB)
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            try:
                with open(p, "rb", buffering=0) as fh:
                    while k := fh.readinto(buf):
                        n += k
            except OSError:
                pass
    return n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def disk_write_floor(directory: Path, nbytes: int) -> dict:
    """What the disk itself takes to make ``nbytes`` durable in ``directory``: sequential 4 MiB
    O_DIRECT writes of random bytes, then one fsync (no compression, no decryption, one file).
    A restore cannot beat it by much; on a slow or host-cached virtual disk both tools sit near it."""
    import mmap

    block = 4 * MiB
    source = mmap.mmap(-1, 16 * block)              # page-aligned, as O_DIRECT wants
    source.write(os.urandom(len(source)))
    path = directory / "disk-floor.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(path, flags | getattr(os, "O_DIRECT", 0), 0o600)
    except OSError:
        fd = os.open(path, flags, 0o600)
    try:
        t0 = time.perf_counter()
        view = memoryview(source)
        for i in range(-(-nbytes // block)):
            at = i % 16 * block
            os.pwrite(fd, view[at:at + block], i * block)
        written = time.perf_counter() - t0
        os.fsync(fd)
        total = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    return {"bytes": -(-nbytes // block) * block, "write_s": round(written, 3), "wall_s": round(total, 3)}
