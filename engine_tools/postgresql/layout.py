"""What a PostgreSQL data directory holds that a physical backup leaves out, and how the plugin
marks its snapshots. Shared by backup and restore (without the server driver restore has no use for)."""

ENGINE_KEY = "postgresql"          # snapshot metadata key of this plugin
# Top-level entries of a data directory never copied (pg_basebackup's list); the directories are
# recreated empty at restore.
EXCLUDED = frozenset({"pg_wal", "pg_xlog", "postmaster.pid", "postmaster.opts", "pg_replslot", "pg_dynshmem",
                      "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans", "backup_label",
                      "backup_label.old", "tablespace_map", "tablespace_map.old", "recovery.signal",
                      "standby.signal", "recovery.done", "backupctl-restore.log"})
EMPTY_DIRS = ("pg_wal", "pg_wal/archive_status", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial",
              "pg_snapshots", "pg_stat_tmp", "pg_subtrans", "pg_tblspc")
CONTROL_FILE = "global/pg_control"
