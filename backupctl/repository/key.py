"""Key slots: the master key wrapped by a key derived from a passphrase.

Each slot is an object ``keys/<id>`` holding the KDF parameters, a salt and the wrapped
master key, so passphrases can be added, removed and changed without rewriting data.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backupctl.errors import IntegrityError, NotFoundError, UsageError, WrongPasswordError
from backupctl.repository.crypto import KdfParams, MasterKey, open_sealed, seal
from repo_plugins import Store

KEYS_PREFIX = "keys/"


@dataclass
class KeySlot:
    id: str
    created: float
    hostname: str
    username: str
    kdf: KdfParams
    salt: bytes
    wrapped: bytes

    def to_json(self) -> bytes:
        return json.dumps({
            "created": self.created, "hostname": self.hostname, "username": self.username,
            "kdf": "scrypt", "N": self.kdf.n, "r": self.kdf.r, "p": self.kdf.p,
            "salt": self.salt.hex(), "data": self.wrapped.hex(),
        }, indent=1).encode()

    @classmethod
    def from_json(cls, key_id: str, raw: bytes) -> "KeySlot":
        try:
            d = json.loads(raw)
            if d.get("kdf") != "scrypt":
                raise UsageError(f"key {key_id[:8]} uses unknown KDF {d.get('kdf')!r}", "upgrade backupctl")
            return cls(key_id, d["created"], d["hostname"], d["username"], KdfParams(d["N"], d["r"], d["p"]),
                       bytes.fromhex(d["salt"]), bytes.fromhex(d["data"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"key file keys/{key_id} is malformed ({exc})",
                                 "remove it with 'backupctl repo key remove' if another key still works") from None

    def unwrap(self, password: str) -> MasterKey | None:
        kek = AESGCM(self.kdf.derive(password.encode(), self.salt))
        try:
            plain = open_sealed(kek, self.wrapped, b"backupctl-key", "key")
        except IntegrityError:
            return None
        return MasterKey.from_dict(json.loads(plain))


def new_slot(master: MasterKey, password: str, kdf: KdfParams | None = None) -> KeySlot:
    if not password:
        raise UsageError("the password is empty", "choose a non-empty password")
    kdf = kdf or kdf_from_env()
    salt = os.urandom(32)
    kek = AESGCM(kdf.derive(password.encode(), salt))
    wrapped = seal(kek, json.dumps(master.to_dict()).encode(), b"backupctl-key")
    return KeySlot(os.urandom(32).hex(), time.time(), socket.gethostname(), getpass.getuser(), kdf, salt, wrapped)


def kdf_from_env() -> KdfParams:
    """``BACKUPCTL_KDF_N`` lowers the scrypt cost for throwaway test repositories only."""
    n = int(os.environ.get("BACKUPCTL_KDF_N", KdfParams.n))
    if n < 1024 or n & (n - 1):
        raise UsageError(f"BACKUPCTL_KDF_N={n} is not a power of two >= 1024", "unset it or fix it")
    return KdfParams(n=n)


def save_slot(store: Store, slot: KeySlot) -> None:
    store.put(KEYS_PREFIX + slot.id, slot.to_json())


def list_slots(store: Store) -> list[KeySlot]:
    return [KeySlot.from_json(name[len(KEYS_PREFIX):], store.get(name)) for name, _ in store.list(KEYS_PREFIX)]


def open_master_key(store: Store, password: str) -> tuple[MasterKey, KeySlot]:
    slots = list_slots(store)
    if not slots:
        raise WrongPasswordError("the repository has no key slots", "it was not initialised or its keys/ were deleted")
    for slot in slots:
        master = slot.unwrap(password)
        if master is not None:
            return master, slot
    raise WrongPasswordError("wrong password: no key slot in the repository opens with it",
                             "check BACKUPCTL_PASSWORD, --password-file or --password-command")


def find_slot(store: Store, prefix: str) -> KeySlot:
    matches = [s for s in list_slots(store) if s.id.startswith(prefix)]
    if not matches:
        raise NotFoundError(f"no key slot with id {prefix!r}", "see 'backupctl repo key list'")
    if len(matches) > 1:
        raise UsageError(f"key id prefix {prefix!r} is ambiguous", "give more characters of the id")
    return matches[0]
