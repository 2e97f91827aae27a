"""Allocator tuning for the data path.

Chunks, compressed blobs and decrypted blobs are around 1 MiB each. glibc serves blocks that
size with fresh mmap()s, and on this kind of machine touching fresh pages costs more than
the data processing (a restore spent 4.7 s in the kernel for 1.4 GB). Keeping such blocks
on the heap lets them be reused; buffers are pooled elsewhere so the heap stays bounded.

glibc also gives threads arenas of their own, up to 8 per CPU: a restore's dozen threads each
kept their own freed blocks, so memory freed by one was not reused by the next (RSS 200-260 MiB
and ~80,000 page faults for the benchmark's restore). As many arenas as CPUs: 150-170 MiB and
~50,000.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator(mmap_threshold: int = 16 * 1024 * 1024, trim_threshold: int = 64 * 1024 * 1024,
                   arenas: int | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds and cap its arenas (default: one per CPU, at least two);
    a no-op (False) on other C libraries."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    arenas = arenas or max(2, os.cpu_count() or 2)
    return all([mallopt(_M_MMAP_THRESHOLD, mmap_threshold), mallopt(_M_TRIM_THRESHOLD, trim_threshold),
                mallopt(_M_ARENA_MAX, arenas)])
