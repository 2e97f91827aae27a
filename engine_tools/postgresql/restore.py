"""Restore of a physical backup, as stages: prepare data, configure recovery, start, replay and promote.

Each stage is callable on its own (the operator drives them one by one; the CLI runs them
in a row and records each one's duration, the RTO). Everything that can be checked without
touching the target (the backup is complete, the WAL it needs is archived, the recovery
target lies inside the restorable window) is checked when the stages are built.

The restored server fetches WAL with ``restore_command = 'backupctl wal-fetch --cluster
SOURCE %f %p'`` and has ``archive_mode = off``: a copy never archives into its source's archive.
A restore that registers the copy as a new cluster (``request.archive_context``) archives
instead into that cluster's own archive: once promoted, the new timeline's WAL and its
``.history`` file, so the new cluster can be backed up and restored to a point in time.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import shutil
import time
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any

from backupctl.catalog.manifest import K_CLUSTER, K_ORG, K_POSITIONS
from backupctl.durable import fsync_dir, sync_tree
from backupctl.errors import BackupctlError, IntegrityError, NotFoundError, UsageError
from backupctl.repository import Repository, Snapshot
from backupctl.repository.restore import restore_snapshot, restore_stream
from backupctl.repository.tree import FILE, Node, walk_tree
from engine_tools.base import RestoreRequest, RestoreStage
from engine_tools.postgresql import delta, server
from engine_tools.postgresql import lsn as L
from engine_tools.postgresql.layout import CONTROL_FILE, EMPTY_DIRS, ENGINE_KEY
from engine_tools.postgresql.pitr import Target, Window, check_target, window
from engine_tools.postgresql.wal import Listing, prefetch, refresh_listing, replays, timeline_history

LOG_NAME = "backupctl-restore.log"
REPLAY_TIMEOUT = float(os.environ.get("BACKUPCTL_PG_REPLAY_TIMEOUT", "3600"))
# WAL fetched ahead of replay at most (MiB); later segments are fetched one restore_command at a time.
PREFETCH_MB = int(os.environ.get("BACKUPCTL_RESTORE_PREFETCH_MB", "2048"))
SPOOL_LISTING = "archive-listing"
_NOT_REACHED = "recovery ended before configured recovery target was reached"
# pg_control is restored under another name and put in place last, once the data and the recovery
# settings are durable: PostgreSQL will not start on a directory without it, so a restore that fails
# or is killed halfway cannot be started by mistake (pgBackRest and pg_probackup do the same).
PENDING_CONTROL_FILE = "global/pg_control.backupctl-restore"


def restore_chain(repo: Repository, chain: list[Snapshot], target: str, *, overwrite: bool = False,
                  progress=None, **restore_args):
    """The newest data snapshot of a chain (full first) in one pass: each relation file the chain
    changed is written from its last whole copy, then each incremental's pages on top, oldest first."""
    older = [{n.path: n for n in walk_tree(repo, snap.tree)} for snap in chain[:-1]]

    def layers(node: Node) -> list[Node]:
        below: list[Node] = []
        for tree in reversed(older):
            base = tree.get(node.path)
            if base is None:
                raise IntegrityError(f"{node.path}: the incremental backup changes a file its parent chain does "
                                     "not have", "the backup chain is damaged; restore from another backup")
            below.insert(0, base)
            if base.encoding is None:
                return below
        raise IntegrityError(f"{node.path}: no full copy in the backup chain",
                             "the backup chain is damaged; restore from another backup")

    return restore_snapshot(repo, chain[-1], target, overwrite=overwrite, progress=progress, layers=layers,
                            patches=delta.patches, **restore_args)


@dataclass
class RestorePlan:
    repo: Repository
    request: RestoreRequest
    label: Snapshot
    data: Snapshot
    positions: dict[str, Any]
    target: Target
    window: Window | None
    source_cluster: str
    source_org: str
    listing: Listing | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def target_dir(self) -> str:
        return os.path.abspath(self.request.target_dir)

    @property
    def bindir(self) -> str:
        major = int(self.positions.get("server_version_num", 0)) // 10000 or None
        return server.find_bindir(major)

    # -- stage 1 -----------------------------------------------------------------------------
    def prepare_data(self) -> dict[str, Any]:
        """Restore the data files and the backup_label into the target directory."""
        target = self.target_dir
        force = self.request.force
        if os.path.isdir(target) and os.listdir(target):
            if not force:
                raise UsageError(f"the target directory {target} is not empty",
                                 "choose a new or empty directory, or pass --force to replace its contents")
            if os.path.exists(os.path.join(target, "postmaster.pid")) and server.is_running(self.bindir, target):
                raise UsageError(f"a PostgreSQL server is running on {target}", "stop it before restoring over it")
            # pg_control goes first: a restore stopped while deleting the rest leaves nothing startable
            if os.path.lexists(os.path.join(target, CONTROL_FILE)):
                os.unlink(os.path.join(target, CONTROL_FILE))
                fsync_dir(os.path.join(target, os.path.dirname(CONTROL_FILE)))
            for name in os.listdir(target):
                p = os.path.join(target, name)
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        summary = self._restore_chain(target, force)
        if not os.path.isfile(os.path.join(target, PENDING_CONTROL_FILE)):
            raise IntegrityError(f"the backup has no {CONTROL_FILE}",
                                 "the backup is damaged; restore from another backup")
        with open(os.path.join(target, "backup_label"), "wb") as f:
            restore_stream(self.repo, self.label, f, name="backup_label")
        space_map = (self.label.metadata.get(ENGINE_KEY) or {}).get("tablespace_map") or ""
        if space_map:
            with open(os.path.join(target, "tablespace_map"), "w") as f:
                f.write(space_map)
        for d in EMPTY_DIRS:
            os.makedirs(os.path.join(target, d), exist_ok=True)
        for dirpath, dirs, files in os.walk(target):      # temporary files and relcache init files are never needed
            for d in [d for d in dirs if d.startswith("pgsql_tmp")]:
                shutil.rmtree(os.path.join(dirpath, d), ignore_errors=True)
                dirs.remove(d)
            for name in files:
                if name == "pg_internal.init" or name.startswith("pgsql_tmp"):
                    os.unlink(os.path.join(dirpath, name))
        self._own(target)
        return {"bytes": summary.bytes, "files": summary.files, "target_dir": target}

    def _restore_chain(self, target: str, force: bool):
        info = self.label.metadata.get(ENGINE_KEY) or {}
        chain = [self.repo.find_snapshot(i) for i in (info.get("chain") or [self.data.id])]
        return restore_chain(self.repo, chain, target, overwrite=force, progress=self.request.progress,
                             renamed={CONTROL_FILE: PENDING_CONTROL_FILE}, sync=False)

    def _own(self, target: str) -> None:
        """The target as PostgreSQL wants it: mode 0700, everything owned by the data files' owner."""
        os.chmod(target, 0o700)
        if os.geteuid() != 0:
            return
        st = os.stat(os.path.join(target, PENDING_CONTROL_FILE))
        for dirpath, dirs, files in os.walk(target):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(dirpath, name), st.st_uid, st.st_gid)
        os.chown(target, st.st_uid, st.st_gid)

    # -- stage 2 -----------------------------------------------------------------------------
    def configure_recovery(self, with_target: bool = True) -> dict[str, Any]:
        """Write the recovery settings into postgresql.auto.conf and create recovery.signal; then,
        with everything durable, put pg_control in place: from here on the directory can be started."""
        ctx = self.request.log_context
        if ctx is None:
            raise BackupctlError("no WAL archive was given to this restore", "restore through 'backupctl restore create'")
        fetch = f"{ctx.command} wal-fetch --org {ctx.org} --cluster {self.source_cluster}"
        if ctx.repository:                   # the backup's: its cluster may be unregistered by now
            fetch += f" --repository {shlex.quote(ctx.repository)}"
        fetch += " %f %p"
        if self.spool and os.path.isdir(self.spool):
            # Files fetched ahead are copied by the shell; a file the archive did not list when the
            # restore began (the end of the window, a timeline probe) is "missing" at once; a listed
            # one past the prefetch cap goes to wal-fetch.
            sp = shlex.quote(self.spool)
            # A failed copy is a failure (126: recovery stops), never "missing" (1: it would promote);
            # so is a listed file wal-fetch no longer finds (expired or deleted since the restore began).
            fetch = (f"if [ -f {sp}/%f ]; then cp {sp}/%f %p || exit 126; elif grep -qxF %f {sp}/{SPOOL_LISTING}; "
                     f"then {fetch} || exit 126; else exit 1; fi")
        lines = [f"restore_command = '{_quote(fetch)}'", "recovery_target_action = 'promote'"]
        own = self.request.archive_context
        if own is None:
            lines.append("archive_mode = 'off'")
        else:
            # a registered new cluster: once promoted, its new timeline (WAL and .history) goes to its own archive
            push = f"{own.command} wal-push --org {own.org} --cluster {own.cluster} %p"
            lines += ["archive_mode = 'on'", f"archive_command = '{_quote(push)}'"]
        t = self.target
        if with_target:
            if t.time is not None:
                lines.append(f"recovery_target_time = '{t.time.astimezone(timezone.utc).isoformat()}'")
            elif t.lsn is not None:
                lines.append(f"recovery_target_lsn = '{t.lsn}'")
            elif t.xid is not None:
                lines.append(f"recovery_target_xid = '{t.xid}'")
            elif t.name is not None:
                lines.append(f"recovery_target_name = '{_quote(t.name)}'")
            if t.kind() is not None and self.window is not None:
                # the timeline the target was checked on: by default recovery follows the newest
                # timeline, and a time on this one after a later fork would give that branch's state
                lines.append(f"recovery_target_timeline = '{self.window.timeline}'")
            elif t.kind() is None and self.listing is not None:
                lines.append(f"recovery_target_timeline = '{self._latest_timeline()}'")
        if self.request.port:
            lines.append(f"port = {int(self.request.port)}")
        auto = os.path.join(self.target_dir, "postgresql.auto.conf")
        try:
            with open(auto) as f:
                earlier = _without_recovery_settings(f.read())
        except FileNotFoundError:
            earlier = ""
        with open(auto, "w") as f:
            f.write(earlier + "\n# written by backupctl restore: recovery settings\n" + "\n".join(lines) + "\n")
        signal = os.path.join(self.target_dir, "recovery.signal")
        open(signal, "w").close()
        self._own_files(auto, signal)
        self._put_control_file_in_place()
        return {"settings": lines}

    def _latest_timeline(self) -> int:
        """The newest timeline replay can follow from the base: what 'latest' picks, but among the
        timelines that branched from the base's line after its start only. PostgreSQL's 'latest' takes
        the highest in the archive and refuses one that left the line before ("requested timeline is
        not a child of this server's history"): after an in-place restore to an earlier point, the
        bases of the abandoned line would not restore at all."""
        tl, start = int(self.positions["timeline"]), L.parse_lsn(self.positions["start_lsn"])
        history = timeline_history(self.repo, self.listing)
        return max([tl, *(t for t in history if replays(tl, start, t, history))])

    def _put_control_file_in_place(self) -> None:
        pending = os.path.join(self.target_dir, PENDING_CONTROL_FILE)
        if not os.path.exists(pending):
            return                                   # in place already (the stage run again)
        sync_tree(self.target_dir)                   # the data and the settings first...
        os.rename(pending, os.path.join(self.target_dir, CONTROL_FILE))
        fsync_dir(os.path.dirname(pending))          # ...then the rename

    # -- stage 2 (before the settings that point at it) -------------------------------------------------
    @property
    def spool(self) -> str:
        return self.target_dir.rstrip("/") + ".wal-spool"

    def fetch_wal(self) -> dict[str, Any]:
        """Fetch ahead, in one repository session, the WAL replay will ask for: the backup's timeline
        from its start segment to the end of the window (or the target LSN), up to a size cap, and
        every timeline history file. Replay then reads local files."""
        if self.window is None or self.listing is None:
            return {"files": 0, "bytes": 0}
        size = int(self.positions["segment_size"])
        tl = self.window.timeline
        first = L.segment_of(L.parse_lsn(self.positions["start_lsn"]), size)
        last_lsn = L.parse_lsn(self.target.lsn) if self.target.lsn else self.window.end_lsn - 1
        last = L.segment_of(max(last_lsn, 0), size)
        cap = PREFETCH_MB * 1024 * 1024
        names = [L.segment_name(tl, seg, size) for seg in range(first, min(last, first + cap // size - 1) + 1)]
        names += [n for n in self.listing.files if n.endswith(".history")]
        if os.path.isdir(self.spool):
            shutil.rmtree(self.spool)
        os.makedirs(self.spool, mode=0o755)
        with open(os.path.join(self.spool, SPOOL_LISTING), "w") as f:
            f.write("".join(f"{n}\n" for n in sorted(self.listing.files)))
        os.chmod(os.path.join(self.spool, SPOOL_LISTING), 0o644)
        files, nbytes = prefetch(self.repo, self.listing, names, self.spool)
        return {"files": files, "bytes": nbytes, "spool": self.spool}

    def remove_spool(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)

    def _own_files(self, *paths: str) -> None:
        if os.geteuid() == 0:
            st = os.stat(self.target_dir)
            for p in paths:
                os.chown(p, st.st_uid, st.st_gid)

    # -- stage 3 -----------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start the server on the restored data directory; recovery begins."""
        log = os.path.join(self.target_dir, LOG_NAME)
        server.run(self.target_dir, [os.path.join(self.bindir, "pg_ctl"), "start", "-W", "-D", self.target_dir,
                                     "-l", log], timeout=60)
        return {"log": log}

    # -- stage 4 -----------------------------------------------------------------------------
    def replay(self) -> dict[str, Any]:
        """Wait until recovery reached its target and the server was promoted (a new timeline)."""
        try:
            return self._wait_promoted()
        except _TargetNotReached:
            if self.target.kind() != "time":
                raise BackupctlError(f"recovery ended before reaching the target {self.target.kind()} "
                                     f"{getattr(self.target, self.target.kind())}",
                                     f"the archive ends before it; see {self._log()} and 'backupctl wal status'") \
                    from None
            # No commit after the target time was archived: every archived transaction is before it,
            # so the state at that time is the end of the archive, if no commit before it can be in
            # WAL not archived yet (the window's certain time).
            certain = self.window.certain_time if self.window else None
            if certain is not None and self.target.time > certain:
                raise BackupctlError(f"recovery ended before reaching the target time {self.target.time.isoformat()}: "
                                     f"no later commit is archived, and commits made up to it after "
                                     f"{certain.isoformat()} may be in WAL not archived yet",
                                     f"restore to {certain.isoformat()} or earlier, or once the archive has caught "
                                     "up ('backupctl wal status')") from None
            self._remove_target()
            self.start()
            out = self._wait_promoted()
            out["note"] = "no transaction after the target time is archived: recovered to the end of the archive"
            return out

    def _log(self) -> str:
        return os.path.join(self.target_dir, LOG_NAME)

    def _log_lines(self) -> list[str]:
        try:
            with open(self._log(), errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def _wait_promoted(self) -> dict[str, Any]:
        deadline = time.monotonic() + REPLAY_TIMEOUT
        pid_file = os.path.join(self.target_dir, "postmaster.pid")
        signal = os.path.join(self.target_dir, "recovery.signal")
        seen_running, grace = False, time.monotonic() + 15
        while True:
            # pg_control, copied from a running server, says "in production" from the start: the
            # promotion is over once recovery.signal is gone (the startup process removes it last)
            if not os.path.exists(signal):
                state = server.controldata(self.bindir, self.target_dir)
                if state.get("Database cluster state") == "in production":
                    return self._reached(state)
            if os.path.exists(pid_file):
                seen_running = True
            if (seen_running or time.monotonic() > grace) and not os.path.exists(pid_file) \
                    and not server.is_running(self.bindir, self.target_dir):
                lines = self._log_lines()
                if any(_NOT_REACHED in line for line in lines[-20:]):
                    raise _TargetNotReached()
                fatal = [line for line in lines if "FATAL" in line or "PANIC" in line]
                missing = [line for line in lines if "could not" in line and "WAL" in line]
                raise BackupctlError(f"the restored server stopped during recovery: "
                                     f"{(fatal or missing or lines or ['no log'])[-1].strip()}",
                                     f"see {self._log()}")
            if time.monotonic() > deadline:
                raise BackupctlError(f"recovery did not finish within {REPLAY_TIMEOUT:.0f} s",
                                     f"see {self._log()}; raise BACKUPCTL_PG_REPLAY_TIMEOUT for large restores")
            time.sleep(0.2)

    def _reached(self, state: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for line in self._log_lines():
            for key, marker in (("stopped", "recovery stopping"), ("redo_done", "redo done at"),
                                ("consistent", "consistent recovery state reached"),
                                ("timeline", "selected new timeline ID")):
                if marker in line:
                    out[key] = line.split("LOG:", 1)[-1].strip()
        return out

    def _remove_target(self) -> None:
        auto = os.path.join(self.target_dir, "postgresql.auto.conf")
        with open(auto) as f:
            kept = [line for line in f if not line.startswith("recovery_target_time")]
        with open(auto, "w") as f:
            f.writelines(kept)
        signal = os.path.join(self.target_dir, "recovery.signal")
        if not os.path.exists(signal):
            open(signal, "w").close()
            self._own_files(signal)


class _TargetNotReached(Exception):
    pass


# Settings only recovery reads: those of an earlier restore are commented out before this one's are written.
RECOVERY_SETTINGS = frozenset({"restore_command", "recovery_target", "recovery_target_lsn", "recovery_target_name",
                               "recovery_target_time", "recovery_target_xid", "recovery_target_inclusive",
                               "recovery_target_timeline", "recovery_target_action", "recovery_end_command",
                               "archive_cleanup_command"})


def _without_recovery_settings(conf: str) -> str:
    """postgresql.auto.conf with the recovery settings of an earlier restore commented out, as pgBackRest
    does: a server restored once and then backed up carries them, and a target this restore does not
    set again (a restore to the latest state sets none) would still stop recovery there."""
    out = []
    for line in conf.splitlines(True):
        name = line.split("=", 1)[0].strip().lower()
        out.append(f"# removed by backupctl restore: {line}" if "=" in line and name in RECOVERY_SETTINGS else line)
    return "".join(out)


def _quote(value: str) -> str:
    return value.replace("'", "''")


def _find(repo: Repository, ids: list[str]) -> tuple[Snapshot, Snapshot]:
    snaps = []
    for sid in ids:
        try:
            snaps.append(repo.find_snapshot(sid))
        except NotFoundError:
            raise NotFoundError(f"snapshot {sid[:8]} of the backup is not in the repository",
                                "the backup was deleted from the repository; choose another one") from None
    label = next((s for s in snaps if (s.metadata.get(ENGINE_KEY) or {}).get("part") == "label"), None)
    if label is None:
        raise BackupctlError("the backup has no backup_label snapshot: it never completed", "choose another backup")
    data_id = label.metadata[ENGINE_KEY]["data_snapshot"]
    data = next((s for s in snaps if s.id == data_id), None) or repo.find_snapshot(data_id)
    return label, data


# Where a server looks without unix_socket_directories: Debian's and Red Hat's builds, else PostgreSQL's own.
DEFAULT_SOCKET_DIR = "/var/run/postgresql" if os.path.isdir("/var/run/postgresql") else "/tmp"
_SETTING = re.compile(r"^[ \t]*(\w+)[ \t]*=?[ \t]*('(?:[^']|'')*'|[^\s#]*)", re.MULTILINE)
_INCLUDES = {"include", "include_dir", "include_if_exists"}


@dataclass
class Listen:
    """Where a server started on the restored files would listen."""

    port: int
    port_from: str                 # for the message: --port, the backup's configuration, PGPORT, the default
    socket_dirs: list[str]
    tcp: bool                      # listen_addresses is not empty


def listen_settings(repo: Repository, data: Snapshot, port: int | None) -> Listen | None:
    """Where a server started on the restored files would listen: ``port`` if given (it goes into
    postgresql.auto.conf), else the backup's postgresql.conf and postgresql.auto.conf as the server
    reads them (the last setting wins), else PGPORT, else 5432. None when that cannot be known
    here: the port set in an included file, or a value this does not parse."""
    order = ("postgresql.conf", "postgresql.auto.conf")      # Debian keeps postgresql.conf in /etc
    with repo.lock("shared", "restore"):
        repo.reload_index()
        files = {n.path: n for n in walk_tree(repo, data.tree) if n.path in order and n.type == FILE}
        texts = [b"".join(repo.read_blobs([bytes.fromhex(c) for c in files[name].chunks]))
                 for name in order if name in files]
    found: dict[str, str] = {}
    for text in texts:
        for key, value in _SETTING.findall(text.decode(errors="replace")):
            found[key.lower()] = value[1:-1].replace("''", "'") if value.startswith("'") else value
    if port:
        port_from = "--port"
    elif _INCLUDES & found.keys():
        return None
    else:
        setting, port_from = next((v, w) for v, w in ((found.get("port"), "the backup's postgresql.conf"),
                                                      (os.environ.get("PGPORT"), "PGPORT"), ("5432", "the default"))
                                  if v)
        try:
            port = int(setting, 0)           # as PostgreSQL reads integers (strtol, base 0)
        except ValueError:
            return None
    dirs = found.get("unix_socket_directories", DEFAULT_SOCKET_DIR)
    return Listen(port, port_from, [d.strip() for d in dirs.split(",") if d.strip()],
                  tcp=bool(found.get("listen_addresses", "localhost").strip()))


def check_port_free(listen: Listen) -> None:
    """Refuse, before any file is written, a port on which a server of this host answers where the
    restored server would listen: it would fail to start only after the whole data stage. A socket
    file nobody answers on is a crashed server's, which PostgreSQL replaces when it starts."""
    taken = []
    for d in listen.socket_dirs:
        path = os.path.join(d, f".s.PGSQL.{listen.port}")
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                taken.append(path)
            except OSError:
                pass
    if listen.tcp:
        try:
            with socket.create_connection(("localhost", listen.port), timeout=1):
                taken.append(f"localhost:{listen.port}")
        except OSError:
            pass
    if taken:
        raise UsageError(f"port {listen.port} (from {listen.port_from}), on which the restored server would start, "
                         f"is in use on this host ({', '.join(taken)})",
                         "pass --port with a free port, or stop the server that uses it")


def plan_restore(repo: Repository, request: RestoreRequest) -> RestorePlan:
    """Check the backup, the archive and the target; nothing on disk changes."""
    if len(request.snapshot_ids) < 2:
        raise BackupctlError("a physical PostgreSQL backup is a data and a label snapshot; got fewer",
                             "choose a completed backup")
    label, data = _find(repo, request.snapshot_ids)
    positions = label.metadata.get(K_POSITIONS) or {}
    source = label.metadata.get(K_CLUSTER) or ""
    org = label.metadata.get(K_ORG) or "default"
    target = Target(time=request.restore_time, lsn=request.target_position, xid=request.target_transaction,
                    name=request.target_name)
    chosen = [k for k in ("time", "lsn", "xid", "name") if getattr(target, k) is not None]
    if len(chosen) > 1:
        raise UsageError(f"give one recovery target, not {' and '.join(chosen)}",
                         "use one of --restore-time, --target-lsn, --target-xid, --target-name")
    w = listing = None
    if request.log_context is not None:
        listing = refresh_listing(repo, request.log_context.state_dir, source, org, positions.get("system_identifier"))
        w = window(positions, listing, cluster=source)
        check_target(target, w, listing, cluster=source)
    elif target.kind():
        raise UsageError("a point-in-time restore needs the WAL archive of the source cluster",
                         "restore through 'backupctl restore create'")
    listen = listen_settings(repo, data, request.port) if request.start else None
    if listen is not None:
        check_port_free(listen)
    return RestorePlan(repo, request, label, data, positions, target, w, source, org, listing)


def stages(repo: Repository, request: RestoreRequest) -> list[RestoreStage]:
    plan = plan_restore(repo, request)
    out = [RestoreStage("prepare_data", plan.prepare_data), RestoreStage("fetch_wal", plan.fetch_wal),
           RestoreStage("configure_recovery", plan.configure_recovery)]
    if request.start:
        def replay() -> dict[str, Any]:
            try:
                return plan.replay()
            finally:
                plan.remove_spool()   # without --start the spool stays for the server the user starts

        out += [RestoreStage("start", plan.start), RestoreStage("replay", replay)]
    return out
