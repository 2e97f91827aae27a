"""No overlapping runs, missed runs coalesced into one, and one run per fire time with two
schedulers sharing a PostgreSQL catalogue."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone

from apscheduler.triggers.cron import CronTrigger

from backupctl.catalog.db import upgrade_to_head
from backupctl.services.leases import acquire, lease
from scheduler.claims import claim_run, recorded_runs
from scheduler.jobs import run_policy_backup
from scheduler.sync import PolicySchedule

UTC = timezone.utc


def every_second(s, pid, cluster="pg1", method="basebackup", backup_type="full"):
    s.aps.add_job(run_policy_backup, CronTrigger(second="*"), args=(pid, "acme", cluster, method, backup_type),
                  id=f"backup:{pid}:{method}:{backup_type}", coalesce=True, max_instances=1, misfire_grace_time=None)


def test_a_slow_backup_triggered_every_second_never_overlaps_itself(sqlite_engine, make_scheduler, slow_recorder):
    slow = slow_recorder
    s = make_scheduler(sqlite_engine, run_backup=slow)
    s.start()
    every_second(s, 1)
    assert slow.wait_for(lambda: len(slow.calls) >= 2 and slow.running == 0, timeout=15)
    s.shutdown()
    assert slow.max_running == 1


def test_two_policies_for_the_same_cluster_and_method_never_overlap(sqlite_engine, make_scheduler, slow_recorder):
    """Two jobs (so max_instances does not apply): only the database lease keeps them apart,
    the same lease that separates scheduler processes."""
    slow = slow_recorder
    s = make_scheduler(sqlite_engine, run_backup=slow)
    s.start()
    every_second(s, 1)
    every_second(s, 2)
    assert slow.wait_for(lambda: len(slow.calls) >= 2 and slow.running == 0, timeout=15)
    s.shutdown()
    assert slow.max_running == 1
    assert "skipped" in {r["status"] for r in recorded_runs(sqlite_engine)}


def test_a_backup_is_skipped_while_another_process_holds_its_lease(sqlite_engine, make_scheduler, recorder):
    s = make_scheduler(sqlite_engine, [PolicySchedule(1, "pg1", "basebackup", "0 0 1 1 *", org="acme")],
                       run_backup=recorder)
    s.start()
    with lease(sqlite_engine, "backup:acme/pg1:basebackup", "another-host:42", ttl=60) as held:
        assert held
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        s.aps.get_job("backup:1:basebackup:full").modify(next_run_time=due)
        deadline = time.monotonic() + 10
        while not [r for r in recorded_runs(sqlite_engine) if r["finished_at"]] and time.monotonic() < deadline:
            time.sleep(0.05)
    s.shutdown()
    [run] = recorded_runs(sqlite_engine)
    assert run["status"] == "skipped" and "still running" in run["detail"]
    assert recorder.calls == []


def test_an_expired_lease_is_taken_over(sqlite_engine):
    upgrade_to_head(sqlite_engine)
    with lease(sqlite_engine, "k", "dead-process", ttl=60) as held:
        assert held
        with lease(sqlite_engine, "k", "me", ttl=60) as second:
            assert not second
    assert acquire(sqlite_engine, "k2", "crashed", ttl=0.01)
    time.sleep(0.05)
    assert acquire(sqlite_engine, "k2", "me", ttl=60)
    assert not acquire(sqlite_engine, "k2", "someone-else", ttl=60)


def test_runs_missed_while_down_coalesce_into_one(sqlite_engine, make_scheduler, recorder):
    yearly = PolicySchedule(1, "pg1", "basebackup", "0 0 1 1 *", org="acme")
    s = make_scheduler(sqlite_engine, [yearly], run_backup=recorder)
    s.start()
    s.aps.pause()
    three_years_ago = datetime(datetime.now(UTC).year - 3, 1, 1, tzinfo=UTC)
    s.aps.get_job("backup:1:basebackup:full").modify(next_run_time=three_years_ago)
    s.shutdown()  # "down" with three yearly runs missed

    again = make_scheduler(sqlite_engine, [yearly], run_backup=recorder)
    again.start()
    assert recorder.wait_for(lambda: len(recorder.calls) >= 1)
    again.shutdown(wait=True)  # lets any further queued run finish
    assert len(recorder.calls) == 1
    assert recorder.calls[0].fire_time == datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)  # the latest missed
    assert len(recorded_runs(sqlite_engine)) == 1


def test_a_fire_time_is_claimed_once(pg_engines):
    a, b = pg_engines
    t = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)
    assert claim_run(a, "backup:1:m", t, "a")
    assert not claim_run(b, "backup:1:m", t, "b")
    assert not claim_run(b, "backup:1:m", t.astimezone(timezone(timedelta(hours=8))), "b")  # same instant
    assert claim_run(b, "backup:1:m", t + timedelta(minutes=1), "b")


def test_two_schedulers_sharing_postgresql_fire_each_job_once(pg_engines, make_scheduler, recorder):
    a, b = (make_scheduler(e, run_backup=recorder) for e in pg_engines)
    a.start()
    b.start()
    every_second(a, 1)  # both schedulers see the job in the shared job store
    b.aps.wakeup()
    assert recorder.wait_for(lambda: len(recorder.calls) >= 5, timeout=15)
    a.shutdown()
    b.shutdown()
    fire_times = Counter(c.fire_time for c in recorder.calls)
    assert max(fire_times.values()) == 1, fire_times
    owners = {r["owner"] for r in recorded_runs(pg_engines[0])}
    assert owners <= {a.config.owner, b.config.owner}
