"""Authenticated encryption of every object, keyed chunk ids, and the passphrase KDF.

Every object and blob is ``nonce(12) || AES-256-GCM(ciphertext || tag(16))``. Blob ids are
keyed BLAKE3 hashes of the plaintext, so names say nothing about content to someone
without the key; the blob id is also the associated data of the blob's encryption, so a
blob cannot be swapped for another without the swap being caught.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backupctl.errors import IntegrityError

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
KEY_SIZE = 32


@dataclass(frozen=True)
class KdfParams:
    """scrypt parameters; N=2^15, r=8, p=1 takes ~0.1 s and 32 MiB, as restic's minimum."""

    n: int = 1 << 15
    r: int = 8
    p: int = 1

    def derive(self, password: bytes, salt: bytes) -> bytes:
        # OpenSSL's scrypt through hashlib, which releases the GIL (cryptography's holds it): a
        # command derives its key while its other thread checks the database server.
        need = 128 * self.r * (self.n + self.p + 2) + (1 << 20)
        return hashlib.scrypt(password, salt=salt, n=self.n, r=self.r, p=self.p, dklen=KEY_SIZE,
                              maxmem=min(need, 2**31 - 1))


class MasterKey:
    """The repository's data keys: one for encryption, one for chunk ids and the chunker seed."""

    def __init__(self, encryption_key: bytes, id_key: bytes, chunker_seed: int) -> None:
        self.encryption_key = encryption_key
        self.id_key = id_key
        self.chunker_seed = chunker_seed
        self._aead = AESGCM(encryption_key)

    @classmethod
    def generate(cls) -> "MasterKey":
        return cls(os.urandom(KEY_SIZE), os.urandom(KEY_SIZE), int.from_bytes(os.urandom(4), "little") or 1)

    def to_dict(self) -> dict:
        return {"encrypt": self.encryption_key.hex(), "id": self.id_key.hex(), "chunker_seed": self.chunker_seed}

    @classmethod
    def from_dict(cls, d: dict) -> "MasterKey":
        return cls(bytes.fromhex(d["encrypt"]), bytes.fromhex(d["id"]), int(d["chunker_seed"]))

    def blob_id(self, data: bytes | memoryview) -> bytes:
        # blake3-py releases the GIL for large inputs, so ids are computed in parallel.
        return blake3.blake3(data, key=self.id_key).digest()

    def encrypt(self, plaintext: bytes | memoryview, aad: bytes | None = None) -> bytes:
        return seal(self._aead, plaintext, aad)

    def seal_into(self, plaintext: bytes | memoryview, aad: bytes | None, out: memoryview) -> int:
        """Encrypt into ``out`` (len(plaintext) + OVERHEAD bytes) without allocating; returns that length."""
        nonce = os.urandom(NONCE_SIZE)
        n = len(plaintext) + OVERHEAD
        out[:NONCE_SIZE] = nonce
        self._aead.encrypt_into(nonce, plaintext, aad, out[NONCE_SIZE:n])
        return n

    def decrypt(self, blob: bytes | memoryview, aad: bytes | None = None, what: str = "object") -> bytes:
        return open_sealed(self._aead, blob, aad, what)


def seal(aead: AESGCM, plaintext: bytes | memoryview, aad: bytes | None) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def open_sealed(aead: AESGCM, blob: bytes | memoryview, aad: bytes | None, what: str) -> bytes:
    if len(blob) < OVERHEAD:
        raise IntegrityError(f"{what} is truncated ({len(blob)} bytes)", "run 'backupctl repo check --read-data'")
    view = memoryview(blob)
    try:
        return aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
    except InvalidTag:
        raise IntegrityError(f"{what} failed authentication: it was tampered with, corrupted, or written with another key",
                             "run 'backupctl repo check --read-data' to find the affected snapshots") from None
