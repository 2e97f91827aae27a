"""The allocator tuning every command starts with (backupctl/memory.py)."""

from __future__ import annotations

from backupctl.memory import tune_allocator


def test_every_setting_is_accepted_by_glibc():
    # mallopt returns 0 for an option or a value glibc does not take: a wrong constant shows here
    assert tune_allocator() is True
    assert tune_allocator(arenas=1) is True
