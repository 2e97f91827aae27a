"""The catalogue: what backupctl knows about organisations, clusters, repositories, policies and backups.

``db`` opens it (SQLite under $BACKUPCTL_HOME by default, PostgreSQL via
BACKUPCTL_DATABASE_URL) and applies migrations; ``models`` holds the tables;
``manifest`` defines the keys a backup writes into its repository snapshots so the
catalogue can be rebuilt from the repository alone (see README.md).
"""
