"""Retention: which backups a policy keeps (``policy``), how periods are written (``period``),
and the sweep that applies a decision to the catalogue and the repository (``sweep``)."""

from backupctl.retention.period import format_period, parse_period
from backupctl.retention.policy import (
    BackupRecord,
    BackupType,
    Decision,
    RetentionRules,
    decide,
    log_runs,
    restorable_ids,
)

__all__ = ["BackupRecord", "BackupType", "Decision", "RetentionRules", "decide", "format_period", "log_runs",
           "parse_period", "restorable_ids"]
