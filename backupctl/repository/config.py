"""The repository's ``config`` object: format version (readable without the key, so an
unknown version is a clear error) and the sealed parameters every writer must share."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

from backupctl.errors import IntegrityError, RepositoryError
from backupctl.repository.crypto import MasterKey

CONFIG_NAME = "config"
FORMAT = "backupctl-repository"
FORMAT_VERSION = 1
_AAD = b"backupctl-config-v1"


@dataclass
class RepoConfig:
    id: str
    created: float
    chunk_min: int = 256 * 1024
    chunk_avg: int = 768 * 1024        # FastCDC 2020's mean chunk is avg + min, about 1 MiB
    chunk_max: int = 4 * 1024 * 1024
    pack_size: int = 32 * 1024 * 1024
    compression: int = 3               # zstd level; 0 turns compression off

    @classmethod
    def new(cls, **overrides: int) -> "RepoConfig":
        return cls(id=os.urandom(16).hex(), created=time.time(), **overrides)


def encode_config(cfg: RepoConfig, key: MasterKey) -> bytes:
    return json.dumps({
        "format": FORMAT, "version": FORMAT_VERSION,
        "data": key.encrypt(json.dumps(asdict(cfg)).encode(), _AAD).hex(),
    }, indent=1).encode()


def check_format(raw: bytes) -> dict:
    try:
        outer = json.loads(raw)
        fmt, version = outer["format"], outer["version"]
    except (ValueError, KeyError, TypeError):
        raise RepositoryError("the repository's config object is not a backupctl config",
                              "is this URL a backupctl repository? restore 'config' from a copy if it was damaged") from None
    if fmt != FORMAT:
        raise RepositoryError(f"the repository has format {fmt!r}, not {FORMAT!r}", "point --repo at a backupctl repository")
    if version != FORMAT_VERSION:
        raise RepositoryError(f"the repository has format version {version}, this backupctl reads version {FORMAT_VERSION}",
                              "upgrade backupctl to a release that supports it")
    return outer


def decode_config(raw: bytes, key: MasterKey) -> RepoConfig:
    outer = check_format(raw)
    try:
        data = bytes.fromhex(outer["data"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("the repository's config is malformed", "restore 'config' from a copy") from None
    return RepoConfig(**json.loads(key.decrypt(data, _AAD, "config")))
