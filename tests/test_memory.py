"""The allocator tuning every command starts with (backupctl/memory.py)."""

from __future__ import annotations

import subprocess
import sys


def test_every_setting_is_accepted_by_glibc():
    # mallopt returns 0 for an option or a value glibc does not take: a wrong constant shows here.
    # In a process of its own: the test run keeps glibc's defaults.
    code = "from backupctl.memory import tune_allocator; print(tune_allocator(), tune_allocator(arenas=1))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
