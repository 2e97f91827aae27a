"""Pack files: many encrypted blobs in one object, so S3 sees few large requests.

Layout: ``blob_0 .. blob_n | encrypted header | header length (4 bytes, little endian)``.
Each blob is sealed on its own (its id as associated data) so a restore reads just the
byte range it needs. The header lists every blob (type, flags, length, plaintext length,
id) in order; offsets follow from the lengths. A pack's name is the SHA-256 of its bytes,
so a truncated or altered pack is caught without the key.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from backupctl.errors import IntegrityError
from backupctl.repository.crypto import OVERHEAD, MasterKey

DATA, TREE = 0, 1
COMPRESSED = 1

_HEADER_ENTRY = struct.Struct("<BBII32s")
_HEADER_AAD = b"backupctl-pack-header"
_TRAILER = struct.Struct("<I")


def pack_name(pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"data/{h[:2]}/{h}"


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """Where a blob lives: in ``pack`` at ``offset``, ``length`` bytes sealed, ``raw_length`` plain."""

    id: bytes
    type: int
    flags: int
    pack: bytes
    offset: int
    length: int
    raw_length: int


class PackWriter:
    """Seals blobs straight into a preallocated, reused buffer until the pack is big enough.

    Fresh memory is slow to touch, and a bytes copy per blob and per pack doubled the peak
    memory of a backup; so the buffer comes from a pool and blobs are encrypted in place.
    """

    def __init__(self, buffer: bytearray) -> None:
        self._buf = buffer
        self._view = memoryview(buffer)
        self._pos = 0
        self._entries: list[tuple[bytes, int, int, int, int, int]] = []  # id, type, flags, offset, length, raw

    def _reserve(self, n: int) -> memoryview:
        if self._pos + n > len(self._buf):  # pack_buffer_size() rules this out
            raise OverflowError(f"pack buffer of {len(self._buf)} bytes too small")
        return self._view[self._pos:self._pos + n]

    def seal(self, key: MasterKey, blob_id: bytes, blob_type: int, flags: int, payload, raw_length: int) -> int:
        """Encrypt ``payload`` into the pack; returns the sealed length."""
        n = key.seal_into(payload, blob_id, self._reserve(len(payload) + OVERHEAD))
        self._commit(blob_id, blob_type, flags, n, raw_length)
        return n

    def copy_sealed(self, blob_id: bytes, blob_type: int, flags: int, sealed, raw_length: int) -> None:
        """Add an already sealed blob (gc's repack moves blobs without re-encrypting them)."""
        self._reserve(len(sealed))[:] = sealed
        self._commit(blob_id, blob_type, flags, len(sealed), raw_length)

    def _commit(self, blob_id: bytes, blob_type: int, flags: int, length: int, raw_length: int) -> None:
        self._entries.append((blob_id, blob_type, flags, self._pos, length, raw_length))
        self._pos += length

    @property
    def size(self) -> int:
        """Bytes the pack will have if finished now."""
        return self._pos + len(self._entries) * _HEADER_ENTRY.size + OVERHEAD + _TRAILER.size

    @property
    def count(self) -> int:
        return len(self._entries)

    def finish(self, key: MasterKey) -> tuple[bytes, memoryview, list[BlobEntry]]:
        """Return (pack id, pack bytes as a view into the buffer, entries)."""
        header = b"".join(_HEADER_ENTRY.pack(t, f, ln, raw, i) for i, t, f, _o, ln, raw in self._entries)
        hlen = key.seal_into(header, _HEADER_AAD, self._reserve(len(header) + OVERHEAD))
        self._pos += hlen
        self._reserve(_TRAILER.size)[:] = _TRAILER.pack(hlen)
        self._pos += _TRAILER.size
        data = self._view[:self._pos]
        pack_id = hashlib.sha256(data).digest()
        entries = [BlobEntry(i, t, f, pack_id, o, ln, raw) for i, t, f, o, ln, raw in self._entries]
        return pack_id, data, entries

    def release(self) -> bytearray:
        """Give the buffer back for reuse (after the pack was uploaded)."""
        self._view.release()
        return self._buf


def pack_buffer_size(pack_size: int, max_blob: int) -> int:
    """Room for a pack whose size (header included) crossed ``pack_size`` by one blob."""
    return pack_size + max_blob + 2 * OVERHEAD + _HEADER_ENTRY.size + _TRAILER.size


def parse_header(key: MasterKey, pack_id: bytes, tail: bytes, pack_size: int) -> list[BlobEntry]:
    """Decode the header from the last bytes of a pack (``tail`` must hold header and trailer)."""
    where = f"pack {pack_id.hex()[:12]}"
    if len(tail) < _TRAILER.size:
        raise IntegrityError(f"{where} is truncated", "run 'backupctl repo gc' to drop it if no snapshot needs it")
    (hlen,) = _TRAILER.unpack(tail[-_TRAILER.size:])
    if hlen + _TRAILER.size > min(len(tail), pack_size):
        raise IntegrityError(f"{where} has a corrupt header length", "run 'backupctl repo check --read-data'")
    header = key.decrypt(tail[-_TRAILER.size - hlen:-_TRAILER.size], _HEADER_AAD, f"{where} header")
    if len(header) % _HEADER_ENTRY.size:
        raise IntegrityError(f"{where} header is malformed", "run 'backupctl repo check --read-data'")
    entries, offset = [], 0
    for t, f, ln, raw, i in _HEADER_ENTRY.iter_unpack(header):
        entries.append(BlobEntry(i, t, f, pack_id, offset, ln, raw))
        offset += ln
    if offset + hlen + _TRAILER.size != pack_size:
        raise IntegrityError(f"{where} header does not match its size", "run 'backupctl repo check --read-data'")
    return entries


def header_tail_size(pack_size: int, blob_count_hint: int = 0) -> int:
    """How many trailing bytes to fetch to read a header in one request, most of the time."""
    return min(pack_size, 64 * 1024 + blob_count_hint * _HEADER_ENTRY.size)


def read_header(store, key: MasterKey, pack_id: bytes, pack_size: int, blob_count_hint: int = 0) -> list[BlobEntry]:
    """A stored pack's header: one ranged read, or two when the header is longer than guessed
    (a pack of many small blobs whose index entry count is not known)."""
    name = pack_name(pack_id)
    tail = store.get_range(name, pack_size - (n := header_tail_size(pack_size, blob_count_hint)), n)
    if len(tail) >= _TRAILER.size:
        (hlen,) = _TRAILER.unpack(tail[-_TRAILER.size:])
        if len(tail) < hlen + _TRAILER.size <= pack_size:
            n = hlen + _TRAILER.size
            tail = store.get_range(name, pack_size - n, n)
    return parse_header(key, pack_id, tail, pack_size)


def verify_pack_id(pack_id: bytes, data: bytes) -> bool:
    return hashlib.sha256(data).digest() == pack_id
