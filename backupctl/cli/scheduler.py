"""``backupctl scheduler run``: the scheduler in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading

import click

from backupctl.catalog.db import get_engine


@click.group("scheduler")
def command() -> None:
    """Run scheduled backups and retention sweeps from the policies in the catalogue."""


@command.command("run")
@click.option("--sync-interval", default=30.0, show_default=True, metavar="SECONDS",
              help="How often policies are re-read (changes to policies change the jobs).")
@click.option("--sweep-cron", default="23 * * * *", show_default=True, metavar="CRON",
              help="When the retention sweep runs (UTC); '' for never.")
@click.option("--misfire-grace", type=int, default=None, metavar="SECONDS",
              help="Skip a missed run later than this; default: always run one catch-up.")
def run(sync_interval: float, sweep_cron: str, misfire_grace: int | None) -> None:
    """Run the scheduler in the foreground. Several may share one PostgreSQL catalogue."""
    from scheduler import catalog
    from scheduler.service import BackupScheduler, SchedulerConfig
    from backupctl.cron import cron_trigger

    if sweep_cron:
        cron_trigger(sweep_cron)  # a bad one is one clear line before anything starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler.executors.local").setLevel(logging.WARNING)  # the policy re-sync, every few s
    engine = get_engine()
    config = SchedulerConfig(engine=engine, list_schedules=lambda: catalog.list_schedules(engine),
                             run_backup=lambda req: catalog.run_backup(engine, req),
                             sweep=lambda: catalog.retention_sweep(engine), sweep_cron=sweep_cron or None,
                             sync_interval=sync_interval, misfire_grace_time=misfire_grace)
    sched = BackupScheduler(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    report = sched.start()
    click.echo(f"scheduler {config.owner}: {len(report.added) + len(report.updated) + len(report.unchanged)} "
               f"backup job(s); Ctrl-C to stop", err=True)
    for job_id, why in report.invalid.items():
        click.echo(f"warning: {job_id} not scheduled: {why}", err=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping: waiting for running jobs to finish", err=True)
        sched.shutdown(wait=True)
