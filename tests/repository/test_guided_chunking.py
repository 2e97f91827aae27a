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
    """(chunk, the id the chunker gave it) for each chunk."""
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
    assert all(chunk_id == blob_id(chunk) for chunk, chunk_id in guided)
    if data == parent:
        # nothing changed: nothing scanned but, at most once a buffer, a chunk whose confirming
        # neighbour is in the next buffer
        assert guide.taken >= len(guided) - (len(data) // buffer_size + 1)


def _guided_after(change_at: int, new: bytes, removed: int) -> tuple[Guide, list, list]:
    rng = random.Random(3)
    parent = rng.randbytes(1_000_000)
    parent_chunks = [c for c, _ in cut(parent, 65536)]
    data = parent[:change_at] + new + parent[change_at + removed:]
    guide = Guide([(len(c), blob_id(c)) for c in parent_chunks], blob_id)
    return guide, cut(data, 65536, guide), cut(data, 65536)


def test_after_an_in_place_change_the_parents_chunks_are_taken_without_a_scan():
    guide, guided, scanned = _guided_after(500_000, b"\0" * 100, 100)
    assert [c for c, _ in guided] == [c for c, _ in scanned]
    # all but the changed chunk and about one chunk per 64 KiB buffer (whose confirming neighbour
    # lies in the next buffer) are taken by their hash
    assert guide.taken >= 0.8 * len(guided), (guide.taken, len(guided))


def test_after_an_insertion_the_shifted_parent_chunks_are_found_again():
    guide, guided, scanned = _guided_after(150_000, b"inserted" * 97, 0)
    assert [c for c, _ in guided] == [c for c, _ in scanned]
    assert guide.taken >= 0.8 * len(guided), (guide.taken, len(guided))


def test_a_change_in_the_byte_right_after_a_chunk_is_seen():
    """FastCDC's cut depends on the byte after the chunk too: a chunk whose bytes are unchanged
    but whose next byte changed may be cut elsewhere, and must not be taken by its hash alone."""
    rng = random.Random(11)
    parent = rng.randbytes(200_000)
    parent_chunks = [c for c, _ in cut(parent, 65536)]
    boundaries = [sum(len(c) for c in parent_chunks[:i]) for i in range(1, len(parent_chunks))]
    for at in boundaries[:20]:
        data = parent[:at] + bytes([parent[at] ^ 0xFF]) + parent[at + 1:]
        guide = Guide([(len(c), blob_id(c)) for c in parent_chunks], blob_id)
        assert [c for c, _ in cut(data, 65536, guide)] == [c for c, _ in cut(data, 65536)], at


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 40_000), st.sampled_from([1000, 4096]), st.sampled_from([4096, 5000, 12288]))
def test_fixed_chunks_fall_at_multiples_of_their_size_across_buffers(size, fixed, buffer_size):
    data = random.Random(size).randbytes(size)
    chunker = Chunker(CONFIG, seed=7, pool=BufferPool(CONFIG.chunk_max + buffer_size, count=3))
    chunks = []
    for chunk, release, known in chunker.chunks(io.BytesIO(data).readinto, fixed=fixed):
        chunks.append(bytes(chunk))
        assert known is None
        release()
    assert chunks == [data[i:i + fixed] for i in range(0, size, fixed)]
    assert [bytes(c) for c in chunker.chunk_bytes(data, fixed)] == chunks
