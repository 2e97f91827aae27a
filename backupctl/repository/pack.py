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
from backupctl.repository.crypto import MasterKey

DATA, TREE = 0, 1
BLOB_TYPES = {DATA: "data", TREE: "tree"}
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
    """Collects sealed blobs in memory until the pack is big enough to upload."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._entries: list[tuple[bytes, int, int, int, int, int]] = []  # id, type, flags, offset, length, raw

    def add(self, blob_id: bytes, blob_type: int, flags: int, sealed: bytes, raw_length: int) -> None:
        self._entries.append((blob_id, blob_type, flags, len(self._buf), len(sealed), raw_length))
        self._buf += sealed

    @property
    def size(self) -> int:
        return len(self._buf)

    @property
    def count(self) -> int:
        return len(self._entries)

    def finish(self, key: MasterKey) -> tuple[bytes, bytes, list[BlobEntry]]:
        """Return (pack id, pack bytes, entries)."""
        header = b"".join(_HEADER_ENTRY.pack(t, f, ln, raw, i) for i, t, f, _o, ln, raw in self._entries)
        sealed_header = key.encrypt(header, _HEADER_AAD)
        self._buf += sealed_header
        self._buf += _TRAILER.pack(len(sealed_header))
        data = bytes(self._buf)
        pack_id = hashlib.sha256(data).digest()
        entries = [BlobEntry(i, t, f, pack_id, o, ln, raw) for i, t, f, o, ln, raw in self._entries]
        return pack_id, data, entries


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


def verify_pack_id(pack_id: bytes, data: bytes) -> bool:
    return hashlib.sha256(data).digest() == pack_id
