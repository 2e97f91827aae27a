"""Re-cutting a changed file guided by its parent's chunks gives exactly the chunks a full scan gives,
whatever the change (in place, insertion, deletion, growth, truncation) and wherever buffer
boundaries fall; only the parent's chunks found again come with an id, and it is theirs."""

from __future__ import annotations

import hashlib
import io
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from backupctl.repository.chunker import BufferPool, Chunker, Guide
from backupctl.repository.config import RepoConfig

CONFIG = RepoConfig.new(chunk_min=256, chunk_avg=768, chunk_max=4096)


def blob_id(data) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def cut(data: bytes, buffer_size: int, guide: Guide | None = None) -> list[tuple[bytes, bytes | None]]:
    chunker = Chunker(CONFIG, seed=7, pool=BufferPool(CONFIG.chunk_max + buffer_size, count=3))
    out = []
    for chunk, release, known in chunker.chunks(io.BytesIO(data).readinto, guide):
        out.append((bytes(chunk), known))
        release()
    return out


def change(data: bytes, kind: str, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    n = rng.randint(1, 3000)
    if kind == "overwrite":
        return data[:at] + rng.randbytes(n)[:len(data) - at] + data[at + n:]
    if kind == "insert":
        return data[:at] + rng.randbytes(n) + data[at:]
    if kind == "delete":
        return data[:at] + data[at + n:]
    if kind == "append":
        return data + rng.randbytes(n)
    if kind == "truncate":
        return data[:at]
    return data                                            # unchanged (e.g. only the mtime moved)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 60_000),
       st.lists(st.sampled_from(["overwrite", "insert", "delete", "append", "truncate", "none"]), min_size=1,
                max_size=3),
       st.sampled_from([4096, 5000, 8192, 65536]))
def test_guided_cuts_equal_a_full_scan(seed, size, kinds, buffer_size):
    rng = random.Random(seed)
    # repetitive data cuts at the maximum size, random data at content-defined points: mix both
    parent = b"".join(rng.choice([rng.randbytes(1000), b"x" * 1000]) for _ in range(size // 1000 + 1))[:size]
    parent_chunks = [c for c, _ in cut(parent, buffer_size)]
    data = parent
    for kind in kinds:
        data = change(data, kind, rng)
    guide = Guide([(len(c), blob_id(c)) for c in parent_chunks], blob_id)

    scanned = cut(data, buffer_size)
    guided = cut(data, buffer_size, guide)

    assert [c for c, _ in guided] == [c for c, _ in scanned]
    assert b"".join(c for c, _ in guided) == data
    known = {blob_id(c) for c in parent_chunks}
    for chunk, chunk_id in guided:
        assert chunk_id is None or (chunk_id == blob_id(chunk) and chunk_id in known)
    if data == parent:                                     # nothing changed: nothing scanned
        assert all(chunk_id is not None for _, chunk_id in guided)


def test_after_an_in_place_change_the_cuts_come_back_onto_the_parents():
    rng = random.Random(3)
    parent = rng.randbytes(400_000)
    parent_chunks = [c for c, _ in cut(parent, 8192)]
    data = parent[:200_000] + rng.randbytes(100) + parent[200_100:]
    guide = Guide([(len(c), blob_id(c)) for c in parent_chunks], blob_id)
    guided = cut(data, 8192, guide)
    scanned = [i for i, (_, chunk_id) in enumerate(guided) if chunk_id is None]
    assert len(guided) > 100 and 1 <= len(scanned) <= 3, scanned     # only around the change
    assert guided[-1][1] is not None and guided[0][1] is not None
