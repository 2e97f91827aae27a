"""``repair index``: the index rebuilt from the packs themselves.

For a repository whose index files were lost or damaged: a restore then fails with "blob ... is
not in the index", or every command fails to read the index. Each pack ends with an encrypted
header listing its blobs, so the packs alone say where every blob is (restic's ``repair index``
works the same way). The entries of index files that still decrypt are kept for the packs that
exist; the packs no readable index file lists have their header read (``read_all_packs``: every
pack). Entries naming packs that are gone are dropped, so that the next backup stores those
blobs again if its source still has them, instead of taking them as stored.

The new index is one file that supersedes every file read; those are deleted after it lands
(a crash in between leaves files the new one supersedes: readers skip them). It runs under the
exclusive lock, and drops gc's pending plans: they were made from the old index (gc plans again).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from backupctl.errors import BackupctlError
from backupctl.progress import Progress
from backupctl.repository.index import INDEX_PREFIX, Packs, read_index_file, save_index
from backupctl.repository.pack import read_header
from backupctl.repository.plan import PLANS_PREFIX


@dataclass
class RepairReport:
    index_files_read: int = 0
    damaged_index_files: list[str] = field(default_factory=list)   # unreadable: their packs' headers were read
    headers_read: int = 0
    packs_added: int = 0               # listed again from their headers (no readable index file listed them)
    damaged_packs: list[str] = field(default_factory=list)         # header unreadable: left in place, not listed
    missing_packs: int = 0             # an index file listed them, the store has them no more: entries dropped
    packs: int = 0                     # in the new index
    blobs: int = 0
    plans_dropped: int = 0
    rewritten: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary_line(self) -> str:
        if not self.rewritten:
            return f"repair index: {self.packs} packs, {self.blobs} blobs: the index lists every pack; nothing to do"
        return (f"repair index: {self.packs} packs, {self.blobs} blobs in the new index; {self.packs_added} pack(s) "
                f"listed again from their headers, {self.missing_packs} missing pack(s) dropped, "
                f"{len(self.damaged_index_files)} damaged index file(s) replaced, "
                f"{len(self.damaged_packs)} pack(s) with an unreadable header left out")


def repair_index(repo, *, read_all_packs: bool = False, progress: Progress | None = None, threads: int = 8,
                 log: Callable[[str], None] = lambda _m: None) -> RepairReport:
    progress = progress or Progress()
    report = RepairReport()
    with repo.lock("exclusive", "repair index") as lock, ThreadPoolExecutor(max_workers=threads) as pool:
        names = [name for name, _size in repo.store.list(INDEX_PREFIX)]
        stored = {bytes.fromhex(name.rsplit("/", 1)[1]): size for name, size in repo.store.list("data/")}

        def read_file(name: str):
            try:
                return read_index_file(repo.store, repo.key, name)[2]
            except BackupctlError as exc:
                return exc

        packs: Packs = {}
        listed: set[bytes] = set()
        for name, got in zip(names, pool.map(read_file, names)):
            if isinstance(got, BackupctlError):
                report.damaged_index_files.append(name)
                log(f"repair: {got.message}; its packs are read instead")
                continue
            report.index_files_read += got is not None
            for pack_id, (size, entries) in (got or {}).items():
                listed.add(pack_id)
                # a size the store disagrees with: the header says what the pack holds now
                if not read_all_packs and stored.get(pack_id) == size:
                    packs[pack_id] = (size, entries)
        report.missing_packs = len(listed - stored.keys())

        unlisted = sorted(stored.keys() - packs.keys())
        progress.add_total(sum(stored[p] for p in unlisted), len(unlisted))
        progress.total_complete()

        def header(pack_id: bytes):
            try:
                return read_header(repo.store, repo.key, pack_id, stored[pack_id])
            except BackupctlError as exc:
                return exc
            finally:
                progress.advance(stored[pack_id], 1)

        for pack_id, got in zip(unlisted, pool.map(header, unlisted)):
            report.headers_read += 1
            if isinstance(got, BackupctlError):
                report.damaged_packs.append(pack_id.hex())
                log(f"repair: {got.message}; left in place, not listed ('backupctl repo check --read-data' tells "
                    "which snapshots need its blobs)")
            elif got:
                packs[pack_id] = (stored[pack_id], got)
                report.packs_added += pack_id not in listed
        report.packs = len(packs)
        report.blobs = len({e.id for _size, entries in packs.values() for e in entries})
        report.rewritten = bool(read_all_packs or report.damaged_index_files or unlisted or report.missing_packs)
        if not report.rewritten:
            return report
        lock.check_still_held()
        save_index(repo.store, repo.key, packs, supersedes=names)
        for name in names:
            repo.store.delete(name)
        for name, _size in repo.store.list(PLANS_PREFIX):
            repo.store.delete(name)
            report.plans_dropped += 1
    return report
