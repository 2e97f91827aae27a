"""An APScheduler executor that claims each (job, fire time) before running it.

APScheduler 3 does not stop two schedulers sharing one job store from both running a due job.
This executor inserts a row into ``scheduler_runs`` first; the unique constraint on
(job id, fire time) lets exactly one scheduler win, the others skip. The outcome (succeeded,
failed, skipped) is written back to the row.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from apscheduler.events import EVENT_JOB_ERROR
from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from sqlalchemy import Engine

from scheduler.claims import claim_run, finish_run
from scheduler.context import Runtime, Skipped, current_fire_time, current_runtime

log = logging.getLogger(__name__)


class ClaimingExecutor(ThreadPoolExecutor):
    def __init__(self, runtime: Runtime, max_workers: int = 8) -> None:
        super().__init__(max_workers)
        self.runtime = runtime

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    def _do_submit_job(self, job, run_times):  # noqa: ANN001 - APScheduler's signature
        def callback(f) -> None:  # noqa: ANN001
            exc = f.exception()
            if exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, f.result())

        f = self._pool.submit(self._run_claimed, job, job._jobstore_alias, run_times, self._logger.name)
        f.add_done_callback(callback)

    def _run_claimed(self, job, alias: str, run_times: list[datetime], logger_name: str) -> list:  # noqa: ANN001
        events = []
        for run_time in run_times:
            late = datetime.now(timezone.utc) - run_time
            if job.misfire_grace_time is not None and late > timedelta(seconds=job.misfire_grace_time):
                events += run_job(job, alias, [run_time], logger_name)  # reports it as missed
                continue
            if not claim_run(self.engine, job.id, run_time, self.runtime.owner):
                log.info("job %s at %s already claimed by another scheduler", job.id, run_time.isoformat())
                continue
            rt_token = current_runtime.set(self.runtime)
            ft_token = current_fire_time.set(run_time)
            try:
                outcome = run_job(job, alias, [run_time], logger_name)
            finally:
                current_fire_time.reset(ft_token)
                current_runtime.reset(rt_token)
            event = outcome[-1]
            if event.code == EVENT_JOB_ERROR:
                status, detail = "failed", f"{type(event.exception).__name__}: {event.exception}"
            elif isinstance(getattr(event, "retval", None), Skipped):
                status, detail = "skipped", event.retval.reason
            else:
                retval = getattr(event, "retval", None)
                status, detail = "succeeded", None if retval is None else str(retval)[:2000]
            finish_run(self.engine, job.id, run_time, status, detail)
            events += outcome
        return events
