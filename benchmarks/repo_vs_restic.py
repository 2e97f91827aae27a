#!/usr/bin/env python3
"""backupctl vs restic 0.14: backup, incremental backup, restore and repository size.

One run, same data, same machine, both tools with their default settings
(backupctl: repository defaults; restic: repository version 2, compression
"auto"). See benchmarks/README.md.

Data sets (generated under --workdir, about --size-mb MB each):
  database  a real PostgreSQL 15 data directory (initdb + pgbench -i -s SIZE/16),
            server stopped before backing up
  mixed     40% random bytes, 40% text (log lines / CSV), 20% sparse files,
            a few large files and many small ones

Steps, per data set and tool:
  1 first backup
  2 second backup after overwriting a few KB in the middle of one large file
  3 third backup after inserting a few KB near the start of one large file
  4 restore of the latest snapshot into an empty directory, verified byte
    for byte (sha256 of every file) against the source
and the repository size (du -sb) after each step, bytes added by each
backup, and the peak RSS of every tool process (ru_maxrss from wait4).

Page cache: it cannot be dropped reliably here, so every timed step runs
against a warm cache: the source tree (backups) or the repository (restore)
is read once just before the step, for both tools alike.

Exit status: 0 when every step ran and every restore verified; 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import measure  # noqa: E402
from measure import backupctl_executable, du_sb, free_port, log, run_measured, wait_idle, warm  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RESTIC = shutil.which("restic") or "/usr/bin/restic"
BACKUPCTL = backupctl_executable()
TOOLS = ("backupctl", "restic")
MB = 1_000_000
KB = 1024
STEPS = (
    ("backup1", "1 first backup"),
    ("backup2", "2 in-place change"),
    ("backup3", "3 insertion"),
    ("restore", "4 restore"),
)


# --------------------------------------------------------------------------
# running a child process and measuring it


def run(cmd: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def tree_stats(path: Path) -> tuple[int, int]:
    """(logical bytes = sum of file sizes, number of files)."""
    total = files = 0
    for root, _dirs, fs in os.walk(path):
        for f in fs:
            st = os.lstat(os.path.join(root, f))
            if os.path.isfile(os.path.join(root, f)) and not os.path.islink(os.path.join(root, f)):
                total += st.st_size
                files += 1
    return total, files


def tree_digest(path: Path) -> dict:
    """{relpath: ('f', sha256) | ('d',) | ('l', target)} for everything under path."""
    out: dict[str, tuple] = {}
    for root, dirs, files in os.walk(path):
        rel_root = os.path.relpath(root, path)
        for d in dirs:
            p = os.path.join(root, d)
            rel = os.path.normpath(os.path.join(rel_root, d))
            out[rel] = ("l", os.readlink(p)) if os.path.islink(p) else ("d",)
        for f in files:
            p = os.path.join(root, f)
            rel = os.path.normpath(os.path.join(rel_root, f))
            if os.path.islink(p):
                out[rel] = ("l", os.readlink(p))
            elif os.path.isfile(p):
                with open(p, "rb") as fh:
                    out[rel] = ("f", hashlib.file_digest(fh, "sha256").hexdigest())
            else:
                out[rel] = ("other",)
    return out


def compare_trees(src: dict, dst: dict) -> list[str]:
    problems = []
    for k in sorted(src.keys() - dst.keys()):
        problems.append(f"missing in restore: {k} ({src[k][0]})")
    for k in sorted(dst.keys() - src.keys()):
        problems.append(f"extra in restore: {k}")
    for k in sorted(src.keys() & dst.keys()):
        if src[k] != dst[k]:
            problems.append(f"differs: {k}: source {src[k]} restored {dst[k]}")
    return problems


# --------------------------------------------------------------------------
# data sets


def make_database(workdir: Path, size_mb: int) -> tuple[Path, dict]:
    """A real PostgreSQL 15 data directory filled by pgbench, server stopped."""
    scale = max(1, round(size_mb / 16))
    pgroot = workdir / "pg"
    pgroot.mkdir()
    shutil.chown(pgroot, "postgres", "postgres")
    datadir = pgroot / "data"
    sockdir = pgroot
    logfile = pgroot / "server.log"
    port = free_port()

    def as_pg(*cmd: str) -> subprocess.CompletedProcess:
        return run(["runuser", "-u", "postgres", "--", *cmd], cwd="/")

    log(f"database: initdb + pgbench -i -s {scale} on port {port}")
    t0 = time.perf_counter()
    as_pg(str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres",
          "--auth=trust", "-E", "UTF8", "--no-instructions")
    as_pg(str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-l", str(logfile), "-w",
          "-o", f"-p {port} -k {sockdir} -c listen_addresses='' "
          # keep pg_wal small so that the data directory is about size_mb
          # (with the default max_wal_size=1GB, 1 GB of recycled WAL stays)
          "-c max_wal_size=64MB -c min_wal_size=32MB", "start")
    try:
        as_pg(str(PG_BIN / "pgbench"), "-i", "-s", str(scale), "-q",
              "-h", str(sockdir), "-p", str(port), "postgres")
        as_pg(str(PG_BIN / "psql"), "-h", str(sockdir), "-p", str(port), "-d", "postgres",
              "-c", "CHECKPOINT")
    finally:
        as_pg(str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-w", "-m", "fast", "stop")
    log(f"database: generated in {time.perf_counter() - t0:.0f} s")
    return datadir, {"kind": "postgresql-15 pgbench", "pgbench_scale": scale}


def _split_sizes(rng: random.Random, total: int, n: int) -> list[int]:
    w = [rng.uniform(0.6, 1.4) for _ in range(n)]
    s = sum(w)
    sizes = [int(total * x / s) for x in w]
    sizes[-1] += total - sum(sizes)
    return sizes


def _small_sizes(rng: random.Random, total: int) -> list[int]:
    """Log-uniform sizes between 4 KB and 1 MB summing to about total."""
    sizes = []
    acc = 0
    while acc < total:
        s = int(round(2 ** rng.uniform(12, 20)))
        s = min(s, total - acc) if total - acc >= 4096 else s
        sizes.append(s)
        acc += s
    return sizes


_WORDS = ("GET POST PUT DELETE /api/v1/users /api/v1/orders /static/app.js /login /health "
          "INFO WARN ERROR DEBUG ok timeout refused accepted queued committed rollback "
          "alpha beta gamma delta checkout invoice payment shipping customer product").split()
_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")


class TextGen:
    """Endless generated log lines and CSV rows (compressible, not repetitive)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.t = 1_700_000_000.0
        self.row = 0

    def block(self, nbytes: int) -> bytes:
        rng = self.rng
        lines = []
        n = 0
        ri = rng.randrange
        ch = rng.choice
        while n < nbytes:
            self.t += rng.random() * 0.05
            self.row += 1
            if self.row & 1:
                ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.t))
                line = (f"{ts}.{ri(1000):03d}Z {ch(_LEVELS)} pid={ri(1, 40000)} "
                        f"req={ri(16**12):012x} {ch(_WORDS)} {ch(_WORDS)} "
                        f"status={ch((200, 200, 200, 201, 304, 404, 500))} "
                        f"dur_ms={ri(1, 5000)} user={ch(_WORDS)}{ri(1000)}\n")
            else:
                line = (f"{self.row},{ri(10**9)},{ch(_WORDS)},{ch(_WORDS)},"
                        f"{ri(100000) / 100:.2f},{ri(1, 500)},\"{ch(_WORDS)} {ch(_WORDS)}\"\n")
            lines.append(line)
            n += len(line)
        data = "".join(lines).encode()
        return data[:nbytes]


def _write_stream(path: Path, size: int, gen) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            k = min(left, 8 * 1024 * 1024)
            f.write(gen(k))
            left -= k


def make_mixed(workdir: Path, size_mb: int, seed: int) -> tuple[Path, dict]:
    """40% random, 40% text, 20% sparse; a few large files, many small ones."""
    rng = random.Random(seed)
    text = TextGen(random.Random(seed + 1))
    root = workdir / "mixed"
    root.mkdir()
    total = size_mb * MB
    f = size_mb / 1600  # large files are 100-300 MB at the default size
    meta = {"kind": "mixed", "files": {}}

    def randgen(k: int) -> bytes:
        return rng.randbytes(k)

    def place_small(cat: str, i: int) -> Path:
        d = root / cat / f"d{i % 16:02d}" / f"s{(i // 16) % 4}"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{cat}-{i:05d}.{'log' if cat == 'text' else 'bin'}"

    t0 = time.perf_counter()
    for cat, frac in (("random", 0.4), ("text", 0.4), ("sparse", 0.2)):
        cat_bytes = int(total * frac)
        large_bytes = int(cat_bytes * 0.7)
        small_bytes = cat_bytes - large_bytes
        n_large = max(1, round(large_bytes / (200 * MB * f)))
        (root / cat).mkdir(parents=True, exist_ok=True)
        for j, sz in enumerate(_split_sizes(rng, large_bytes, n_large)):
            p = root / cat / f"large-{j}.{'csv' if cat == 'text' else 'dat'}"
            if cat == "random":
                _write_stream(p, sz, randgen)
            elif cat == "text":
                _write_stream(p, sz, text.block)
            else:
                # file with holes: a 256 KB island of data every 4 MB, holes between
                with open(p, "wb") as fh:
                    fh.truncate(sz)
                    for off in range(0, sz, 4 * 1024 * 1024):
                        k = min(256 * KB, sz - off)
                        fh.seek(off + min(rng.randrange(0, 3 * 1024 * 1024), max(0, sz - off - k)))
                        fh.write(randgen(k // 2) + text.block(k - k // 2))
            meta["files"][str(p.relative_to(root))] = sz
        for i, sz in enumerate(_small_sizes(rng, small_bytes)):
            p = place_small(cat, i)
            if cat == "random":
                p.write_bytes(rng.randbytes(sz))
            elif cat == "text":
                p.write_bytes(text.block(sz))
            else:
                head = min(sz, rng.randrange(1024, 16 * KB))
                tail = min(sz - head, rng.randrange(0, 8 * KB))
                with open(p, "wb") as fh:
                    fh.write(text.block(head) if i % 2 else rng.randbytes(head))
                    if i % 3 == 0:
                        fh.write(bytes(sz - head - tail))   # explicit zero run
                    else:
                        fh.seek(sz - tail)                    # a hole
                    fh.write(rng.randbytes(tail))
                    fh.truncate(sz)
    log(f"mixed: generated in {time.perf_counter() - t0:.0f} s")
    meta.pop("files")
    return root, meta


def largest_file(root: Path) -> Path:
    best, best_size = None, -1
    for r, _d, fs in os.walk(root):
        for f in fs:
            p = os.path.join(r, f)
            if os.path.isfile(p) and not os.path.islink(p):
                s = os.path.getsize(p)
                if s > best_size:
                    best, best_size = p, s
    return Path(best)


def modify_in_place(path: Path, nbytes: int, rng: random.Random) -> dict:
    size = path.stat().st_size
    off = size // 2 + 777
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(rng.randbytes(nbytes))
    os.utime(path)
    return {"file": str(path), "offset": off, "bytes": nbytes, "kind": "overwrite"}


def insert_bytes(path: Path, nbytes: int, rng: random.Random) -> dict:
    """Insert nbytes near the start of path, shifting the rest (rewritten in place)."""
    size = path.stat().st_size
    off = min(1024 * 1024, size // 10) + 4321
    data = rng.randbytes(nbytes)
    chunk = 8 * 1024 * 1024
    fd = os.open(path, os.O_RDWR)
    try:
        end = size
        while end > off:  # move [off, size) to [off+n, size+n), from the end backwards
            start = max(off, end - chunk)
            buf = os.pread(fd, end - start, start)
            os.pwrite(fd, buf, start + nbytes)
            end = start
        os.pwrite(fd, data, off)
    finally:
        os.close(fd)
    os.utime(path)
    return {"file": str(path), "offset": off, "bytes": nbytes, "kind": "insert"}


# --------------------------------------------------------------------------
# the tools


class Tool:
    name = ""

    def __init__(self, base: Path, env: dict):
        self.repo = base / f"repo-{self.name}"
        self.logs = base / f"logs-{self.name}"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.n = 0

    def _run(self, label: str, cmd: list[str]) -> dict:
        self.n += 1
        return run_measured(cmd, self.env, self.logs / f"{self.n:02d}-{label}.out")


class Backupctl(Tool):
    name = "backupctl"

    def init(self):
        return self._run("init", [BACKUPCTL, "repo", "init", "--repo", str(self.repo)])

    def backup(self, src: Path):
        r = self._run("backup", [BACKUPCTL, "snapshot", "create", "--repo", str(self.repo), str(src), "--json"])
        if r["rc"] == 0:
            try:
                r["report"] = json.loads(r["stdout"])
            except ValueError:
                pass
        return r

    def restore(self, target: Path):
        r = self._run("restore", [BACKUPCTL, "snapshot", "restore", "--repo", str(self.repo), "latest", str(target), "--json"])
        if r["rc"] == 0:
            try:
                r["report"] = json.loads(r["stdout"])
            except ValueError:
                pass
        return r

    def stats(self):
        r = self._run("stats", [BACKUPCTL, "repo", "stats", "--repo", str(self.repo), "--json"])
        try:
            return json.loads(r["stdout"]) if r["rc"] == 0 else {"error": r["stderr"].strip()}
        except ValueError:
            return {"error": r["stdout"]}


class Restic(Tool):
    name = "restic"

    def __init__(self, base: Path, env: dict):
        super().__init__(base, env)
        self.env = dict(env, RESTIC_REPOSITORY=str(self.repo), RESTIC_CACHE_DIR=str(base / "restic-cache"))

    def init(self):
        return self._run("init", [RESTIC, "init", "--repository-version", "2"])

    def backup(self, src: Path):
        r = self._run("backup", [RESTIC, "backup", str(src), "--json"])
        for line in reversed(r["stdout"].splitlines()):
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("message_type") == "summary":
                r["report"] = d
                break
        r["stdout"] = r["stdout"][-2000:]  # status lines: keep the tail only
        return r

    def restore(self, target: Path):
        # restic does not sync what it restored; backupctl syncs its target before it reports success:
        # `sync -f` in the same timed step makes both end durable
        return self._run("restore", ["sh", "-c", '"$1" restore latest --target "$2" && sync -f "$2"', "sh",
                                     RESTIC, str(target)])

    def stats(self):
        return {}


def restored_root(target: Path, src: Path) -> Path:
    """Where the source tree landed inside the restore target."""
    for cand in (target / str(src).lstrip("/"), target / src.name):
        if cand.is_dir():
            return cand
    return target


# --------------------------------------------------------------------------
# the benchmark


def sync() -> None:
    os.sync()


def bench_dataset(name: str, src: Path, meta: dict, base: Path, env: dict, seed: int) -> dict:
    logical, nfiles = tree_stats(src)
    log(f"{name}: {logical / MB:.0f} MB in {nfiles} files at {src}")
    tools = {"backupctl": Backupctl(base, env), "restic": Restic(base, env)}
    res = {"dataset": name, "source": str(src), "logical_bytes": logical, "files": nfiles,
           "meta": meta, "steps": {s: {} for s, _ in STEPS}, "init": {}, "repo_bytes_init": {},
           "modifications": [], "verify": {}, "failures": []}
    alive = {t: True for t in TOOLS}
    for t, tool in tools.items():
        r = tool.init()
        res["init"][t] = {k: r[k] for k in ("rc", "wall_s", "maxrss_bytes")}
        if r["rc"] != 0:
            alive[t] = False
            res["failures"].append(f"{name}/{t}: init failed: {' '.join(r['cmd'])}: rc={r['rc']}: {r['stderr'].strip()[-2000:]}")
            continue
        res["repo_bytes_init"][t] = du_sb(tool.repo)
    mrng = random.Random(seed + 99)
    big = largest_file(src)

    for step, label in STEPS:
        if step == "backup2":
            res["modifications"].append(modify_in_place(big, 8 * KB, mrng))
            log(f"{name}: overwrote 8 KiB in the middle of {big}")
        elif step == "backup3":
            res["modifications"].append(insert_bytes(big, 16 * KB, mrng))
            log(f"{name}: inserted 16 KiB near the start of {big}")
        if step.startswith("backup"):
            logical, nfiles = tree_stats(src)
        src_digest = tree_digest(src) if step == "restore" else None
        # Restores run twice in opposite orders (A B B A) and each tool's two times are averaged:
        # the first writer of 1.6 GB into the page cache pays for reclaiming it, whoever it is.
        order = list(tools.items()) + list(reversed(tools.items())) if step == "restore" else list(tools.items())
        restore_walls: dict[str, list[float]] = {}
        if step == "restore":
            # An untimed restore first: whoever fills the page cache first after the backups pays for
            # reclaiming it (seen here: the same restore took 5.1 s first and 1.5 s last).
            first = next(t for t in tools if alive[t])
            warmup = base / "restore-warmup"
            warmup.mkdir()
            tools[first].restore(warmup)
            shutil.rmtree(warmup, ignore_errors=True)
            sync()
        for t, tool in order:
            if not alive[t]:
                continue
            sync()
            if step == "restore":
                warm(tool.repo)
                target = base / f"restore-{t}"
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
                waited = wait_idle()
                r = tool.restore(target)
                restore_walls.setdefault(t, []).append(r["wall_s"])
                r["wall_s"] = sum(restore_walls[t]) / len(restore_walls[t])
            else:
                warm(src)
                waited = wait_idle()
                r = tool.backup(src)
            sync()
            entry = {k: r[k] for k in ("cmd", "rc", "wall_s", "user_s", "sys_s", "maxrss_bytes", "other_cpu_s")}
            entry["logical_bytes"] = logical
            entry["waited_for_idle_s"] = waited
            if step == "restore":
                entry["runs_wall_s"] = list(restore_walls[t])
            entry["throughput_Bps"] = logical / r["wall_s"] if r["wall_s"] > 0 else None
            if "report" in r:
                entry["report"] = r["report"]
            entry["repo_bytes"] = du_sb(tool.repo)
            res["steps"][step][t] = entry
            log(f"{name}: {label}: {t}: {r['wall_s']:.2f} s, rc={r['rc']}, "
                f"repo {entry['repo_bytes'] / MB:.1f} MB, peak RSS {r['maxrss_bytes'] / 2**20:.0f} MiB")
            if r["rc"] != 0:
                alive[t] = False
                res["failures"].append(f"{name}/{t}: {label} failed: {' '.join(r['cmd'])}: rc={r['rc']}: "
                                       f"{r['stderr'].strip()[-3000:]}")
                continue
            if step == "restore":
                root = restored_root(target, src)
                problems = compare_trees(src_digest, tree_digest(root))
                res["verify"][t] = {"ok": not problems, "restored_root": str(root),
                                    "problems": problems[:50], "n_problems": len(problems)}
                if problems:
                    res["failures"].append(f"{name}/{t}: RESTORE VERIFICATION FAILED ({len(problems)} problems): "
                                           + "; ".join(problems[:10]))
                    log(f"{name}: {t}: RESTORE VERIFICATION FAILED: {len(problems)} problems, e.g. {problems[:5]}")
                else:
                    log(f"{name}: {t}: restore verified ({len(src_digest)} entries identical)")
                shutil.rmtree(target, ignore_errors=True)
            elif t == "backupctl":
                entry["stats"] = tool.stats()
    # bytes added per backup step (repository growth, du -sb)
    for t in TOOLS:
        prev = res["repo_bytes_init"].get(t)
        for step, _ in STEPS[:3]:
            e = res["steps"][step].get(t)
            if e is None or prev is None:
                break
            e["bytes_added"] = e["repo_bytes"] - prev
            prev = e["repo_bytes"]
    return res


# --------------------------------------------------------------------------
# output


def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


def _cpu(res: dict, step: str, tool: str):
    e = res["steps"][step].get(tool)
    return None if not e else e["user_s"] + e["sys_s"]


def render(res: dict) -> str:
    rows = []
    hdr = ["step", "backupctl s", "restic s", "backupctl MB/s", "restic MB/s", "ratio",
           "repo MB bc", "repo MB restic", "repo ratio", "added MB bc", "added MB restic",
           "RSS MiB bc", "RSS MiB restic"]
    for step, label in STEPS:
        b = res["steps"][step].get("backupctl") or {}
        r = res["steps"][step].get("restic") or {}
        bt, rt = b.get("wall_s"), r.get("wall_s")
        ok_b, ok_r = b.get("rc") == 0, r.get("rc") == 0
        bts = b.get("throughput_Bps") if ok_b else None
        rts = r.get("throughput_Bps") if ok_r else None
        ratio = rt / bt if ok_b and ok_r and bt else None
        brepo, rrepo = b.get("repo_bytes"), r.get("repo_bytes")
        rows.append([
            label,
            _f(bt, ".2f") + ("" if ok_b or bt is None else " FAIL"),
            _f(rt, ".2f") + ("" if ok_r or rt is None else " FAIL"),
            _f(bts and bts / MB, ".0f"), _f(rts and rts / MB, ".0f"),
            _f(ratio, ".2f"),
            _f(brepo and brepo / MB, ".1f"), _f(rrepo and rrepo / MB, ".1f"),
            _f(brepo / rrepo if brepo and rrepo else None, ".3f"),
            _f(b.get("bytes_added") / MB if b.get("bytes_added") is not None else None, ".3f"),
            _f(r.get("bytes_added") / MB if r.get("bytes_added") is not None else None, ".3f"),
            _f(b.get("maxrss_bytes") and b["maxrss_bytes"] / 2**20, ".0f"),
            _f(r.get("maxrss_bytes") and r["maxrss_bytes"] / 2**20, ".0f"),
        ])
    widths = [max(len(hdr[i]), *(len(row[i]) for row in rows)) for i in range(len(hdr))]
    line = lambda cells: " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [f"== {res['dataset']}: {res['logical_bytes'] / MB:.0f} MB logical in {res['files']} files "
           f"({', '.join(f'{k}={v}' for k, v in res['meta'].items())})",
           line(hdr), "-+-".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    for t in TOOLS:
        v = res["verify"].get(t)
        out.append(f"restore verification {t}: " + ("not run" if v is None else
                   "OK (every file identical, sha256)" if v["ok"] else f"FAILED ({v['n_problems']} problems)"))
    out.append("CPU s (user+sys) per step, backupctl/restic: " + ", ".join(
        f"{label.split(' ', 1)[1]} {_f(_cpu(res, s, 'backupctl'), '.1f')}/{_f(_cpu(res, s, 'restic'), '.1f')}"
        for s, label in STEPS))
    noisy = []
    for s, label in STEPS:
        for t in TOOLS:
            e = res["steps"][s].get(t)
            if e and e["wall_s"] > 0 and e.get("other_cpu_s", 0) / e["wall_s"] > 0.25:
                noisy.append(f"{label}/{t}: {e['other_cpu_s']:.1f} CPU-s in {e['wall_s']:.1f} s")
    if noisy:
        out.append("WARNING: other load on the machine during: " + "; ".join(noisy))
    for fail in res["failures"]:
        out.append(f"FAILURE: {fail}")
    return "\n".join(out)


LEGEND = """\
ratio = restic s / backupctl s (>1: backupctl faster; target per issue 2: >= 1.5).
repo ratio = backupctl repo / restic repo (du -sb; target <= 1). added = repo growth in that step (du -sb).
MB = 10^6 bytes; MB/s = logical bytes of the whole source tree / wall time (steps 2-3 too).
RSS = peak resident set size of that one tool process (ru_maxrss via wait4).
WARNING lines name steps during which other processes used > 0.25 CPU per second of wall time.
Warm page cache: the source (backups) or the repository (restore) was read once before each timed step, for both tools.
Restores: one untimed warm-up restore, then each tool twice in A B B A order; the mean is shown. Both end durable:
  backupctl syncs its target before it reports success; restic does not, so its step runs `sync -f TARGET` after it."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1600, help="approximate size of each data set (default 1600)")
    ap.add_argument("--datasets", default="database,mixed", help="comma list of: database, mixed")
    ap.add_argument("--workdir", type=Path, help="directory to work in (default: a new temp dir under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (data, repositories, logs)")
    ap.add_argument("--json-out", type=Path, help="write all results as JSON to this file")
    ap.add_argument("--password", default="backupctl-vs-restic-benchmark",
                    help="password for both repositories (BACKUPCTL_PASSWORD = RESTIC_PASSWORD)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="before each timed step, wait up to this many seconds for the machine "
                         "to be idle (default 60; 0 disables)")
    args = ap.parse_args(argv)

    measure.WAIT_IDLE_S = args.wait_idle
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in datasets:
        if d not in ("database", "mixed"):
            ap.error(f"unknown data set {d!r}")
    if "database" in datasets and os.geteuid() != 0:
        ap.error("the database data set needs root (runs PostgreSQL as the postgres user)")

    env = dict(os.environ)
    for k in list(env):  # real defaults: no KDF shortcuts, no stray repository settings
        if k.startswith(("BACKUPCTL_", "RESTIC_")):
            env.pop(k)
    env["BACKUPCTL_PASSWORD"] = args.password
    env["RESTIC_PASSWORD"] = args.password

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="repo_vs_restic-", dir=args.workdir))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="repo_vs_restic-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # the postgres user must reach its data dir
    log(f"work directory {workdir}")

    bc_version = run([BACKUPCTL, "--version"], env=env).stdout.strip()
    restic_version = run([RESTIC, "version"], env=env).stdout.strip()
    header = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "backupctl": bc_version, "restic": restic_version, "size_mb": args.size_mb,
        "workdir": str(workdir), "loadavg_at_start": os.getloadavg(),
        "settings": "defaults for both; restic repository version 2 (compression auto); "
                    "BACKUPCTL_KDF_N not set",
    }
    results = {"header": header, "datasets": []}
    rc = 0
    try:
        for d in datasets:
            base = workdir / d
            base.mkdir()
            os.chmod(base, 0o755)
            if d == "database":
                src, meta = make_database(base, args.size_mb)
            else:
                src, meta = make_mixed(base, args.size_mb, args.seed)
            res = bench_dataset(d, src, meta, base, env, args.seed)
            results["datasets"].append(res)
            if res["failures"]:
                rc = 1
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
    finally:
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"backupctl vs restic -- {header['date']} on {header['host']} ({header['cpus']} CPUs)")
    print(f"{bc_version}; {restic_version}")
    print(f"settings: {header['settings']}")
    print(LEGEND)
    for res in results["datasets"]:
        print()
        print(render(res))
    print()
    print("RESULT: " + ("all steps ran, all restores verified" if rc == 0 else "FAILURES (see above)"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
