"""A chain of page-level incrementals restores each relation file byte for byte, whatever the
chain did to it in between: pages changed, the file truncated (VACUUM), extended again, removed,
created. No server: the files are written here with page LSNs as PostgreSQL would set them."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupctl.repository import Repository
from backupctl.repository import restore as restore_module
from backupctl.repository.backup import backup_paths
from backupctl.repository.tree import Node, walk_tree
from engine_tools.postgresql import delta
from engine_tools.postgresql.restore import restore_chain
from tests.conftest import PASSWORD

PAGE = delta.PAGE
REL = "base/5/16384"          # a main fork: stored as a page delta in incrementals
SEGMENT = "base/5/16390.1"    # a second segment of another relation
OTHER = "base/5/16384_fsm"    # not a main fork: stored whole every time
LATE = "base/5/16500"         # unchanged in the first incremental, changed in the second


def page(lsn: int, rng: random.Random) -> bytes:
    return struct.pack("<II", lsn >> 32, lsn & 0xFFFFFFFF) + rng.randbytes(PAGE - 8)


class DataDir:
    def __init__(self, root, rng: random.Random) -> None:
        self.root, self.rng = root, rng

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def write(self, rel: str, pages: dict[int, int]) -> None:
        """Write pages {page number: LSN} in place (the file grows as needed)."""
        os.makedirs(os.path.dirname(self.path(rel)), exist_ok=True)
        with open(self.path(rel), "r+b" if os.path.exists(self.path(rel)) else "wb") as f:
            for no, lsn in sorted(pages.items()):
                f.seek(no * PAGE)
                f.write(page(lsn, self.rng))

    def truncate(self, rel: str, pages: int) -> None:
        os.truncate(self.path(rel), pages * PAGE)

    def snapshot_bytes(self) -> dict[str, bytes]:
        out = {}
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                full = os.path.join(dirpath, name)
                out[os.path.relpath(full, self.root)] = open(full, "rb").read()
        return out


def backup(repo, data: DataDir, parent=None, since_lsn: int | None = None, settled_before: int | None = None):
    return backup_paths(repo, [data.path("base"), data.path("global")], parent=parent, settled_before=settled_before,
                        content_hook=delta.content_hook(since_lsn, settled_before) if parent is not None else None)


@pytest.mark.parametrize("window", [None, 16 * 1024])
def test_chain_with_changes_truncation_and_extension_restores_byte_for_byte(fs_repo_url, tmp_path, monkeypatch,
                                                                             window):
    if window:   # many windows a file, O_DIRECT for every file: layers laid over windows in order
        monkeypatch.setattr(restore_module, "WINDOW", window)
        monkeypatch.setattr(restore_module, "DIRECT_MIN", 0)
    rng = random.Random(4)
    data = DataDir(tmp_path / "data", rng)
    repo = Repository.init(fs_repo_url, PASSWORD)

    data.write(REL, {n: 100 for n in range(300)})              # 2.4 MB: several chunks
    data.write(SEGMENT, {n: 100 for n in range(40)})
    data.write(OTHER, {0: 0, 1: 0})
    data.write("global/1262", {0: 100})                        # a shared catalog (path pattern of its own)
    data.write("base/5/20000", {n: 100 for n in range(5)})     # removed before the last incremental
    data.write(LATE, {n: 100 for n in range(20)})
    full = backup(repo, data)
    states = [data.snapshot_bytes()]

    # incremental 1 (parent started at LSN 200): scattered changes, a truncation, then new pages
    data.write(REL, {3: 500, 77: 510, 150: 520, 299: 530})
    data.truncate(REL, 200)
    data.write(REL, {200: 600, 201: 0, 230: 610})             # re-extended past a hole
    data.write(SEGMENT, {0: 50})                               # an old LSN: never copied, ...
    data.write(OTHER, {1: 0})
    data.write("global/1262", {1: 650})
    inc1 = backup(repo, data, parent=full, since_lsn=200)
    states.append(data.snapshot_bytes())

    # incremental 2 (parent started at LSN 700)
    data.write(REL, {3: 900, 5: 910, 231: 920, 260: 930})
    data.truncate(SEGMENT, 10)
    os.unlink(data.path("base/5/20000"))
    data.write("base/5/30000", {0: 950, 1: 960})               # new relation: stored whole
    data.write(LATE, {2: 970, 19: 980})                        # over the full's copy, taken whole by inc1
    inc2 = backup(repo, data, parent=inc1, since_lsn=700)
    states.append(data.snapshot_bytes())
    late = [next(n for n in walk_tree(repo, s.tree) if n.path == LATE) for s in (full, inc1, inc2)]
    assert late[1].encoding is None and late[1].chunks == late[0].chunks and late[2].encoding == delta.ENCODING

    encoded = {n.path for n in walk_tree(repo, inc2.tree) if n.encoding}
    assert {REL, SEGMENT, "global/1262"} <= encoded and OTHER not in encoded and "base/5/30000" not in encoded

    for i, chain in enumerate([[full], [full, inc1], [full, inc1, inc2]]):
        target = tmp_path / f"restored-{i}"
        restore_chain(repo, chain, str(target))
        restored = DataDir(target, rng).snapshot_bytes()
        expected = dict(states[i])
        if i >= 1:
            # ... but the parent's copy: a page whose LSN is older than the parent's start cannot
            # have changed on a real server, so an incremental never stores it
            expected[SEGMENT] = states[0][SEGMENT][:PAGE] + expected[SEGMENT][PAGE:]
        assert restored.keys() == expected.keys(), i
        for rel in expected:
            assert len(restored[rel]) == len(expected[rel]), (i, rel)
            assert restored[rel] == expected[rel], (i, rel)


def test_files_modified_since_the_settle_time_are_read_again_metadata_or_not(fs_repo_url, tmp_path):
    """With ``settled_before`` at or before the files' times, nothing is taken from the parent by its
    metadata: relation files become page deltas (scanned), other files are read and stored again."""
    data = DataDir(tmp_path / "data", random.Random(5))
    repo = Repository.init(fs_repo_url, PASSWORD)
    data.write(REL, {n: 100 for n in range(20)})
    data.write(OTHER, {0: 0})
    data.write("global/1262", {0: 100})
    full = backup(repo, data)
    trusted = backup(repo, data, parent=full, since_lsn=200)
    # as if the parent had started right after the first file was written: none had settled
    unsettled = backup(repo, data, parent=full, since_lsn=200, settled_before=os.stat(data.path(REL)).st_mtime_ns)

    def entry(snapshot, path):
        return next(n for n in walk_tree(repo, snapshot.tree) if n.path == path)

    assert trusted.summary["files_unmodified"] == 3 and entry(trusted, REL).encoding is None
    assert unsettled.summary["files_unmodified"] == 0
    assert entry(unsettled, REL).encoding == delta.ENCODING and entry(unsettled, OTHER).encoding is None
    target = tmp_path / "restored"
    restore_chain(repo, [full, unsettled], str(target))
    assert DataDir(target, random.Random(0)).snapshot_bytes() == data.snapshot_bytes()


# -- the merge against applying the deltas one by one, on random chains ---------------------------

@pytest.fixture(scope="module")
def small_pages():
    """64-byte pages, so that random chains stay small (the format does not care)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(delta, "PAGE", 64)
    yield
    mp.undo()


def _apply(file: bytearray, node: Node, blobs: list[bytes]) -> None:
    """Lay a delta's patches over a file's bytes and give it the size the delta ends with."""
    stream = delta.patches(node, iter(blobs))
    while True:
        try:
            pages = next(stream)
        except StopIteration as end:
            del file[end.value:]
            return
        for offset, page in pages:
            file[len(file):offset + len(page)] = bytes(max(0, offset + len(page) - len(file)))
            file[offset:offset + len(page)] = page


def _delta_stream(pages: dict[int, bytes], size: int) -> bytes:
    out = [delta._HEADER.pack(delta.MAGIC, delta.PAGE, 0)]
    out += [delta._RECORD.pack(no) + pages[no] for no in sorted(pages)]
    return b"".join(out) + delta._TRAILER.pack(delta._END, size)


def _cut(data: bytes, rng: random.Random) -> list[bytes]:
    """Blobs at arbitrary boundaries, as content-defined chunking gives."""
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6)))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 200), st.lists(st.integers(0, 200), min_size=1, max_size=4))
def test_deltas_cut_anywhere_apply_like_the_pages_they_hold(small_pages, seed, base_pages, sizes):
    rng = random.Random(seed)
    page_size = delta.PAGE
    expected = bytearray(rng.randbytes(base_pages * page_size))
    restored = bytearray(expected)
    parent_pages = base_pages
    for new_pages in sizes:
        # a delta stores some pages below both ends, and every page past its parent's end
        pages = {no: rng.randbytes(page_size) for no in range(min(parent_pages, new_pages)) if rng.random() < 0.3}
        pages.update({no: rng.randbytes(page_size) for no in range(parent_pages, new_pages)})
        for no, content in pages.items():
            expected[no * page_size:(no + 1) * page_size] = content
        del expected[new_pages * page_size:]
        stream = _delta_stream(pages, new_pages * page_size)
        node = Node(path="base/1/16384", type="file", size=len(stream), encoding=delta.ENCODING,
                    logical_size=new_pages * page_size)
        _apply(restored, node, _cut(stream, rng))
        parent_pages = new_pages
    assert restored == expected


@pytest.mark.parametrize("damage,message", [
    ("swap", "out of order"), ("repeat", "out of order"), ("across", "out of order"),
    ("magic", "not a page delta"), ("cut", "truncated"),
])
def test_a_damaged_delta_is_refused_not_laid(small_pages, damage, message):
    """Page numbers are read many records at a time: order is still checked record by record, across
    blobs too, and a stream without its trailer is not taken for a whole one."""
    from backupctl.errors import IntegrityError

    rng = random.Random(7)
    numbers = list(range(0, 40, 3))
    if damage == "swap":
        numbers[4], numbers[5] = numbers[5], numbers[4]
    if damage == "repeat":
        numbers[7] = numbers[6]
    records = [delta._RECORD.pack(no) + rng.randbytes(delta.PAGE) for no in numbers]
    head = delta._HEADER.pack(b"NOTADLTA" if damage == "magic" else delta.MAGIC, delta.PAGE, 0)
    trailer = b"" if damage == "cut" else delta._TRAILER.pack(delta._END, 40 * delta.PAGE)
    if damage == "across":                      # in order within each blob, not across them
        blobs = [head + b"".join(records[6:]), b"".join(records[:6]) + trailer]
    else:
        stream = head + b"".join(records) + trailer
        blobs = [stream[:100], stream[100:]]
    node = Node(path="base/1/16384", type="file", size=sum(map(len, blobs)), encoding=delta.ENCODING,
                logical_size=40 * delta.PAGE)
    with pytest.raises(IntegrityError, match=message):
        _apply(bytearray(), node, blobs)


# -- random chains through the window writer: each window assembled from the base and every layer ------

@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40),
       st.lists(st.tuples(st.sampled_from(["change", "truncate", "extend", "truncate+extend"]), st.integers(0, 40)),
                min_size=1, max_size=3))
def test_random_chains_restore_byte_for_byte_in_small_windows(tmp_path_factory, seed, pages, steps):
    rng = random.Random(seed)
    root = tmp_path_factory.mktemp("chain")
    data = DataDir(root / "data", rng)
    repo = Repository.init(str(root / "repo"), PASSWORD)
    data.write(REL, {n: 100 for n in range(pages)})
    data.write("global/1262", {0: 100})
    snaps = [backup(repo, data)]
    size = pages
    for k, (op, n) in enumerate(steps, start=1):
        lsn = 200 * k + 50                      # after this incremental's parent started (200 * k)
        if op == "change" and size:
            data.write(REL, {no: lsn for no in rng.sample(range(size), min(size, n))})
        if op.startswith("truncate"):
            size = min(size, n)
            data.truncate(REL, size)
        if op.endswith("extend"):
            data.write(REL, {no: lsn for no in range(size, size + n)})
            size += n
        snaps.append(backup(repo, data, parent=snaps[-1], since_lsn=200 * k))
    with pytest.MonkeyPatch.context() as mp:     # 2-page windows, O_DIRECT for every file
        mp.setattr(restore_module, "WINDOW", 2 * PAGE)
        mp.setattr(restore_module, "DIRECT_MIN", 0)
        restore_chain(repo, snaps, str(root / "restored"))
    assert (root / "restored" / REL).read_bytes() == (root / "data" / REL).read_bytes()
