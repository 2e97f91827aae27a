"""The scheduler: policies' cron schedules as APScheduler jobs stored in the catalogue database.

``service.BackupScheduler`` runs it; ``sync`` turns policies into jobs; ``executor`` claims each
fire time so that several schedulers sharing a catalogue run it once; ``jobs`` holds what the
jobs call, each backup under the lease of its cluster and method (``backupctl.services.leases``,
the same lease a manual ``backup create`` takes); ``catalog`` wires it to the catalogue's
policies and backup service; ``retention`` is the sweep job.

Its tables (``scheduler_runs``, ``scheduler_leases``) belong to the catalogue's schema and its
migrations; APScheduler's job store keeps ``apscheduler_jobs`` itself.
"""
