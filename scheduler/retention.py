"""The scheduled retention sweep (job id ``retention-sweep``, hourly by default).

The job function is ``scheduler.jobs.run_retention_sweep`` (one run at a time across
schedulers, by lease); what it does is ``backupctl.retention.sweep.sweep`` on the catalogue,
wired in ``scheduler.catalog.retention_sweep``. This module only names the defaults.
"""

DEFAULT_SWEEP_CRON = "23 * * * *"
DEFAULT_SWEEP_TIMEZONE = "UTC"
