"""Progress reporting for long work. The core calls a Progress; the CLI decides how to show it."""

from __future__ import annotations

import threading
import time


class Progress:
    """Counts work; subclasses render it. Thread-safe: workers and scanners report concurrently."""

    # Whether anyone shows the totals: only then is a tree walked ahead of a backup for the ETA.
    shows_totals = False

    def __init__(self) -> None:
        self.total_bytes = 0
        self.total_files = 0
        self.total_known = False
        self.done_bytes = 0
        self.done_files = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def add_total(self, nbytes: int, files: int = 0) -> None:
        with self._lock:
            self.total_bytes += nbytes
            self.total_files += files

    def total_complete(self) -> None:
        self.total_known = True

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.done_bytes += nbytes
            self.done_files += files
        self.refresh()

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
