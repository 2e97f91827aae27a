"""Rendering Progress on a terminal: a rich bar with bytes, rate and ETA; silent when not a TTY."""

from __future__ import annotations

import sys

from backupctl.progress import Progress


class TerminalProgress(Progress):
    def __init__(self, description: str, enabled: bool | None = None) -> None:
        super().__init__()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.shows_totals = self.enabled
        self._bar = None
        if self.enabled:
            # rich only when a bar shows: scripts and --json runs start ~40 ms sooner
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress as RichBar, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)

            self._bar = RichBar(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                TextColumn("{task.fields[files]} files"),
                                console=Console(stderr=True), transient=True, refresh_per_second=5)
            self._task = self._bar.add_task(description, total=None, files=0)
            self._bar.start()

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done_bytes, files=self.done_files,
                             total=max(self.total_bytes, self.done_bytes) if self.total_known else None)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "TerminalProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
