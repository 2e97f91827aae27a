"""Policies become jobs, jobs fire on the real clock, changes to policies change the jobs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from apscheduler.triggers.cron import CronTrigger

from scheduler.claims import recorded_runs
from scheduler.jobs import run_policy_backup
from scheduler.sync import PolicySchedule

UTC = timezone.utc


def policy(pid=1, cluster="pg1", method="basebackup", cron="0 3 * * *", tz="UTC", enabled=True):
    return PolicySchedule(policy_id=pid, cluster=cluster, method=method, cron=cron, timezone=tz, enabled=enabled,
                          org="acme")


def test_a_due_policy_job_runs_the_backup_and_records_the_run(sqlite_engine, make_scheduler, recorder):
    # a cron that cannot come due by itself during the test: only the forced run fires
    s = make_scheduler(sqlite_engine, [policy(cron="0 0 1 1 *", tz="Asia/Shanghai")], run_backup=recorder)
    s.start()
    job = s.aps.get_job("backup:1:basebackup:full")
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    job.modify(next_run_time=due)  # the cron time has come (instead of waiting up to a minute)
    assert recorder.wait_for(lambda: len(recorder.calls) == 1)
    call = recorder.calls[0]
    assert (call.policy_id, call.org, call.cluster, call.method) == (1, "acme", "pg1", "basebackup")
    assert call.fire_time == due
    nxt = s.aps.get_job("backup:1:basebackup:full").next_run_time
    assert nxt > due and nxt.second == 0 and nxt.microsecond == 0
    s.shutdown()
    [run] = recorded_runs(sqlite_engine, "backup:1:basebackup:full")
    assert run["status"] == "succeeded" and run["detail"] == "backup of pg1" and run["owner"] == s.config.owner


def test_jobs_fire_repeatedly_on_the_real_clock(sqlite_engine, make_scheduler, recorder):
    s = make_scheduler(sqlite_engine, run_backup=recorder)
    s.start()
    s.aps.add_job(run_policy_backup, CronTrigger(second="*", timezone="Asia/Shanghai"),
                  args=(9, None, "pg9", "m", "full"), id="backup:9:m:full")
    assert recorder.wait_for(lambda: len(recorder.calls) >= 3, timeout=10)
    times = [c.fire_time for c in recorder.calls[:3]]
    assert times == sorted(set(times))
    assert all(t.microsecond == 0 for t in times)


def test_sync_adds_changes_and_removes_jobs(sqlite_engine, make_scheduler):
    s = make_scheduler(sqlite_engine, [policy(1), policy(2, cluster="pg2", cron="30 1 * * *", tz="Asia/Shanghai")])
    report = s.start()
    assert sorted(report.added) == ["backup:1:basebackup:full", "backup:2:basebackup:full"]
    first_next = s.aps.get_job("backup:1:basebackup:full").next_run_time
    assert s.aps.get_job("backup:2:basebackup:full").next_run_time.astimezone(UTC).hour == 17  # 01:30 +08:00

    s.schedules["schedules"] = [policy(1), policy(2, cluster="pg2", cron="45 2 * * *", tz="UTC"),
                                policy(3, enabled=False)]
    report = s.sync()
    assert report.updated == ["backup:2:basebackup:full"] and report.unchanged == ["backup:1:basebackup:full"]
    assert report.added == [] and report.removed == []
    assert s.aps.get_job("backup:1:basebackup:full").next_run_time == first_next
    job2 = s.aps.get_job("backup:2:basebackup:full")
    assert (job2.next_run_time.hour, job2.next_run_time.minute) == (2, 45)

    s.schedules["schedules"] = [policy(2, cluster="pg2", cron="45 2 * * *", tz="UTC", enabled=False)]
    report = s.sync()
    assert sorted(report.removed) == ["backup:1:basebackup:full", "backup:2:basebackup:full"]
    assert s.aps.get_jobs(jobstore="default") == []


def test_an_invalid_schedule_is_reported_and_does_not_stop_the_others(sqlite_engine, make_scheduler):
    s = make_scheduler(sqlite_engine, [policy(1), policy(2, cron="0 3 * *")])
    report = s.start()
    assert report.added == ["backup:1:basebackup:full"]
    assert report.invalid["backup:2:basebackup:full"].startswith("invalid cron expression '0 3 * *'")


def test_jobs_persist_across_a_restart(sqlite_engine, make_scheduler):
    s = make_scheduler(sqlite_engine, [policy(1, cron="0 4 * * *", tz="Asia/Shanghai")])
    s.start()
    before = s.aps.get_job("backup:1:basebackup:full").next_run_time
    s.shutdown()
    again = make_scheduler(sqlite_engine, [policy(1, cron="0 4 * * *", tz="Asia/Shanghai")])
    report = again.start()
    assert report.unchanged == ["backup:1:basebackup:full"] and report.added == []
    assert again.aps.get_job("backup:1:basebackup:full").next_run_time == before
