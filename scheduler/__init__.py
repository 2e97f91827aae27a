"""The scheduler: policies' cron schedules as APScheduler jobs stored in the catalogue database.

``service.BackupScheduler`` runs it; ``sync`` turns policies into jobs; ``executor`` claims each
fire time so that several schedulers sharing a catalogue run it once; ``lease`` keeps runs of
one cluster and method from overlapping; ``jobs`` holds what the jobs call; ``catalog`` wires
it to the catalogue's policies and backup service; ``retention`` is the sweep job.
"""
