"""``check``: structure and index consistency, and with ``read_data`` every byte.

Structure: every indexed pack exists with the indexed size and a header that agrees with
the index; every snapshot decrypts and every blob its tree names is indexed. Read-data:
each pack's bytes hash to its name and every blob decrypts, decompresses and matches its
id. Damage is reported with the snapshots it affects.
"""

from __future__ import annotations

import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from backupctl.errors import BackupctlError, LockedError
from backupctl.progress import Progress
from backupctl.repository.index import load_index
from backupctl.repository.lock import list_locks
from backupctl.repository.pack import pack_name, read_header, verify_pack_id
from backupctl.repository.plan import doomed_packs
from backupctl.repository.snapshot import list_snapshot_ids, load_snapshot
from backupctl.repository.tree import parse_lines


@dataclass
class CheckResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    damaged_snapshots: list[str] = field(default_factory=list)
    snapshots: int = 0
    packs: int = 0
    packs_read: int = 0
    blobs: int = 0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"ok": self.ok, "errors": self.errors, "warnings": self.warnings,
                "damaged_snapshots": self.damaged_snapshots, "snapshots": self.snapshots, "packs": self.packs,
                "packs_read": self.packs_read, "blobs": self.blobs, "bytes_read": self.bytes_read}

    def summary_line(self) -> str:
        state = "no errors were found" if self.ok else f"{len(self.errors)} error(s) found"
        read = f", read {self.packs_read} packs ({self.bytes_read} bytes)" if self.packs_read else ""
        return f"check: {self.snapshots} snapshots, {self.packs} packs, {self.blobs} blobs{read}: {state}"


def check_repository(repo, *, read_data: bool = False, subset: float | None = None,
                     progress: Progress | None = None, threads: int = 4) -> CheckResult:
    progress = progress or Progress()
    result = CheckResult()
    with repo.lock("shared", "check") as lock:
        snapshot_ids = list_snapshot_ids(repo.store)  # before the index: it then covers them all
        stored = dict(repo.store.list("data/"))
        try:
            index = load_index(repo.store, repo.key, avoid=doomed_packs(repo))
        except BackupctlError as exc:
            result.errors.append(str(exc))
            return result
        repo._index = index
        result.packs, result.blobs = len(index.packs), len(index.blobs)
        bad_copies: set[tuple[bytes, bytes]] = set()        # (blob id, pack id)

        def mark_pack_bad(pack_id: bytes, msg: str) -> None:
            result.errors.append(msg)
            bad_copies.update((e.id, pack_id) for e in index.pack_entries.get(pack_id, []))

        # Indexed packs: present, the right size, a header that agrees with the index.
        def check_header(pack_id: bytes) -> None:
            name = pack_name(pack_id)
            size = index.packs[pack_id]
            if name not in stored:
                mark_pack_bad(pack_id, f"pack {pack_id.hex()[:12]} is missing")
                return
            if stored[name] != size:
                mark_pack_bad(pack_id, f"pack {pack_id.hex()[:12]} has {stored[name]} bytes, the index says {size}")
                return
            entries = index.pack_entries[pack_id]
            try:
                header = read_header(repo.store, repo.key, pack_id, size, len(entries))
            except BackupctlError as exc:
                mark_pack_bad(pack_id, str(exc))
                return
            if {(e.id, e.offset, e.length) for e in header} != {(e.id, e.offset, e.length) for e in entries}:
                mark_pack_bad(pack_id, f"pack {pack_id.hex()[:12]}: header and index disagree")

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(check_header, list(index.packs)))
        if read_data:
            _read_data(repo, index, stored, subset, result, bad_copies, mark_pack_bad, progress, threads)
        bad_blobs = _without_good_copy(index, bad_copies)
        covered = {b for b, _ in bad_copies} - bad_blobs
        if covered:
            result.warnings.append(f"{len(covered)} blob(s) with a damaged copy have a good one in another pack: "
                                   "reads use that one, and gc keeps it")

        # Snapshots: readable, and every blob they name is indexed and undamaged.
        unindexed: set[bytes] = set()
        for sid in snapshot_ids:
            result.snapshots += 1
            try:
                snap = load_snapshot(repo.store, repo.key, sid)
                missing = _snapshot_problems(repo, index, snap, bad_blobs, unindexed)
            except BackupctlError as exc:
                result.errors.append(f"snapshot {sid[:8]}: {exc}")
                result.damaged_snapshots.append(sid)
                continue
            if missing:
                result.errors.append(f"snapshot {sid[:8]}: {missing} blob(s) missing or damaged")
                result.damaged_snapshots.append(sid)
        orphans = [n for n in stored if bytes.fromhex(n.rsplit("/", 1)[1]) not in index.packs]
        if orphans and unindexed:
            result.warnings.append(f"{len(orphans)} pack(s) are in no index, and the snapshots name {len(unindexed)} "
                                   "blob(s) no index lists: an index file was lost or damaged; 'backupctl repo repair "
                                   "index' lists those packs again (gc keeps the packs that hold such blobs)")
        elif orphans:
            result.warnings.append(f"{len(orphans)} pack(s) are in no index (left by an interrupted backup, or one "
                                   "still running); 'backupctl repo gc' reclaims them")
        for lk in list_locks(repo.store, repo.key):
            if lk.is_stale():
                result.warnings.append(f"stale {lk.describe()}; it is ignored")
        try:
            lock.check_still_held()
        except LockedError:
            result.errors.append("this check's lock may have looked stale to other processes while it ran (its "
                                 "refreshes failed, or the process was paused): a gc may have deleted packs it "
                                 "then found missing; run the check again")
    return result


def _snapshot_problems(repo, index, snap, bad_blobs: set[bytes], unindexed: set[bytes]) -> int:
    """How many of the snapshot's blobs are missing or damaged; adds those no index lists to ``unindexed``."""
    problems = 0

    def tree_blobs():
        nonlocal problems
        for t in snap.tree:
            bid = bytes.fromhex(t)
            if bid not in index or bid in bad_blobs:
                problems += 1
                if bid not in index:
                    unindexed.add(bid)
                raise _TreeBroken
            yield repo.read_blob(bid)

    try:
        for node in parse_lines(tree_blobs()):
            for c in node.chunks:
                bid = bytes.fromhex(c)
                if bid not in index or bid in bad_blobs:
                    problems += 1
                    if bid not in index:
                        unindexed.add(bid)
    except _TreeBroken:
        pass
    return problems


class _TreeBroken(Exception):
    pass


def _without_good_copy(index, bad_copies: set[tuple[bytes, bytes]]) -> set[bytes]:
    """The blobs every copy of which is damaged or missing (a read falls back to a good copy)."""
    blobs = {b for b, _ in bad_copies}
    return {b for b in blobs if all((b, c.pack) in bad_copies for c in index.copies(b))}


def _read_data(repo, index, stored, subset, result, bad_copies, mark_pack_bad, progress, threads) -> None:
    packs = [p for p in index.packs if pack_name(p) in stored]
    if subset is not None and subset < 1:
        packs = random.sample(packs, max(1, math.ceil(len(packs) * subset))) if packs else []
    progress.add_total(sum(index.packs[p] for p in packs))
    progress.total_complete()

    def read_pack(pack_id: bytes) -> None:
        data = repo.store.get(pack_name(pack_id))
        result.bytes_read += len(data)
        result.packs_read += 1
        progress.advance(len(data))
        if not verify_pack_id(pack_id, data):
            mark_pack_bad(pack_id, f"pack {pack_id.hex()[:12]}: content does not match its name (corrupted)")
            return
        for e in index.pack_entries[pack_id]:
            try:
                repo.open_blob(e, data[e.offset:e.offset + e.length])
            except BackupctlError as exc:
                result.errors.append(str(exc))
                bad_copies.add((e.id, pack_id))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(read_pack, packs))
