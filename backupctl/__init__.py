"""backupctl: a backup center for databases."""

__version__ = "0.1.0"
