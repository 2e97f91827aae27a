#!/usr/bin/env python3
"""backupctl vs pgBackRest 2.45 vs pg_basebackup | zstd on a live PostgreSQL 15 (issue 4, "Benchmark").

One run, one throwaway PostgreSQL 15 server, the same data for every tool. See
benchmarks/README.md.

Source: initdb in a temp dir, the server run as the `postgres` OS user (runuser),
archive_mode=on, max_wal_size=1GB, filled with `pgbench -i -s SCALE` (100: ~1.6 GB).

Steps:
  1 full backup: backupctl (`backup create --cluster C --json`), pgBackRest
    (`--type=full`; compress-type=zst, repo1-cipher-type=aes-256-cbc,
    process-max=2) and `pg_basebackup -Ft -D - -X fetch -c fast | zstd` to a file
  2 `pgbench -T 30 -c 4` (untimed), then an incremental backup of each:
    backupctl `--type incremental`, pgBackRest `--type=incr`; time and bytes added
  3 restore of each tool's latest backup into an empty directory (backupctl:
    `restore create` without --start, i.e. prepare data + recovery settings;
    pgBackRest: `restore --pg1-path=DIR`), then the restored server is started
    with pg_ctl (its own start time, then the time until recovery ended and it
    was promoted) and the row count of pgbench_history is checked.

WAL archiving: the server's archive_command is a small wrapper. During a tool's
timed backup only that tool's archiver runs (backupctl `wal-push`, the exact
command `backupctl cluster show C --archive-config` prints, or `pgbackrest
archive-push`); the segments the other tool misses meanwhile are copied to a
spool and pushed to it, untimed, right after the step, so both archives stay
gap-free. Outside the timed steps every segment goes to both.

Page cache: not dropped (it cannot be here); the data directory (backups) or the
tool's repository (restores) is read once just before each timed step.

Exit status: 0 when every step ran (an incremental backup "not supported yet" by
backupctl is reported, not a failure) and every restore verified; 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import measure  # noqa: E402
from measure import (backupctl_executable, disk_write_floor, du_sb, free_port, log,  # noqa: E402
                     postgres_can_run_backupctl, run_measured, wait_idle, warm)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BACKUPCTL = backupctl_executable()
PGBACKREST = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"
ZSTD = shutil.which("zstd") or "/usr/bin/zstd"
CLUSTER = "bench"          # backupctl cluster name = pgBackRest stanza
TOOLS = ("backupctl", "pgbackrest", "basebackup")
MB = 1_000_000
MiB = 2**20


# --------------------------------------------------------------------------
# running a child process and measuring it (as in repo_vs_restic.py)


def server_cpu_s(pid_file: Path | None) -> float:
    """CPU seconds (own + reaped children) of the source server: its postmaster and the postmaster's children.

    Differences of this before/after a step give the server's share (checkpointer, walsenders,
    backends, the archiver and the archive_command it runs), which is not "other load".
    Other PostgreSQL servers of the postgres user on the machine are not counted."""
    try:
        postmaster = int(pid_file.read_text().split()[0]) if pid_file else None
    except (OSError, ValueError, IndexError):
        return 0.0
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == postmaster or int(fields[1]) == postmaster:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tck


SERVER_PID_FILE: Path | None = None     # the source's postmaster.pid


def run(cmd: list[str], env: dict | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("cwd", "/")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def as_pg(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd]


def chown_pg(*paths: Path) -> None:
    for p in paths:
        shutil.chown(p, "postgres", "postgres")


# --------------------------------------------------------------------------
# the world: one source server, backupctl's catalogue + repository, pgBackRest's stanza


class World:
    def __init__(self, root: Path, scale: int, password: str, env: dict):
        self.root = root
        self.scale = scale
        self.password = password
        self.env = env                        # for backupctl (BACKUPCTL_HOME set)
        self.sock = root / "sock"
        self.data = root / "data"
        self.logs = root / "logs"
        self.bc_home = root / "bc-home"
        self.bc_repo = root / "bc-repo"
        self.bc_pwfile = root / "bc-password"
        self.pgbr_repo = root / "pgbr-repo"
        self.pgbr_conf = root / "pgbackrest.conf"
        self.basebackup_dir = root / "basebackup"
        self.spool = {"backupctl": root / "spool-backupctl", "pgbackrest": root / "spool-pgbackrest"}
        self.mode_file = root / "archive-mode"
        self.wrapper = root / "archive.sh"
        self.port = free_port()
        self.n = 0
        self.bc_cmd = ""                    # backupctl as the server runs it (env BACKUPCTL_HOME=... /path)

    # -- helpers ---------------------------------------------------------------------------
    def measured(self, label: str, cmd: list[str], env: dict | None = None) -> dict:
        self.n += 1
        return run_measured(cmd, env or self.env, self.logs / f"{self.n:02d}-{label}.out", cwd="/",
                            server_cpu=lambda: server_cpu_s(SERVER_PID_FILE))

    def psql(self, sql: str, port: int | None = None) -> str:
        return run(as_pg([str(PG_BIN / "psql"), "-h", str(self.sock), "-p", str(port or self.port), "-d", "postgres",
                          "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])).stdout.strip()

    def bc(self, *args: str, user: str = "postgres", check: bool = True) -> subprocess.CompletedProcess:
        argv = [BACKUPCTL, *args]
        return run(as_pg(argv) if user == "postgres" else argv, env=self.env, check=check)

    def pgbr(self, *args: str) -> list[str]:
        return as_pg([PGBACKREST, f"--config={self.pgbr_conf}", f"--stanza={CLUSTER}", *args])

    def set_archive_mode(self, *tools: str) -> None:
        self.mode_file.write_text(" ".join(tools) + "\n")

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> None:
        for d in (self.sock, self.data, self.logs, self.bc_home, self.bc_repo, self.pgbr_repo, self.basebackup_dir,
                  self.root / "pgbr-log", self.root / "pgbr-lock", self.root / "pgbr-spool"):
            d.mkdir()
            chown_pg(d)
        for sp in self.spool.values():
            (sp / "pg_wal").mkdir(parents=True)
            chown_pg(sp, sp / "pg_wal")
        # backupctl's wal-push reads the system identifier from <dir of pg_wal>/global/pg_control
        (self.spool["backupctl"] / "global").symlink_to(self.data / "global")
        self.bc_pwfile.write_text(self.password)
        os.chmod(self.bc_pwfile, 0o600)
        chown_pg(self.bc_pwfile)
        os.chmod(self.data, 0o700)

        log(f"initdb + pgbench -i -s {self.scale} on port {self.port}")
        t0 = time.perf_counter()
        run(as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-instructions"]))

        # backupctl: catalogue, repository (created by repo add, default KDF), cluster
        self.bc("repo", "add", "main", "--url", str(self.bc_repo), "--default", "--password-file", str(self.bc_pwfile))
        self.bc("cluster", "register", CLUSTER, "--engine", "postgresql", "--host", str(self.sock), "--port",
                str(self.port), "--user", "postgres", "--data-dir", str(self.data))
        config = self.bc("cluster", "show", CLUSTER, "--archive-config").stdout
        m = re.search(r"^archive_command = '(.*)'\s*$", config, re.MULTILINE)
        if not m or "%p" not in m.group(1):
            raise RuntimeError(f"unexpected archive config:\n{config}")
        self.bc_archive_command = m.group(1).replace("''", "'")
        self.bc_cmd = self.bc_archive_command.split(" wal-push ", 1)[0]

        # pgBackRest: the settings of issue 4
        self.pgbr_conf.write_text("\n".join([
            "[global]",
            f"repo1-path={self.pgbr_repo}",
            "repo1-cipher-type=aes-256-cbc",
            f"repo1-cipher-pass={self.password}",
            "repo1-retention-full=99",
            "compress-type=zst",
            "process-max=2",
            "start-fast=y",
            f"log-path={self.root / 'pgbr-log'}",
            f"lock-path={self.root / 'pgbr-lock'}",
            f"spool-path={self.root / 'pgbr-spool'}",
            "log-level-console=info",
            "log-level-file=off",
            "",
            f"[{CLUSTER}]",
            f"pg1-path={self.data}",
            f"pg1-port={self.port}",
            f"pg1-socket-path={self.sock}",
            "pg1-user=postgres",
            "",
        ]))
        os.chmod(self.pgbr_conf, 0o600)
        chown_pg(self.pgbr_conf)

        # archive_command: one wrapper, the tools it pushes to named in archive-mode
        pgbr_push = f"{shlex.quote(PGBACKREST)} --config={shlex.quote(str(self.pgbr_conf))} --stanza={CLUSTER} " \
                    f"archive-push"
        bc_push = self.bc_archive_command.replace("%p", '"$1"')
        self.wrapper.write_text(f"""#!/bin/sh
# archive_command = '{self.wrapper} %p %f' (working directory: the data directory)
# written by benchmarks/pg_vs_pgbackrest.py: push to the tools named in {self.mode_file},
# copy the segment to the other tools' spool (pushed to them later, untimed)
set -e
mode=" $(cat {self.mode_file}) "
case "$mode" in
  *" backupctl "*) {bc_push} >/dev/null ;;
  *) cp "$1" {self.spool['backupctl']}/pg_wal/"$2".tmp && mv {self.spool['backupctl']}/pg_wal/"$2".tmp \\
        {self.spool['backupctl']}/pg_wal/"$2" ;;
esac
case "$mode" in
  *" pgbackrest "*) {pgbr_push} "$1" ;;
  *) cp "$1" {self.spool['pgbackrest']}/pg_wal/"$2".tmp && mv {self.spool['pgbackrest']}/pg_wal/"$2".tmp \\
        {self.spool['pgbackrest']}/pg_wal/"$2" ;;
esac
""")
        os.chmod(self.wrapper, 0o755)
        self.set_archive_mode("backupctl", "pgbackrest")
        os.chmod(self.mode_file, 0o644)

        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n".join([
                "# benchmarks/pg_vs_pgbackrest.py",
                f"port = {self.port}", "listen_addresses = ''", f"unix_socket_directories = '{self.sock}'",
                "wal_level = replica", "max_wal_senders = 4", "max_wal_size = 1GB",
                # no autovacuum: it would start after pgbench at a random moment, inside one tool's timed
                # step (CPU, and WAL that only the backups taken after it replay at restore)
                "autovacuum = off",
                "archive_mode = on", f"archive_command = '{self.wrapper} %p %f'", "",
            ]))
        self.start_source()
        run(as_pg([str(PG_BIN / "pgbench"), "-i", "-s", str(self.scale), "-q", "-h", str(self.sock), "-p",
                   str(self.port), "postgres"]))
        self.psql("CHECKPOINT")
        log(f"source filled in {time.perf_counter() - t0:.0f} s")
        self.pgbr_stanza = run(self.pgbr("stanza-create")).stdout
        run(self.pgbr("check"))
        self.wait_archived()

    def start_source(self) -> None:
        run(as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.logs / "source.log"), "-w", "-t",
                   "120", "start"]))

    def stop_source(self) -> None:
        if (self.data / "postmaster.pid").exists():
            run(as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "300", "-m", "fast", "stop"]),
                check=False)

    def wait_archived(self, timeout: float = 900) -> str:
        """Switch to a new segment and wait until the one just closed is archived (and everything before)."""
        seg = self.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        self.psql("SELECT pg_switch_wal()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if last and last >= seg:
                return seg
            time.sleep(0.3)
        raise RuntimeError(f"segment {seg} not archived within {timeout:.0f} s; see {self.logs / 'source.log'}")

    def flush_spools(self) -> dict:
        """Push the segments each tool missed while the other one was timed (untimed), oldest first."""
        done = {}
        for tool, sp in self.spool.items():
            files = sorted(p for p in (sp / "pg_wal").iterdir() if not p.name.endswith(".tmp"))
            for p in files:
                if tool == "backupctl":
                    cmd = as_pg(shlex.split(self.bc_cmd) + ["wal-push", "--org", "default", "--cluster", CLUSTER,
                                                            str(p)])
                else:
                    cmd = self.pgbr("archive-push", str(p))
                run(cmd, env=self.env)
                p.unlink()
            done[tool] = [p.name for p in files]
            if files:
                log(f"pushed {len(files)} spooled WAL file(s) to {tool}")
        return done

    def pgbr_info(self) -> list[dict]:
        try:
            return json.loads(run(self.pgbr("info", "--output=json")).stdout)[0].get("backup", [])
        except (RuntimeError, ValueError, IndexError):
            return []


# --------------------------------------------------------------------------
# steps


def _json(text: str) -> dict | None:
    try:
        return json.loads(text)
    except ValueError:
        return None


NOT_SUPPORTED = re.compile(r"does not take \w+ backups|not supported|incremental.*(yet|not)", re.IGNORECASE)


def backup_step(w: World, tool: str, kind: str) -> dict:
    """One timed backup of the running source by one tool; kind is full or incremental."""
    w.psql("CHECKPOINT")          # untimed: none of the tools pays for the previous step's dirty pages
    os.sync()
    warm(w.data)
    archive_tools = {"backupctl": ("backupctl",), "pgbackrest": ("pgbackrest",), "basebackup": ()}[tool]
    w.set_archive_mode(*archive_tools)
    repo = {"backupctl": w.bc_repo, "pgbackrest": w.pgbr_repo, "basebackup": w.basebackup_dir}[tool]
    before = du_sb(repo)
    waited = wait_idle()
    if tool == "backupctl":
        cmd = as_pg([BACKUPCTL, "backup", "create", "--cluster", CLUSTER, "--json"]
                    + (["--type", "incremental"] if kind == "incremental" else []))
    elif tool == "pgbackrest":
        cmd = w.pgbr("--type=" + ("full" if kind == "full" else "incr"), "backup")
    else:
        out = w.basebackup_dir / "base.tar.zst"
        cmd = ["bash", "-o", "pipefail", "-c",
               (f"{PG_BIN / 'pg_basebackup'} -h {w.sock} -p {w.port} -U postgres -Ft -D - -X fetch -c fast "
                f"| {ZSTD} -q -o {out}")]
    r = w.measured(f"{tool}-{kind}", cmd)
    os.sync()
    w.set_archive_mode("backupctl", "pgbackrest")
    after = du_sb(repo)
    e = {k: r[k] for k in ("cmd", "rc", "wall_s", "user_s", "sys_s", "maxrss_bytes", "server_cpu_s", "other_cpu_s")}
    e.update(waited_for_idle_s=waited, repo_bytes_before=before, repo_bytes=after, bytes_added=after - before)
    if r["rc"] != 0:
        e["stderr"] = r["stderr"].strip()
        if tool == "backupctl" and kind == "incremental" and NOT_SUPPORTED.search(r["stderr"]):
            e["not_supported"] = True
    if tool == "backupctl" and r["rc"] == 0:
        e["report"] = _json(r["stdout"])
    if tool == "pgbackrest" and r["rc"] == 0:
        info = w.pgbr_info()
        if info:
            e["report"] = info[-1]
    e["spool_flushed"] = w.flush_spools()
    w.wait_archived()
    return e


def pgbench_step(w: World, seconds: int, clients: int) -> dict:
    log(f"pgbench -T {seconds} -c {clients} (archiving to both tools)")
    w.set_archive_mode("backupctl", "pgbackrest")
    lsn0 = w.psql("SELECT pg_current_wal_lsn()")
    r = run(as_pg([str(PG_BIN / "pgbench"), "-T", str(seconds), "-c", str(clients), "-j", str(min(clients, 2)),
                   "-h", str(w.sock), "-p", str(w.port), "postgres"]))
    wal = int(w.psql(f"SELECT pg_current_wal_lsn() - '{lsn0}'::pg_lsn"))
    tps = re.search(r"tps = ([\d.]+)", r.stdout)
    t0 = time.perf_counter()
    w.wait_archived()
    lag = time.perf_counter() - t0
    rows = int(w.psql("SELECT count(*) FROM pgbench_history"))
    log(f"pgbench: {rows} transactions, {wal / MB:.0f} MB of WAL; archive caught up {lag:.0f} s after the end")
    return {"seconds": seconds, "clients": clients, "tps": float(tps.group(1)) if tps else None,
            "wal_bytes": wal, "history_rows": rows, "archive_catch_up_s": lag}


def wait_promoted(w: World, port: int, datadir: Path, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = run(as_pg([str(PG_BIN / "psql"), "-h", str(w.sock), "-p", str(port), "-d", "postgres", "-XAtq", "-c",
                       "SELECT pg_is_in_recovery()"]), check=False)
        if r.returncode == 0 and r.stdout.strip() == "f":
            return
        if not (datadir / "postmaster.pid").exists():
            raise RuntimeError("the restored server stopped during recovery")
        time.sleep(0.1)
    raise RuntimeError(f"recovery did not end within {timeout:.0f} s")


def measured_disk_floor(w: World, res: dict) -> dict:
    """The disk's own time for the restores' bytes, before and after them (a virtual disk drifts)."""
    os.sync()
    wait_idle()
    floor = disk_write_floor(w.root, res["source"]["data_dir_bytes"] - res["source"].get("pg_wal_bytes", 0))
    log(f"disk floor: {floor['bytes'] / MB:.0f} MB written in {floor['write_s']:.2f} s, durable after "
        f"{floor['wall_s']:.2f} s")
    return floor


def restore_step(w: World, tool: str, backup_name: str | None, expected_rows: int) -> dict:
    target = w.root / f"restore-{tool}"
    target.mkdir(mode=0o700)
    chown_pg(target)
    repo = w.bc_repo if tool == "backupctl" else w.pgbr_repo
    os.sync()
    warm(repo)
    waited = wait_idle()
    if tool == "backupctl":
        # run as root (like the tests): the prepare stage chowns the files to the data files' owner
        cmd = [BACKUPCTL, "restore", "create", "--backup", backup_name, "--target-dir", str(target), "--json"]
    else:
        cmd = w.pgbr(f"--pg1-path={target}", "--archive-mode=off", "restore")
    r = w.measured(f"{tool}-restore", cmd)
    os.sync()
    e = {k: r[k] for k in ("cmd", "rc", "wall_s", "user_s", "sys_s", "maxrss_bytes", "server_cpu_s", "other_cpu_s")}
    e["waited_for_idle_s"] = waited
    e["restored_bytes"] = du_sb(target)
    if r["rc"] != 0:
        e["stderr"] = r["stderr"].strip()
        return e
    if tool == "backupctl":
        e["report"] = _json(r["stdout"])
    # start it ourselves, the same way for both: a free port, archive_mode off (a copy must never
    # archive into its source's archive), recovery to the end of the archive, then promotion
    port = free_port()
    logf = w.logs / f"restored-{tool}.log"
    t0 = time.perf_counter()
    start = run(as_pg([str(PG_BIN / "pg_ctl"), "-D", str(target), "-l", str(logf), "-w", "-t", "1800", "-o",
                       f"-p {port} -c archive_mode=off -c listen_addresses='' -c unix_socket_directories={w.sock}",
                       "start"]), check=False)
    e["start_s"] = time.perf_counter() - t0          # pg_ctl -w: until it accepts connections (consistent)
    try:
        if start.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {logf.read_text()[-1500:]}")
        t1 = time.perf_counter()
        wait_promoted(w, port, target)
        e["promote_s"] = time.perf_counter() - t1     # until recovery ended and it was promoted
        text = logf.read_text(errors="replace")
        e["wal_files_restored"] = len(re.findall(r'restored log file "[0-9A-F]{24}"', text))
        rows = int(w.psql("SELECT count(*) FROM pgbench_history", port=port))
        e["rows"] = rows
        e["verified"] = rows == expected_rows
        e["verify_note"] = f"pgbench_history has {rows} rows, expected {expected_rows}"
    except RuntimeError as exc:
        e["verified"] = False
        e["verify_note"] = f"{exc}; log: {logf.read_text(errors='replace')[-1500:] if logf.exists() else ''}"
    finally:
        run(as_pg([str(PG_BIN / "pg_ctl"), "-D", str(target), "-w", "-m", "immediate", "stop"]), check=False)
    log(f"restore {tool}: {r['wall_s']:.1f} s, start {e['start_s']:.1f} s, promote {e.get('promote_s', 0):.1f} s: "
        f"{e['verify_note']}")
    shutil.rmtree(target, ignore_errors=True)
    return e


# --------------------------------------------------------------------------
# output


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _ok(e: dict | None) -> bool:
    return bool(e) and e.get("rc") == 0


def _cell_time(e: dict | None) -> str:
    if not e:
        return "-"
    if e.get("not_supported"):
        return "not supported yet"
    return _f(e["wall_s"], ".2f") + ("" if e["rc"] == 0 else " FAIL")


def _tool_bytes(e: dict | None, tool: str) -> int | None:
    """Bytes the tool itself says the backup added (backupctl JSON / pgBackRest info repository delta)."""
    if not _ok(e) or not e.get("report"):
        return None
    rep = e["report"]
    if tool == "backupctl":
        return rep.get("bytes_added")
    return ((rep.get("info") or {}).get("repository") or {}).get("delta")


def render(res: dict) -> str:
    s = res["steps"]
    # what the tools copy: the data directory without pg_wal (none of them backs up pg_wal's contents)
    logical = res["source"]["data_dir_bytes"] - res["source"].get("pg_wal_bytes", 0)
    hdr = ["step", "backupctl s", "pgBackRest s", "basebackup|zstd s", "ratio pgbr/bc", "ratio bb/bc",
           "bc MB/s", "pgbr MB/s", "added MB bc", "added MB pgbr", "added MB bb", "added bc/pgbr",
           "RSS MiB bc", "RSS MiB pgbr", "RSS MiB bb"]
    rows = []
    for step, label in (("full", "1 full backup"), ("incremental", "2 incremental"), ("restore", "3 restore (files)"),
                        ("restore_start", "3b start (consistent)"), ("restore_promote", "3c replay + promote")):
        b = s.get(step, {}).get("backupctl")
        p = s.get(step, {}).get("pgbackrest")
        bb = s.get(step, {}).get("basebackup")
        if step in ("restore_start", "restore_promote"):
            key = "start_s" if step == "restore_start" else "promote_s"
            b = s["restore"].get("backupctl") or {}
            p = s["restore"].get("pgbackrest") or {}
            bt, pt = b.get(key), p.get(key)
            rows.append([label, _f(bt, ".2f"), _f(pt, ".2f"), "", _f(pt / bt if bt and pt else None, ".2f"),
                         "", "", "", "", "", "", "", "", "", ""])
            continue
        bt = b["wall_s"] if _ok(b) else None
        pt = p["wall_s"] if _ok(p) else None
        bbt = bb["wall_s"] if _ok(bb) else None
        size = logical if step in ("full", "restore") else None
        added = lambda e: e.get("bytes_added") if _ok(e) else None
        ab, ap, abb = added(b or {}), added(p or {}), added(bb or {})
        rows.append([
            label, _cell_time(b), _cell_time(p), _cell_time(bb),
            _f(pt / bt if bt and pt else None, ".2f"), _f(bbt / bt if bt and bbt else None, ".2f"),
            _f(size / bt / MB if size and bt else None, ".0f"), _f(size / pt / MB if size and pt else None, ".0f"),
            _f(ab and ab / MB, ".1f"), _f(ap and ap / MB, ".1f"), _f(abb and abb / MB, ".1f"),
            _f(ab / ap if ab is not None and ap else None, ".3f"),
            _f(_ok(b) and b["maxrss_bytes"] / MiB or None, ".0f"), _f(_ok(p) and p["maxrss_bytes"] / MiB or None, ".0f"),
            _f(_ok(bb) and bb["maxrss_bytes"] / MiB or None, ".0f"),
        ])
    widths = [max(len(hdr[i]), *(len(r[i]) for r in rows)) for i in range(len(hdr))]
    line = lambda cells: " | ".join(c.ljust(wd) if i == 0 else c.rjust(wd)
                                    for i, (c, wd) in enumerate(zip(cells, widths)))
    src = res["source"]
    out = [(f"== pgbench scale {src['scale']}: data directory {logical / MB:.0f} MB without pg_wal "
            f"(base/ {src['base_bytes'] / MB:.0f} MB); pgbench -T {res['pgbench']['seconds']} -c "
            f"{res['pgbench']['clients']}: {res['pgbench'].get('history_rows', '-')} transactions, "
            f"{res['pgbench'].get('wal_bytes', 0) / MB:.0f} MB of WAL"),
           line(hdr), "-+-".join("-" * wd for wd in widths)]
    out += [line(r) for r in rows]
    # what each tool itself says the backup added (data only, without WAL archived meanwhile)
    for step in ("full", "incremental"):
        b, p = s[step].get("backupctl"), s[step].get("pgbackrest")
        tb, tp = _tool_bytes(b, "backupctl"), _tool_bytes(p, "pgbackrest")
        out.append(f"{step}: added by the backup itself (tool's report): backupctl {_f(tb and tb / MB, '.1f')} MB "
                   f"(JSON bytes_added), pgBackRest {_f(tp and tp / MB, '.1f')} MB (info repository delta)"
                   + (f"; ratio {tb / tp:.3f}" if tb is not None and tp else ""))
    for t in ("backupctl", "pgbackrest"):
        e = s["restore"].get(t) or {}
        stages = ", ".join(f"{st['name']} {st['seconds']:.2f} s" for st in (e.get("report") or {}).get("stages", []))
        if "wal_files_restored" in e:
            out.append(f"restore {t}: {e['wal_files_restored']} WAL segments fetched by restore_command during "
                       f"3b+3c" + (f"; backupctl's own stage times: {stages}" if stages else ""))
    for t in ("backupctl", "pgbackrest"):
        e = s["restore"].get(t)
        what = res.get("restored_backup", {}).get(t, "")
        out.append(f"restore verification {t} ({what}): " + ("not run" if not e else
                   ("OK, " if e.get("verified") else "FAILED, ") + e.get("verify_note", e.get("stderr", ""))[:300]))
    floors = res.get("disk_floor") or []
    if floors:
        walls = {t: (s["restore"].get(t) or {}).get("wall_s") for t in ("backupctl", "pgbackrest")}
        out.append("disk floor (the restores' bytes in 4 MiB O_DIRECT writes + one fsync, no tool): " + ", ".join(
            f"{f['wall_s']:.2f} s ({f['bytes'] / f['wall_s'] / MB:.0f} MB/s)" for f in floors)
            + " before/after the restores; restore time / floor: " + ", ".join(
            f"{t} {walls[t] / min(f['wall_s'] for f in floors):.2f}" for t in walls if walls[t]))
    out.append("CPU s (user+sys of the tool / server processes): " + "; ".join(
        f"{step} {t} {_f(e['user_s'] + e['sys_s'], '.1f')}/{_f(e['server_cpu_s'], '.1f')}"
        for step in ("full", "incremental", "restore") for t, e in s[step].items() if e and "user_s" in e))
    noisy = [f"{step}/{t}: {e['other_cpu_s']:.1f} CPU-s in {e['wall_s']:.1f} s"
             for step in ("full", "incremental", "restore") for t, e in s[step].items()
             if e and e.get("wall_s") and e.get("other_cpu_s", 0) / e["wall_s"] > 0.25]
    if noisy:
        out.append("WARNING: other load on the machine during: " + "; ".join(noisy))
    for note in res["notes"]:
        out.append(f"NOTE: {note}")
    for fail in res["failures"]:
        out.append(f"FAILURE: {fail}")
    return "\n".join(out)


LEGEND = """\
ratio pgbr/bc = pgBackRest s / backupctl s, ratio bb/bc = pg_basebackup|zstd s / backupctl s (>1: backupctl faster;
  issue 4's target: >= 1.5 against pgBackRest on full and restore).
added MB = growth of the tool's repository (du -sb) during the step, WAL archived meanwhile included;
  added bc/pgbr = backupctl / pgBackRest (issue 4's target for the incremental: < 1). For pg_basebackup: the .tar.zst.
MB/s = data directory bytes (without pg_wal) / wall time. MB = 10^6 bytes. RSS = peak resident set size of the tool's largest
  process (ru_maxrss via wait4; pgBackRest's 2 worker processes are not summed; server processes not counted).
3 restore = files into an empty directory + recovery settings (backupctl: restore create without --start, i.e.
  prepare_data + configure_recovery; pgBackRest: restore). 3b = pg_ctl start -w until the restored server accepts
  connections (recovery consistent); 3c = from then until pg_is_in_recovery() is false (end of archive, promoted).
CPU server = CPU of the source server (postmaster and its children: checkpointer, walsender, archiver + archive_command).
WARNING lines name steps during which other processes used > 0.25 CPU per second of wall time.
Warm page cache: the data directory (backups) or the repository (restores) was read once before each timed step.
Restores: one untimed warm-up restore, then each tool twice in A B B A order; the mean is shown. Both tools'
  restores are durable when they end (pgBackRest fsyncs each file, backupctl syncs the file system once); the disk
  floor is what the disk alone takes to make the same bytes durable, measured before and after the restores."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=100, help="pgbench scale (default 100: ~1.6 GB)")
    ap.add_argument("--pgbench-seconds", type=int, default=30, help="pgbench -T before the incrementals (default 30)")
    ap.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    ap.add_argument("--workdir", type=Path, help="directory to work in (default: a new temp dir under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (repositories, logs)")
    ap.add_argument("--json-out", type=Path, help="write all results as JSON to this file")
    ap.add_argument("--password", default="backupctl-vs-pgbackrest-benchmark",
                    help="backupctl repository password = pgBackRest repo1-cipher-pass")
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="before each timed step, wait up to this many seconds for the machine to be idle")
    args = ap.parse_args(argv)
    global SERVER_PID_FILE
    measure.WAIT_IDLE_S = args.wait_idle
    if os.geteuid() != 0:
        ap.error("needs root (runs PostgreSQL and the tools as the postgres user)")
    for exe in (PGBACKREST, ZSTD, str(PG_BIN / "postgres")):
        if not os.access(exe, os.X_OK):
            ap.error(f"{exe} is missing (apt-get install pgbackrest zstd postgresql-15)")

    parent = args.workdir or Path("/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pg_vs_pgbackrest-", dir=parent))
    os.chmod(root, 0o755)
    log(f"work directory {root}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPCTL_", "PGBACKREST_", "PG"))}
    env["BACKUPCTL_HOME"] = str(root / "bc-home")      # real defaults otherwise (KDF included)
    postgres_can_run_backupctl(BACKUPCTL)

    bc_version = run([BACKUPCTL, "--version"], env=env).stdout.strip()
    pgbr_version = run([PGBACKREST, "version"]).stdout.strip()
    header = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "backupctl": bc_version, "pgbackrest": pgbr_version,
        "postgresql": run([str(PG_BIN / "postgres"), "--version"]).stdout.strip(),
        "zstd": run([ZSTD, "--version"]).stdout.strip(), "commit": run(
            ["git", "-C", str(Path(__file__).resolve().parent), "log", "-1", "--format=%h %s"], check=False
        ).stdout.strip(), "workdir": str(root), "loadavg_at_start": os.getloadavg(),
        "settings": "backupctl: repository defaults (default KDF, BACKUPCTL_* unset), backups as postgres, "
                    "restore as root; pgBackRest: compress-type=zst, repo1-cipher-type=aes-256-cbc, "
                    "process-max=2, start-fast=y; pg_basebackup -Ft -D - -X fetch -c fast | zstd (level 3, 1 thread)",
    }
    res: dict = {"header": header, "steps": {"full": {}, "incremental": {}, "restore": {}}, "notes": [],
                 "failures": [], "pgbench": {"seconds": args.pgbench_seconds, "clients": args.clients},
                 "restored_backup": {}}
    w = World(root, args.scale, args.password, env)
    SERVER_PID_FILE = w.data / "postmaster.pid"
    try:
        w.setup()
        res["source"] = {"scale": args.scale, "data_dir_bytes": du_sb(w.data), "base_bytes": du_sb(w.data / "base"),
                         "pg_wal_bytes": du_sb(w.data / "pg_wal"), "port": w.port}
        log(f"data directory {res['source']['data_dir_bytes'] / MB:.0f} MB, "
            f"{res['source']['pg_wal_bytes'] / MB:.0f} MB of it in pg_wal")

        for kind in ("full", "incremental"):
            if kind == "incremental":
                res["pgbench"].update(pgbench_step(w, args.pgbench_seconds, args.clients))
            for tool in (TOOLS if kind == "full" else TOOLS[:2]):
                e = backup_step(w, tool, kind)
                res["steps"][kind][tool] = e
                log(f"{kind} {tool}: {e['wall_s']:.2f} s rc={e['rc']}, +{e['bytes_added'] / MB:.1f} MB, "
                    f"peak RSS {e['maxrss_bytes'] / MiB:.0f} MiB" + (" NOT SUPPORTED YET" if e.get("not_supported")
                                                                     else ""))
                if e["rc"] != 0:
                    msg = f"{kind} {tool}: {' '.join(e['cmd'])}: rc={e['rc']}: {e.get('stderr', '')[-2000:]}"
                    (res["notes"] if e.get("not_supported") else res["failures"]).append(
                        ("not supported yet: " if e.get("not_supported") else "") + msg)

        expected = int(w.psql("SELECT count(*) FROM pgbench_history"))
        res["expected_history_rows"] = expected
        w.wait_archived()
        w.stop_source()                      # the restores run on a quiet machine

        # the latest backup of each tool: the incremental if it was taken, else the full
        bc_latest = None
        for kind in ("incremental", "full"):
            e = res["steps"][kind].get("backupctl")
            if _ok(e) and e.get("report"):
                bc_latest = e["report"]["name"]
                res["restored_backup"]["backupctl"] = f"{kind} {bc_latest}"
                if kind == "full":
                    res["notes"].append("backupctl restored its full backup (no incremental) + all archived WAL")
                break
        pgbr = res["steps"]["incremental"].get("pgbackrest")
        res["restored_backup"]["pgbackrest"] = "incr " + ((pgbr or {}).get("report") or {}).get("label", "?") \
            if _ok(pgbr) else "latest"
        # Each tool restores twice, in A B B A order, and its two times are averaged: the first to
        # write 1.6 GB into the page cache pays for reclaiming it, whichever tool that is.
        walls: dict[str, list[float]] = {}
        # An untimed restore first: whoever fills the page cache first after the backups pays for
        # reclaiming it, whichever tool that is.
        restore_step(w, "pgbackrest", bc_latest, expected)
        res["disk_floor"] = [measured_disk_floor(w, res)]
        for tool in ("backupctl", "pgbackrest", "pgbackrest", "backupctl"):
            if tool == "backupctl" and bc_latest is None:
                if tool not in walls:
                    res["failures"].append("restore backupctl: no backup to restore")
                    walls[tool] = []
                continue
            e = restore_step(w, tool, bc_latest, expected)
            walls.setdefault(tool, []).append(e["wall_s"])
            e["runs_wall_s"] = list(walls[tool])
            e["wall_s"] = sum(walls[tool]) / len(walls[tool])
            res["steps"]["restore"][tool] = e
            if e["rc"] != 0:
                res["failures"].append(f"restore {tool}: {' '.join(e['cmd'])}: rc={e['rc']}: "
                                       f"{e.get('stderr', '')[-2000:]}")
            elif not e.get("verified"):
                res["failures"].append(f"restore {tool}: RESTORE VERIFICATION FAILED: {e.get('verify_note')}")
        res["disk_floor"].append(measured_disk_floor(w, res))
    except Exception as exc:  # noqa: BLE001 -- report what ran so far
        res["failures"].append(f"aborted: {type(exc).__name__}: {exc}")
        log(f"ABORTED: {exc}")
    finally:
        w.stop_source()
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(res, indent=2, default=str) + "\n")
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"backupctl vs pgBackRest vs pg_basebackup|zstd -- {header['date']} on {header['host']} "
          f"({header['cpus']} CPUs)")
    print(f"{bc_version} ({header['commit']}); {pgbr_version}; {header['postgresql']}; {header['zstd']}")
    print(f"settings: {header['settings']}")
    print(LEGEND)
    print()
    if "source" in res:
        print(render(res))
    else:
        for fail in res["failures"]:
            print(f"FAILURE: {fail}")
    print()
    rc = 1 if res["failures"] else 0
    print("RESULT: " + ("all steps ran, all restores verified" if rc == 0 else "FAILURES (see above)"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
