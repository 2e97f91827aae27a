"""A backup taken at a terminal shows a progress bar, then one summary line with the file count."""

from __future__ import annotations

import os
import re

from tests.engines.postgresql.conftest import BACKUPCTL
from tests.helpers import run_on_terminal


def test_backup_create_on_a_terminal_shows_a_bar_then_files_size_and_speed(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g")
    code, shown, out = run_on_terminal(["runuser", "-u", "postgres", "--", BACKUPCTL, "backup", "create",
                                        "--cluster", "src"], env.env)
    assert code == 0, shown
    assert "backup src" in shown and "ETA" in shown and "files" in shown, shown       # the bar, drawn
    summary = out.decode()
    m = re.match(r"backup (\S+) Completed: (\d+) files, [\d.]+ MiB read, .* added to repository main, "
                 r"[\d.]+ s \([\d.]+ [KMG]iB/s\)\n$", summary)
    assert m, summary
    files = sum(len(fs) for d, _, fs in os.walk(src.data) if "pg_wal" not in d)
    assert abs(int(m[2]) - files) <= 10, (m[2], files)   # the data directory's files but WAL (and a few others)
