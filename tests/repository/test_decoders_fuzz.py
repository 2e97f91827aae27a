"""Every decoder of repository objects rejects arbitrary bytes with a project error, never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupctl.errors import BackupctlError
from backupctl.repository.config import check_format
from backupctl.repository.crypto import MasterKey
from backupctl.repository.index import decode_index
from backupctl.repository.key import KeySlot
from backupctl.repository.pack import parse_header
from backupctl.repository.tree import Node, parse_lines

KEY = MasterKey.generate()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_pack_header_decoder(data):
    with pytest.raises(BackupctlError):
        parse_header(KEY, b"\0" * 32, data, len(data))


@FUZZ
@given(st.binary(max_size=4096))
def test_sealed_object_decoder(data):
    with pytest.raises(BackupctlError):
        KEY.decrypt(data, b"aad", "object")


@FUZZ
@given(st.binary(max_size=4096))
def test_index_decoder(data):
    import zstandard

    for candidate in (data, zstandard.ZstdCompressor().compress(b"BCIDX1\n" + data)):
        try:
            decode_index(candidate, "index/x")
        except BackupctlError:
            pass


@FUZZ
@given(st.binary(max_size=2048))
def test_config_decoder(data):
    with pytest.raises(BackupctlError):
        check_format(data)


@FUZZ
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8), st.none()), max_size=6))
def test_key_slot_decoder(d):
    with pytest.raises(BackupctlError):
        KeySlot.from_json("abcd", json.dumps(d).encode())


@FUZZ
@given(st.binary(max_size=2048))
def test_tree_decoder(data):
    try:
        nodes = list(parse_lines([data]))
    except BackupctlError:
        return
    assert all(isinstance(n, Node) for n in nodes)
