"""Garbage collection that is safe while backups run.

gc never blocks backups. It works in two phases, like Kopia's maintenance:

1. Plan. Find packs whose blobs no snapshot uses (or that no index lists: leftovers of a
   killed backup), copy the still-used blobs out of mostly-unused packs into new packs
   (repack), and write a plan ``gc/<id>`` naming those packs, the blobs that will vanish
   with them, and the locks held at that moment.
2. Execute, once every lock named in the plan is gone. A backup that started after the
   plan was written read the plan and stored fresh copies instead of reusing doomed blobs
   (``pending_deletions``); a backup that was already running when the plan was written
   has finished by then, so its snapshot is visible. gc re-reads the index and every
   snapshot, and deletes a pack only if each of its blobs is unused or also lives in a pack
   that stays. Then it writes one consolidated index that supersedes the ones it read.

When no other process holds a lock, both phases run in one ``gc`` call; otherwise the
plan waits for the next call. Only one gc runs at a time (the ``gc`` lock).

Index compaction. Every backup writes an index file and every operation reads them all, so
between gcs the files would pile up: a server archiving a segment a minute leaves 1,440 a
day. Past ``MAX_INDEX_FILES`` a writer merges them (``compact_index``) under the ``gc`` lock,
so never beside a gc's execution, whose consolidated index must supersede every file naming
a pack it deletes. It merges all but the largest file (gc's consolidated index, as a rule),
so a merge decodes and writes what was added since the last gc (of the largest it reads only
the list of files it supersedes, though it downloads it whole); it keeps every pack, and it
follows the crash-safe order: the merged file, naming what it supersedes, then the old files.

A blob stored in several packs (store-everything backups, wal-push, store what exists
already) is kept in one copy, the one the index reads; the others are reclaimed with their
packs and never repacked. gc reads no data otherwise, so before it reclaims a copy it reads and
verifies the one it keeps: when that one is damaged it keeps a good one instead (and the
damaged copy goes with its pack), or every copy when none is good. A damaged copy never
costs the blob its good ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from backupctl.errors import BackupctlError, IntegrityError, LockedError, RepositoryError
from backupctl.repository.index import INDEX_PREFIX, Index, Packs, read_index_files, save_index
from backupctl.repository.lock import Lock, list_locks
from backupctl.repository.pack import BlobEntry, PackWriter, pack_buffer_size, pack_name, read_header
from backupctl.repository.plan import PLANS_PREFIX, Plan, load_plans, save_plan
from backupctl.repository.snapshot import list_snapshot_ids, load_snapshot
from backupctl.repository.tree import walk_tree


# Index files a writer may leave before it merges them: every operation reads them all (on S3,
# a request each).
def _unindexed_but_used(repo, index: Index, used: set[bytes], pack_ids: set[bytes], report: GcReport,
                        log) -> set[bytes]:
    """Those of ``pack_ids`` (packs no index lists) that gc must keep: they hold blobs the snapshots
    use that no index lists either, because an index file was lost or damaged ('repo repair index'
    lists them again); or, while such blobs are missing, their header cannot be read. A healthy
    repository has no such blobs, and then no header is read."""
    missing = used - index.blobs.keys()
    if not missing or not pack_ids:
        return set()

    def why_keep(pack_id: bytes) -> str | None:
        try:
            held = sum(e.id in missing for e in read_header(repo.store, repo.key, pack_id,
                                                               repo.store.size(pack_name(pack_id))))
        except FileNotFoundError:
            return None
        except BackupctlError as exc:
            return f"its header cannot be read ({exc.message}) and {len(missing)} used blob(s) are in no index"
        return f"it holds {held} blob(s) the snapshots use" if held else None

    kept = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for pack_id, why in zip(sorted(pack_ids), pool.map(why_keep, sorted(pack_ids))):
            if why:
                kept.add(pack_id)
                log(f"gc: pack {pack_id.hex()[:12]} is in no index, but {why}: kept; run 'backupctl repo repair "
                    "index' to list it again")
    report.unindexed_packs_kept += len(kept)
    return kept


MAX_INDEX_FILES = 32
COMPACTION = "index compaction"     # the purpose of a writer's gc lock
COMPACTION_WAIT = 60                # seconds gc waits for a merge (it takes seconds) to finish


@dataclass
class GcReport:
    packs_deleted: int = 0
    bytes_freed: int = 0
    packs_repacked: int = 0
    blobs_repacked: int = 0
    orphan_packs: int = 0
    plans_executed: int = 0
    plans_waiting: int = 0
    waiting_for: list[str] = field(default_factory=list)
    unused_blobs: int = 0
    index_files_merged: int = 0
    copies_verified: int = 0            # kept copies read before other copies were reclaimed
    damaged_copies: int = 0             # of those, the damaged ones (another copy kept instead)
    unindexed_packs_kept: int = 0       # in no index, but holding blobs snapshots use that no index lists
    dry_run: bool = False


class _UsedBlobs:
    """The set of blobs the snapshots reference, extended as new snapshots appear."""

    def __init__(self, repo) -> None:
        self.repo = repo
        self.seen: set[str] = set()
        self.blobs: set[bytes] = set()

    def refresh(self) -> set[bytes]:
        new = [sid for sid in list_snapshot_ids(self.repo.store) if sid not in self.seen]
        if new:
            # Listed before the index is read: a snapshot is written after its index, so the
            # index read now covers every snapshot just listed.
            self.repo.reload_index()
        for sid in new:
            try:
                snap = load_snapshot(self.repo.store, self.repo.key, sid)
            except FileNotFoundError:                  # forgotten since the listing: it needs nothing
                continue
            except IntegrityError as exc:
                raise IntegrityError(f"{exc.message}; gc cannot tell which data it needs, so it deletes nothing",
                                     "if no good copy of that file exists, remove the snapshot with 'backupctl "
                                     f"snapshot forget {sid[:8]}', then run gc again") from None
            self.blobs.update(bytes.fromhex(t) for t in snap.tree)
            for node in walk_tree(self.repo, snap.tree):
                self.blobs.update(bytes.fromhex(c) for c in node.chunks)
            self.seen.add(sid)
        return self.blobs


def _live_lock_ids(repo, own_id: str) -> set[str]:
    return {lk.id for lk in list_locks(repo.store, repo.key) if lk.id != own_id and not lk.is_stale()}


def gc(repo, *, dry_run: bool = False, repack_threshold: float = 0.3,
       log: Callable[[str], None] = lambda _m: None) -> GcReport:
    report = GcReport(dry_run=dry_run)
    with _gc_lock(repo) as lock:
        # Phase 2 first: plans whose waiting is over.
        plans = load_plans(repo)
        for plan in (p for p in plans if not p.complete and not dry_run):
            repo.store.delete(PLANS_PREFIX + plan.id)          # its gc died before it knew what to wait for
            log(f"gc: dropped plan {plan.id[:8]}, left incomplete by a gc that stopped")
        plans = [p for p in plans if p.complete]
        live = _live_lock_ids(repo, lock.info.id)
        ready = [p for p in plans if not set(p.wait_for) & live]
        waiting = [p for p in plans if p not in ready]
        in_plans = _packs_of(waiting)
        used = _UsedBlobs(repo)
        if ready and not dry_run:
            used_now = used.refresh()
            repo.reload_index()
            _execute(repo, lock, ready, used_now, report, log, keep=in_plans)
        if not dry_run and hasattr(repo.store, "remove_stale_temporaries"):
            repo.store.remove_stale_temporaries()
        report.plans_waiting = len(waiting)
        report.waiting_for = sorted({w for p in waiting for w in p.wait_for} & live)

        # Phase 1: a new plan from the current state.
        used_now = used.refresh()
        index = repo.reload_index()
        doomed, doomed_blobs, verified = _choose_packs(repo, lock, index, used_now, in_plans, repack_threshold,
                                                       report, dry_run, log)
        if dry_run:
            return report
        if not doomed:
            report.index_files_merged += _compact(repo, lock, log)
            return report
        plan = Plan(id=os.urandom(16).hex(), created=time.time(), packs=sorted(p.hex() for p in doomed),
                    blobs=sorted(b.hex() for b in doomed_blobs), wait_for=[], complete=False)
        # Locks taken before the plan was visible may reuse doomed blobs: wait for them. Until
        # they are written the plan is incomplete, and a gc that finds it so drops it.
        lock.check_still_held()
        save_plan(repo, plan)
        plan.wait_for, plan.complete = sorted(_live_lock_ids(repo, lock.info.id)), True
        # Only adds waits to a plan that is visible already, but it may land after another gc dropped
        # the plan as incomplete and planned its packs again.
        save_plan(repo, plan)
        lock.confirm_written(PLANS_PREFIX + plan.id)
        if plan.wait_for:
            report.plans_waiting += 1
            report.waiting_for = sorted(set(report.waiting_for) | set(plan.wait_for))
            log(f"gc: deletion of {len(doomed)} packs deferred until {len(plan.wait_for)} running operations finish")
            return report
        used_now = used.refresh()
        repo.reload_index()
        _execute(repo, lock, [plan], used_now, report, log, verified=verified)
    return report


def _first_good_copies(repo, candidates: dict[bytes, list[BlobEntry]], report: GcReport,
                       log) -> dict[bytes, BlobEntry | None]:
    """For each blob, the first of its candidate copies that reads back intact, or None. Copies are
    read a round at a time, each pack once a round (the span of the copies read from it), not a
    request per blob: the first choices, then the next for blobs whose choice was damaged."""
    chosen: dict[bytes, BlobEntry | None] = {b: None for b, copies in candidates.items() if not copies}
    tries = {blob_id: list(copies) for blob_id, copies in candidates.items() if copies}

    def read_pack(item: tuple[bytes, list[BlobEntry]]) -> list[tuple[BlobEntry, str | None]]:
        pack_id, entries = item
        start = min(e.offset for e in entries)
        try:
            data = repo.store.get_range(pack_name(pack_id), start, max(e.offset + e.length for e in entries) - start)
        except FileNotFoundError:
            return [(e, f"pack {pack_id.hex()[:12]} holding blob {e.id.hex()[:16]} is missing") for e in entries]
        results = []
        for e in entries:
            try:
                repo.open_blob(e, data[e.offset - start:e.offset - start + e.length])
                results.append((e, None))
            except IntegrityError as exc:
                results.append((e, exc.message))
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        while tries:
            by_pack: dict[bytes, list[BlobEntry]] = {}
            for copies in tries.values():
                by_pack.setdefault(copies[0].pack, []).append(copies[0])
            for results in pool.map(read_pack, by_pack.items()):
                for e, error in results:
                    report.copies_verified += 1
                    if error is None:
                        chosen[e.id] = e
                        del tries[e.id]
                        continue
                    report.damaged_copies += 1
                    log(f"gc: {error} (run 'backupctl repo check --read-data')")
                    tries[e.id].pop(0)
                    if not tries[e.id]:
                        chosen[e.id] = None
                        del tries[e.id]
    return chosen


class _KeptCopies:
    """Which copy of each used blob gc keeps: the one the index reads, unless that one failed
    verification (a blob stored in several packs keeps one copy, not repacked again and again)."""

    def __init__(self, index: Index, used: set[bytes]) -> None:
        self.index, self.used = index, used
        # blob id -> the pack of the copy kept once verified; None: every copy (none verified)
        self.chosen: dict[bytes, bytes | None] = {}

    def keeps(self, e: BlobEntry) -> bool:
        if e.id not in self.used:
            return False
        if e.id in self.chosen:
            pack = self.chosen[e.id]
            return pack is None or pack == e.pack
        return self.index.blobs[e.id].pack == e.pack

    def unverified_spares(self, entries: list[BlobEntry]) -> set[bytes]:
        """Used blobs with a copy among ``entries`` that goes while the kept one was never read."""
        return {e.id for e in entries if e.id in self.used and e.id not in self.chosen and not self.keeps(e)}

    def verify(self, repo, blob_ids: set[bytes], skip: set[bytes], doomed: set[bytes], report: GcReport,
               log) -> None:
        """Keep a copy of each blob that reads back intact: the index's, or the first good one,
        preferring copies outside packs a waiting plan deletes (``skip``: nothing takes them back),
        then outside the packs this gc chose so far (keeping a copy there takes it back)."""
        candidates = {b: sorted(self.index.copies(b), key=lambda c: (c.pack in skip, c.pack in doomed))
                      for b in blob_ids}
        for blob_id, copy in _first_good_copies(repo, candidates, report, log).items():
            self.chosen[blob_id] = None if copy is None else copy.pack
            if copy is None:
                log(f"gc: no copy of blob {blob_id.hex()[:16]} is intact: kept them all")

    def unreadable(self, entries: list[BlobEntry]) -> bool:
        """Whether ``entries`` hold a copy of a blob none of whose copies read back intact."""
        return any(e.id in self.chosen and self.chosen[e.id] is None for e in entries)


def _packs_of(plans: list[Plan]) -> set[bytes]:
    return {bytes.fromhex(p) for plan in plans for p in plan.packs}


def _choose_packs(repo, lock: Lock, index: Index, used: set[bytes], skip: set[bytes], threshold: float,
                  report: GcReport, dry_run: bool, log
                  ) -> tuple[set[bytes], set[bytes], dict[bytes, set[bytes]]]:
    """Packs to delete (after repacking what they still hold that is used), the blobs leaving with
    them, and the copies this run read intact or wrote from verified bytes (blob -> packs)."""
    kept = _KeptCopies(index, used)
    while True:
        doomed, to_repack, unused = _mark_packs(index, kept, skip, threshold)
        at_risk = kept.unverified_spares([e for p in doomed for e in index.pack_entries.get(p, [])])
        if not at_risk:
            break
        kept.verify(repo, at_risk, skip, doomed, report, log)   # then mark again: a damaged copy changes the choice
    report.unused_blobs += sum(len(es) for es in unused.values())
    doomed_blobs = {e.id for p in doomed for e in unused[p] if e.id not in used}    # a spare copy's blob stays
    # Packs no index lists: a backup was killed, or is still writing (the plan waits for it). Listed
    # before the repacking, whose packs this index does not list.
    indexed = {pack_name(p) for p in index.packs}
    orphans = {bytes.fromhex(name.rsplit("/", 1)[1]) for name, _size in repo.store.list("data/")
               if name not in indexed} - skip
    orphans -= _unindexed_but_used(repo, index, used, orphans, report, log)
    doomed |= orphans
    report.orphan_packs += len(orphans)
    verified = {b: {p} for b, p in kept.chosen.items() if p is not None}
    if to_repack and not dry_run:
        failed, written = _repack(repo, lock, to_repack, kept, report, log)
        doomed -= failed
        doomed_blobs -= {e.id for p in failed for e in unused[p]}
        for pack_id, (_size, entries) in written.items():
            for e in entries:
                verified.setdefault(e.id, set()).add(pack_id)
    elif dry_run:
        report.packs_repacked = len(to_repack)
    return doomed, doomed_blobs, verified


def _mark_packs(index: Index, kept: _KeptCopies, skip: set[bytes], threshold: float
                ) -> tuple[set[bytes], list[tuple[bytes, list[BlobEntry]]], dict[bytes, list[BlobEntry]]]:
    """Indexed packs to delete, those among them to repack first, and the copies each holds
    that gc does not keep."""
    doomed: set[bytes] = set()
    to_repack: list[tuple[bytes, list[BlobEntry]]] = []
    unused_in: dict[bytes, list[BlobEntry]] = {}
    for pack_id, entries in index.entries_by_pack().items():
        if pack_id in skip or kept.unreadable(entries):
            continue                     # a waiting plan has it, or it holds a copy kept for want of a good one
        unused = [e for e in entries if not kept.keeps(e)]
        if not unused:
            continue
        unused_in[pack_id] = unused
        unused_bytes = sum(e.length for e in unused)
        total = sum(e.length for e in entries) or 1
        if len(unused) == len(entries):
            doomed.add(pack_id)
        elif unused_bytes / total >= threshold:
            to_repack.append((pack_id, entries))
            doomed.add(pack_id)
    return doomed, to_repack, unused_in


def _repack(repo, lock: Lock, packs: list[tuple[bytes, list[BlobEntry]]], kept: _KeptCopies,
            report: GcReport, log) -> tuple[set[bytes], Packs]:
    """Copy the used blobs of ``packs`` into new packs; sealed bytes are copied as they are, from
    another copy where the pack's is damaged. Returns the packs left as they are (a used blob in
    them has no intact copy: damage is never copied forward, nor its pack deleted) and the new packs."""
    buffer = bytearray(pack_buffer_size(repo.config.pack_size, repo.config.chunk_max))
    writer = PackWriter(buffer)
    new_packs: Packs = {}
    failed: set[bytes] = set()

    def upload() -> None:
        nonlocal writer
        pack_id, data, entries = writer.finish(repo.key)
        repo.store.put(pack_name(pack_id), data)
        new_packs[pack_id] = (len(data), entries)
        data.release()  # the buffer is reused for the next pack
        writer = PackWriter(writer.release())

    for pack_id, entries in packs:
        data = repo.store.get(pack_name(pack_id))
        copies = []
        for e in entries:
            if not kept.keeps(e):
                continue
            sealed = data[e.offset:e.offset + e.length]
            try:
                repo.open_blob(e, sealed)  # never copy damage forward
            except IntegrityError as exc:
                report.damaged_copies += 1
                good = _intact_copy_elsewhere(repo, kept.index, e, report, log)
                if good is None:
                    log(f"gc: {exc.message}, and no other copy is intact: pack {pack_id.hex()[:12]} kept as it is "
                        "(run 'backupctl repo check --read-data')")
                    failed.add(pack_id)
                    break
                e, sealed = good
                log(f"gc: {exc.message}; repacked its copy from pack {e.pack.hex()[:12]} "
                    "(run 'backupctl repo check --read-data')")
            copies.append((e, sealed))
        if pack_id in failed:
            continue
        for e, sealed in copies:
            writer.copy_sealed(e.id, e.type, e.flags, sealed, e.raw_length)
            report.blobs_repacked += 1
            if writer.size >= repo.config.pack_size:
                upload()
        report.packs_repacked += 1
    if writer.count:
        upload()
    if new_packs:
        lock.check_still_held()   # another gc may have taken the new packs for orphans meanwhile
        save_index(repo.store, repo.key, new_packs)
        log(f"gc: repacked {report.blobs_repacked} blobs into {len(new_packs)} packs")
    return failed, new_packs


def _intact_copy_elsewhere(repo, index: Index, damaged: BlobEntry, report: GcReport,
                           log) -> tuple[BlobEntry, bytes] | None:
    """A copy of a blob outside the pack where it is damaged that reads back intact, and its sealed
    bytes as read and verified (what a repack copies), or None."""
    for copy in index.copies(damaged.id):
        if copy.pack == damaged.pack:
            continue
        report.copies_verified += 1
        try:
            sealed = repo.store.get_range(pack_name(copy.pack), copy.offset, copy.length)
            repo.open_blob(copy, sealed)
        except FileNotFoundError:
            error = f"pack {copy.pack.hex()[:12]} holding blob {copy.id.hex()[:16]} is missing"
        except IntegrityError as exc:
            error = exc.message
        else:
            return copy, sealed
        report.damaged_copies += 1
        log(f"gc: {error} (run 'backupctl repo check --read-data')")
    return None


def _gc_lock(repo) -> Lock:
    """The gc lock. A writer merging the index holds it for seconds: gc waits for that, not for
    another gc."""
    deadline = time.monotonic() + COMPACTION_WAIT
    while True:
        try:
            return repo.lock("gc", "gc")
        except LockedError:
            merging = any(lk.kind == "gc" and lk.purpose == COMPACTION and not lk.is_stale()
                          for lk in list_locks(repo.store, repo.key))
            if not merging or time.monotonic() > deadline:
                raise
            time.sleep(2)


def _execute(repo, lock: Lock, plans: list[Plan], used: set[bytes], report: GcReport, log,
             keep: set[bytes] = frozenset(), verified: dict[bytes, set[bytes]] | None = None) -> None:
    """Delete the planned packs nothing needs any more.

    Crash-safe order: first an index without those packs (superseding every index file
    read), then the packs, then the old index files and the plans. A crash after the new
    index leaves unindexed packs, which the next gc collects; never an index naming a
    pack that is gone.
    """
    index = repo.index
    by_pack = index.entries_by_pack()
    # packs a plan still waiting names too wait with it (a plan of a gc whose lock went stale can
    # name the packs another gc planned again, for a backup it did not wait for)
    planned = _packs_of(plans) - keep
    locations: dict[bytes, set[bytes]] = {}
    for pack_id, entries in by_pack.items():
        for e in entries:
            locations.setdefault(e.id, set()).add(pack_id)
    announced = {bytes.fromhex(b) for plan in plans for b in plan.blobs}
    # A used blob whose planned copies go keeps a copy elsewhere: that one must read back intact
    # first (a plan may have waited for days). Only copies this very gc run read or wrote, from
    # bytes it verified (``verified``: blob -> packs), are taken as they are.
    verified = verified or {}
    # Once a blob, not once a copy: a chunk of zeros has a copy in every WAL pack.
    in_planned = {e.id for p in planned for e in by_pack.get(p, [])}
    stays = {b for b in in_planned if not locations[b] <= planned}
    unchecked = {}
    for b in stays & used:
        if not (locations[b] - planned) & verified.get(b, set()):
            # copies outside the packs a waiting plan deletes later first
            unchecked[b] = sorted((c for c in index.copies(b) if c.pack not in planned), key=lambda c: c.pack in keep)
    intact = _first_good_copies(repo, unchecked, report, log) if unchecked else {}

    def needed(e: BlobEntry) -> bool:
        if e.id in stays:
            return intact.get(e.id, True) is None    # another copy stays, unless none of those is intact
        # A blob the plan did not announce (say, in a pack that was unindexed then) may have
        # been reused by a backup that started after the plan: only announced blobs can go.
        return e.id in used or e.id not in announced

    doomed = set()
    # a plan's unindexed packs were orphans when it was made: unless an index file was lost since
    unindexed_used = _unindexed_but_used(repo, index, used, planned - index.packs.keys(), report, log)
    for pack_id in planned - unindexed_used:
        if any(needed(e) for e in by_pack.get(pack_id, [])):
            log(f"gc: pack {pack_id.hex()[:12]} is still needed; kept")
        else:
            doomed.add(pack_id)
    lock.check_still_held()   # a lock judged stale: another gc may have run since the index was read
    old_files = sorted(index.file_names)
    remaining = {p: (index.packs[p], es) for p, es in by_pack.items() if p not in doomed}
    save_index(repo.store, repo.key, remaining, supersedes=old_files)
    report.index_files_merged += len(old_files)
    for pack_id in doomed:
        name = pack_name(pack_id)
        try:
            report.bytes_freed += repo.store.size(name)
        except FileNotFoundError:
            continue
        repo.store.delete(name)
        report.packs_deleted += 1
    for name in old_files:
        repo.store.delete(name)
    for plan in plans:
        repo.store.delete(PLANS_PREFIX + plan.id)
        report.plans_executed += 1
    log(f"gc: deleted {report.packs_deleted} packs, freed {report.bytes_freed} bytes")


def _compact(repo, lock: Lock, log) -> int:
    """Merge the index files but the largest into one when there are more than MAX_INDEX_FILES
    (holding the gc lock); returns how many were merged.

    Files that a present one supersedes (left by a merge or gc cut short) are deleted first; if
    that fails (a store that refuses deletes), nothing new is written: each merge would leave
    another copy."""
    listed = dict(repo.store.list(INDEX_PREFIX))
    if len(listed) <= MAX_INDEX_FILES:
        return 0
    largest = max(listed, key=lambda name: (listed[name], name))
    # the largest's entries are not needed, but what it supersedes is: those files' entries may
    # name packs a gc deleted, and must never be merged into a file nothing supersedes
    files = read_index_files(repo.store, repo.key, sorted(listed), without_entries=frozenset({largest}))
    if any(packs is None for _name, _sup, packs in files):
        raise RepositoryError("an index file vanished while the index files were merged",
                              "another process ignores the repository's locks; run 'backupctl repo locks'")
    superseded = {s for _name, sup, _packs in files for s in sup}
    for name in sorted(superseded & listed.keys()):
        repo.store.delete(name)
    live = [(name, packs) for name, _sup, packs in files if name not in superseded and name != largest]
    if len(live) + (largest not in superseded) <= MAX_INDEX_FILES:
        return 0
    merged: Packs = {}
    for _name, packs in live:
        merged.update(packs)
    lock.check_still_held()   # a lock judged stale: a gc may have deleted packs these files name
    save_index(repo.store, repo.key, merged, supersedes=[name for name, _ in live])
    for name, _packs in live:
        repo.store.delete(name)
    log(f"gc: merged {len(live)} index files into one")
    return len(live)


def compact_index(repo, log: Callable[[str], None] = lambda _m: None) -> int:
    """``_compact`` for a writer, which skips it (0) while a gc runs: the next writer merges, or the
    gc if it has nothing to delete."""
    if sum(1 for _ in repo.store.list(INDEX_PREFIX)) <= MAX_INDEX_FILES:   # the usual case: no lock taken
        return 0
    try:
        lock = repo.lock("gc", COMPACTION)
    except LockedError:
        return 0
    with lock:
        return _compact(repo, lock, log)
