#!/usr/bin/env python3
"""How long one archive_command takes as the archive grows: backupctl `wal-push` vs
pgBackRest 2.45 `archive-push`, on the same WAL segments, in one run.

A quiet server archives one segment per archive_command call (archive_timeout, or a
segment filled slowly), so a week of archive can hold ten thousand pushes. Each push
is a process start plus whatever the tool reads of the repository; if that grows with
the archive, archiving falls behind and the RPO with it.

Steps:
  1 a throwaway PostgreSQL 15 (initdb --wal-segsize=--segment-mb: 1 MiB by default keeps
    a thousand segments small on disk; the per-push work that grows with the archive does
    not depend on the size), its archive_command copying every segment to a spool; the
    segments for step 3 written by `INSERT` of a few rows and `SELECT pg_switch_wal()`,
    then those for step 4 by large `INSERT`s (segments full of rows); the server is stopped.
  2 both tools' repositories: backupctl (`repo add` with the default KDF, `cluster
    register`), pgBackRest (`stanza-create`, compress-type=zst,
    repo1-cipher-type=aes-256-cbc, as in pg_vs_pgbackrest.py).
  3 the segments pushed in order to each tool. At each checkpoint (archive sizes
    given by --checkpoints) the next --samples pushes are timed one by one as the
    server would run them (a process each, as the `postgres` user); the pushes in
    between fill the archive untimed (pgBackRest: its CLI; backupctl: the same
    `wal-push` command run in one Python process, to save the start-ups).

  4 a backlog: --backlog full segments marked ready at once (archive_status/NAME.ready),
    drained as PostgreSQL's archiver does, one archive_command per segment in order,
    renaming .ready to .done after each; timed whole. backupctl's first call stores
    the ready segments as one batch and the calls for those answer from its spool.
  5 fetch: --fetch-samples consecutive archived segments fetched one by one, in order, as
    recovery's restore_command does (a process each as `postgres`, into the data
    directory's pg_wal/RECOVERYXLOG): backupctl `wal-fetch` as it is (reading ahead) and
    with BACKUPCTL_FETCH_AHEAD_MB=0, pgBackRest `archive-get` (synchronous, its default;
    its archive-async=y would read ahead too). Each round starts with backupctl's read-ahead
    spool empty. Then again after --index-blobs entries are added to backupctl's
    repository index: what a large repository's index holds (1,000,000 blobs: about 1 TB
    of backed-up data). They name packs that do not exist; nothing reads them, only a
    tool that loads the whole index pays for them.

Prints, per checkpoint, the median and the slowest timed push of each tool, the
ratio pgBackRest / backupctl, and the number of index files in backupctl's
repository (each push writes one; every push reads them all). Repositories are
on local disk; on S3 each file read is a request.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import backupctl_executable, free_port, log, postgres_can_run_backupctl, wait_idle

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BACKUPCTL = backupctl_executable()
PGBACKREST = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"
CLUSTER = "walbench"
FETCHERS = ("backupctl", "backupctl-no-ahead", "pgbackrest")


def run(cmd: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("cwd", "/")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r


def as_pg(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd]


class World:
    def __init__(self, root: Path, password: str):
        self.root = root
        self.data, self.sock, self.spool = root / "data", root / "sock", root / "spool"
        self.bc_home, self.bc_repo, self.pwfile = root / "bc-home", root / "bc-repo", root / "password"
        self.pgbr_conf, self.pgbr_repo = root / "pgbackrest.conf", root / "pgbr-repo"
        self.port = free_port()
        self.password = password
        self.env = {**os.environ, "BACKUPCTL_HOME": str(self.bc_home)}

    def setup(self, segments: int, filled: int, segment_mb: int) -> tuple[list[Path], list[Path]]:
        """``segments`` segments, each switched after a few rows (a quiet server), then ``filled``
        segments full of row data (a busy one)."""
        for d in (self.data, self.sock, self.spool / "pg_wal", self.bc_home, self.bc_repo, self.pgbr_repo,
                  self.root / "pgbr-log", self.root / "pgbr-lock"):
            d.mkdir(parents=True)
        self.pwfile.write_text(self.password)
        os.chmod(self.pwfile, 0o600)
        self.pgbr_conf.write_text("\n".join([
            "[global]", f"repo1-path={self.pgbr_repo}", "repo1-cipher-type=aes-256-cbc",
            f"repo1-cipher-pass={self.password}", "compress-type=zst", f"log-path={self.root / 'pgbr-log'}",
            f"lock-path={self.root / 'pgbr-lock'}", "log-level-console=warn", "log-level-file=off", "",
            f"[{CLUSTER}]", f"pg1-path={self.data}", f"pg1-port={self.port}", f"pg1-socket-path={self.sock}",
            "pg1-user=postgres", ""]))
        run(["chown", "-R", "postgres:postgres", str(self.root)])
        os.chmod(self.data, 0o700)
        run(as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   f"--wal-segsize={segment_mb}", "--no-instructions"]))
        # backupctl's wal-push reads the system identifier from <dir of pg_wal>/global/pg_control
        (self.spool / "global").symlink_to(self.data / "global")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {self.port}\nlisten_addresses = ''\nunix_socket_directories = '{self.sock}'\n"
                    f"archive_mode = on\narchive_command = 'cp %p {self.spool}/pg_wal/%f.tmp && "
                    f"mv {self.spool}/pg_wal/%f.tmp {self.spool}/pg_wal/%f'\nautovacuum = off\n")
        pg_ctl = as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w"])
        run(pg_ctl + ["start"])
        try:
            log(f"writing {segments} + {filled} WAL segments of {segment_mb} MiB")
            psql = as_pg([str(PG_BIN / "psql"), "-h", str(self.sock), "-p", str(self.port), "-d", "postgres", "-XAtq",
                          "-v", "ON_ERROR_STOP=1"])
            run(psql, input="CREATE TABLE t (id int, pad text);\n" +
                "INSERT INTO t SELECT g, repeat('x', 80) FROM generate_series(1, 3000) g;\n"
                "SELECT pg_switch_wal();\n" * segments)
            # then rows until `filled` segments are full (md5 text compresses about as table data does)
            start = run(psql + ["-c", "SELECT pg_current_wal_lsn()"]).stdout.strip()
            while int(run(psql + ["-c", f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')::bigint"]
                          ).stdout.strip()) < (filled + 1) * segment_mb * 2**20:
                run(psql + ["-c", "INSERT INTO t SELECT g, md5(g::text) || md5(random()::text) "
                                  f"FROM generate_series(1, {segment_mb * 20_000}) g"])
            run(psql + ["-c", "SELECT pg_switch_wal()"])
            run(as_pg([PGBACKREST, f"--config={self.pgbr_conf}", f"--stanza={CLUSTER}", "stanza-create"]))
            deadline = time.monotonic() + 900
            while len(list((self.spool / "pg_wal").glob("0*"))) < segments + filled and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            run(pg_ctl + ["-m", "fast", "stop"])
        names = sorted(p for p in (self.spool / "pg_wal").iterdir() if len(p.name) == 24)
        if len(names) < segments + filled:
            raise RuntimeError(f"only {len(names)} of {segments + filled} segments were archived; see "
                               f"{self.root}/server.log")
        bc = as_pg([BACKUPCTL])
        run(bc + ["repo", "add", "main", "--url", str(self.bc_repo), "--default", "--password-file",
                  str(self.pwfile)], env=self.env)
        run(bc + ["cluster", "register", CLUSTER, "--engine", "postgresql", "--host", str(self.sock), "--port",
                  str(self.port), "--user", "postgres", "--data-dir", str(self.data)], env=self.env)
        return names[:segments], names[segments:segments + filled]

    def push_command(self, tool: str, segment: Path) -> list[str]:
        if tool == "backupctl":
            return as_pg([BACKUPCTL, "wal-push", "--cluster", CLUSTER, str(segment)])
        return as_pg([PGBACKREST, f"--config={self.pgbr_conf}", f"--stanza={CLUSTER}", "archive-push", str(segment)])

    def timed_push(self, tool: str, segment: Path) -> float:
        t0 = time.perf_counter()
        run(self.push_command(tool, segment), env=self.env)
        return time.perf_counter() - t0

    def fill(self, tool: str, segments: list[Path]) -> None:
        """Push untimed: pgBackRest through its CLI, backupctl through its CLI's code in one process."""
        if not segments:
            return
        if tool == "pgbackrest":
            for s in segments:
                run(self.push_command(tool, s))
            return
        # backupctl.cli.main ends the process (os._exit); _run is the same command returning its status
        driver = ("import sys\nfrom backupctl.cli import _run\n"
                  "for path in sys.argv[1:]:\n"
                  f"    if _run(['wal-push', '--cluster', {CLUSTER!r}, path]): sys.exit(1)\n")
        run(as_pg([sys.executable, "-c", driver, *map(str, segments)]), env=self.env)

    def drain_backlog(self, tool: str, segments: list[Path]) -> float:
        """Seconds to archive ``segments``, all marked ready at once, as PostgreSQL's archiver does."""
        backlog = self.root / f"backlog-{tool}"
        status = backlog / "pg_wal" / "archive_status"
        status.mkdir(parents=True)
        (backlog / "global").symlink_to(self.data / "global")
        for s in segments:
            shutil.copy2(s, backlog / "pg_wal" / s.name)
            (status / f"{s.name}.ready").touch()
        run(["chown", "-R", "postgres:postgres", str(backlog)])
        t0 = time.perf_counter()
        for s in segments:
            run(self.push_command(tool, backlog / "pg_wal" / s.name), env=self.env)
            (status / f"{s.name}.ready").rename(status / f"{s.name}.done")
        return time.perf_counter() - t0

    def index_files(self) -> int:
        return sum(1 for _ in (self.bc_repo / "index").iterdir())

    def timed_fetch(self, tool: str, segment: Path) -> float:
        dest = self.data / "pg_wal" / "RECOVERYXLOG"
        env = self.env
        if tool.startswith("backupctl"):
            cmd = as_pg([BACKUPCTL, "wal-fetch", "--cluster", CLUSTER, segment.name, str(dest)])
            if tool == "backupctl-no-ahead":
                env = {**env, "BACKUPCTL_FETCH_AHEAD_MB": "0"}
        else:
            cmd = as_pg([PGBACKREST, f"--config={self.pgbr_conf}", f"--stanza={CLUSTER}", "archive-get",
                         segment.name, str(dest)])
        t0 = time.perf_counter()
        run(cmd, env=env)
        elapsed = time.perf_counter() - t0
        if dest.read_bytes() != segment.read_bytes():
            raise RuntimeError(f"{tool} fetched other bytes for {segment.name}")
        dest.unlink()
        return elapsed

    def add_index_entries(self, blobs: int) -> None:
        """``blobs`` more entries in backupctl's index (16 a pack, as 1 MiB chunks in 16 MiB packs)."""
        from backupctl.repository import Repository
        from backupctl.repository.index import save_index
        from backupctl.repository.pack import BlobEntry

        with Repository.open(str(self.bc_repo), self.password) as repo:
            packs = {}
            for _ in range(blobs // 16):
                pack = os.urandom(32)
                packs[pack] = (16 << 20, [BlobEntry(os.urandom(32), 0, 1, pack, i << 20, 1 << 19, 1 << 20)
                                          for i in range(16)])
            save_index(repo.store, repo.key, packs)
        run(["chown", "-R", "postgres:postgres", str(self.bc_repo)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", default="0,250,500,1000",
                    help="archive sizes (pushes) at which to time pushes, comma-separated")
    ap.add_argument("--samples", type=int, default=10, help="timed pushes per checkpoint and tool")
    ap.add_argument("--backlog", type=int, default=128, help="segments in the backlog drained at the end (0: none)")
    ap.add_argument("--segment-mb", type=int, default=1, choices=(1, 2, 4, 8, 16, 32, 64),
                    help="WAL segment size (initdb --wal-segsize); 16 is PostgreSQL's default")
    ap.add_argument("--fetch-samples", type=int, default=10, help="timed fetches per tool and repository size "
                    "(0: none)")
    ap.add_argument("--index-blobs", type=int, default=1_000_000,
                    help="index entries added to backupctl's repository before the second round of fetches")
    ap.add_argument("--workdir", help="create the work directory inside this directory")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json-out", help="write every measurement to this file")
    ap.add_argument("--password", default="bench-password")
    args = ap.parse_args(argv)
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",")})
    if any(b - a < args.samples for a, b in zip(checkpoints, checkpoints[1:])):
        ap.error("checkpoints must be at least --samples apart (the timed pushes count towards the archive)")
    total = checkpoints[-1] + args.samples
    postgres_can_run_backupctl(BACKUPCTL)
    root = Path(tempfile.mkdtemp(prefix="walpush-bench-", dir=args.workdir))
    os.chmod(root, 0o755)
    w = World(root, args.password)
    results: dict = {"machine": platform.node(), "cpus": os.cpu_count(), "checkpoints": [],
                     "segment_bytes": args.segment_mb * 2**20, "samples": args.samples}
    try:
        segments, filled = w.setup(total, args.backlog, args.segment_mb)
        done = 0
        for cp in checkpoints:
            row = {"archived": cp}
            for tool in ("backupctl", "pgbackrest"):
                w.fill(tool, segments[done:cp])
            wait_idle()
            for tool in ("backupctl", "pgbackrest"):
                times = [w.timed_push(tool, s) for s in segments[cp:cp + args.samples]]
                row[tool] = {"median_s": statistics.median(times), "max_s": max(times), "times_s": times}
            row["backupctl_index_files"] = w.index_files()
            done = cp + args.samples
            results["checkpoints"].append(row)
            log(f"{cp} archived: backupctl {row['backupctl']['median_s'] * 1000:.0f} ms, pgBackRest "
                f"{row['pgbackrest']['median_s'] * 1000:.0f} ms, {row['backupctl_index_files']} index files")
        if args.backlog:
            backlog = filled
            wait_idle()
            results["backlog"] = {"segments": len(backlog),
                                  **{tool: w.drain_backlog(tool, backlog) for tool in ("backupctl", "pgbackrest")}}
            log(f"backlog of {len(backlog)}: backupctl {results['backlog']['backupctl']:.1f} s, "
                f"pgBackRest {results['backlog']['pgbackrest']:.1f} s")
        if args.fetch_samples:
            fetched = segments[:args.fetch_samples]
            results["fetch"] = []
            for extra in (0, args.index_blobs):
                if extra:
                    w.add_index_entries(extra)
                row = {"index_blobs_added": extra}
                for tool in FETCHERS:
                    shutil.rmtree(w.bc_home / "archive" / "default" / CLUSTER / "fetched", ignore_errors=True)
                    wait_idle()
                    times = [w.timed_fetch(tool, s) for s in fetched]
                    row[tool] = {"total_s": sum(times), "median_s": statistics.median(times), "max_s": max(times),
                                 "times_s": times}
                results["fetch"].append(row)
                log(f"fetch with {extra} index entries added: " + ", ".join(
                    f"{t} {row[t]['total_s']:.2f} s" for t in FETCHERS))
    finally:
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(results, indent=2))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept {root}")
    print(f"wal push time as the archive grows ({args.samples} timed pushes per point, {args.segment_mb} MiB "
          f"segments, local repositories)")
    print(f"{'archived':>9}  {'backupctl ms':>13}  {'pgBackRest ms':>14}  {'ratio':>6}  {'index files':>11}")
    for row in results["checkpoints"]:
        bc, pb = row["backupctl"], row["pgbackrest"]
        print(f"{row['archived']:>9}  {bc['median_s'] * 1000:>6.0f} ({bc['max_s'] * 1000:>4.0f})  "
              f"{pb['median_s'] * 1000:>7.0f} ({pb['max_s'] * 1000:>4.0f})  {pb['median_s'] / bc['median_s']:>6.2f}  "
              f"{row['backupctl_index_files']:>11}")
    print("ms: median (slowest); ratio: pgBackRest / backupctl (above 1: backupctl is faster)")
    if "backlog" in results:
        b = results["backlog"]
        mb = b["segments"] * args.segment_mb * 2**20 / 1e6
        print(f"backlog of {b['segments']} ready segments full of rows drained: backupctl {b['backupctl']:.1f} s "
              f"({b['segments'] / b['backupctl']:.0f} segments/s, {mb / b['backupctl']:.0f} MB/s), pgBackRest "
              f"{b['pgbackrest']:.1f} s ({b['segments'] / b['pgbackrest']:.0f} segments/s, "
              f"{mb / b['pgbackrest']:.0f} MB/s), ratio {b['pgbackrest'] / b['backupctl']:.2f}")
    for row in results.get("fetch", []):
        pb = row["pgbackrest"]["total_s"]
        print(f"{args.fetch_samples} consecutive segments fetched as recovery does, {row['index_blobs_added']:,} "
              "blobs added to backupctl's index: " + ", ".join(
                  f"{t} {row[t]['total_s']:.2f} s (median {row[t]['median_s'] * 1000:.0f} ms, ratio "
                  f"{pb / row[t]['total_s']:.2f})" for t in FETCHERS))
    if results.get("fetch"):
        print("ratio: pgBackRest total / the tool's total (above 1: faster than pgBackRest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
