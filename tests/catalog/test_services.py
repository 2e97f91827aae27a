"""The service layer over the catalogue, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.models import (
    PHASE_COMPLETED,
    AuditEvent,
    Backup,
    BackupPolicy,
    Environment,
    Organisation,
    Role,
    User,
)
from backupctl.errors import BackupctlError, NotFoundError, UsageError
from backupctl.services import backups, clusters, policies, repositories
from backupctl.services.policies import ScheduleSpec


def _backup(session: Session, cluster_name: str, name: str, *, parent: Backup | None = None,
            type: str = "full", minutes: int = 0, protected: bool = False) -> Backup:
    cluster = clusters.get_cluster(session, cluster_name)
    at = datetime(2024, 5, 1, 3, 0, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    b = Backup(name=name, organisation=cluster.organisation, cluster=cluster, cluster_name=cluster.name,
               engine=cluster.engine, method="volume", type=type, parent=parent, phase=PHASE_COMPLETED,
               started_at=at, completed_at=at + timedelta(seconds=30), repository_name="main",
               deletion_protection=protected, positions={"lsn": "0/3000060"})
    session.add(b)
    session.flush()
    return b


def test_a_registered_cluster_is_stored_without_any_secret(session: Session) -> None:
    c = clusters.register_cluster(session, name="pg-main", engine="postgresql", host="db1", port=5432,
                                  user="backup", password_env="PGPASSWORD", data_dir="/var/lib/pg", org="acme")
    session.commit()
    got = clusters.get_cluster(session, "pg-main", "acme")
    assert got.id == c.id
    assert (got.engine, got.host, got.port, got.user, got.password_env) == ("postgresql", "db1", 5432, "backup",
                                                                            "PGPASSWORD")
    assert got.environment.name == "local"
    assert got.created_at.tzinfo is not None
    assert [x.name for x in clusters.list_clusters(session, "acme")] == ["pg-main"]
    assert clusters.list_clusters(session, "default") == []      # another organisation sees nothing
    assert session.scalar(select(AuditEvent.action).where(AuditEvent.object == "cluster/pg-main")) == \
        "cluster.register"


def test_password_env_must_be_a_variable_name_not_a_secret(session: Session) -> None:
    with pytest.raises(UsageError, match="name of an environment variable"):
        clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=1,
                                  password_env="s3cr3t pass!")


def test_unknown_engine_is_refused_naming_the_known_ones(session: Session) -> None:
    with pytest.raises(UsageError) as err:
        clusters.register_cluster(session, name="o", engine="oracle", host="h", port=1521)
    assert "unknown engine 'oracle'" in err.value.message
    assert "postgresql, mysql, redis" in err.value.hint


def test_two_live_clusters_cannot_share_a_name_but_an_unregistered_name_is_free(session: Session) -> None:
    clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=1)
    with pytest.raises(UsageError, match="already registered"):
        clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=1)
    clusters.unregister_cluster(session, "pg", None, keep=None)
    again = clusters.register_cluster(session, name="pg", engine="mysql", host="h2", port=3306)
    session.commit()
    assert clusters.get_cluster(session, "pg").id == again.id
    assert [c.engine for c in clusters.list_clusters(session, include_deleted=True)] == ["postgresql", "mysql"]


def test_repository_rows_name_the_password_source_and_one_default_per_organisation(session: Session,
                                                                                    tmp_path) -> None:
    a = repositories.add_repository(session, name="nas", url=str(tmp_path / "a"), default=True)
    b = repositories.add_repository(session, name="s3", url="s3://bucket/prefix", default=True, orgs=["acme"],
                                    password_env="S3_REPO_PASSWORD")
    session.commit()
    assert (a.is_default, b.is_default) == (True, True)        # acme's own, and the one open to all
    assert repositories.repository_to_dict(b)["password_source"] == {"kind": "env", "value": "S3_REPO_PASSWORD"}
    assert repositories.repository_to_dict(a)["password_source"] == {"kind": "env", "value": "BACKUPCTL_PASSWORD"}
    default_org = session.scalar(select(Organisation).where(Organisation.name == "default"))
    acme = session.scalar(select(Organisation).where(Organisation.name == "acme"))
    assert repositories.default_repository(session, acme).name == "s3"
    assert repositories.default_repository(session, default_org).name == "nas"   # s3 is acme's only
    assert [r.name for r in repositories.list_repositories(session, "default")] == ["nas"]
    assert a.url == str(tmp_path / "a")
    c = repositories.add_repository(session, name="nas2", url=str(tmp_path / "c"), default=True)
    session.commit()
    assert (a.is_default, b.is_default, c.is_default) == (False, True, True)   # replaces the one open to all


def test_policy_with_schedules_per_method_round_trips(session: Session) -> None:
    clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=5432, data_dir="/d")
    repositories.add_repository(session, name="main", url="/srv/repo")
    policies.create_policy(session, name="pg-daily", cluster="pg", repository="main",
                           schedules=[ScheduleSpec("volume", "0 3 * * *", timezone="Europe/Paris",
                                                   retention_period="30d12h")],
                           retention={"keep_last": 7, "pitr_window": "7d"})
    session.commit()
    p = policies.get_policy(session, "pg-daily")
    d = policies.policy_to_dict(p)
    assert d["backup_methods"] == ["volume"]
    assert d["repository"] == "main"
    assert d["retention"] == {"keep_last": 7, "pitr_window": "7d"}
    assert d["schedules"] == [{"backup_method": "volume", "backup_type": "full", "cron_expression": "0 3 * * *",
                               "timezone": "Europe/Paris",
                               "enabled": True, "retention_period": "30d12h"}]
    policies.update_policy(session, "pg-daily", disable=["volume"], retention={"keep_daily": 14})
    session.commit()
    d = policies.policy_to_dict(policies.get_policy(session, "pg-daily"))
    assert d["schedules"][0]["enabled"] is False
    assert d["retention"] == {"keep_last": 7, "pitr_window": "7d", "keep_daily": 14}
    policies.delete_policy(session, "pg-daily")
    session.commit()
    assert session.scalars(select(BackupPolicy)).all() == []


@pytest.mark.parametrize("cron, reason", [("0 3 * *", "4 field(s), expected 5"),
                                          ("61 * * * *", "higher than the maximum"),
                                          ("@daily", "1 field(s)")])
def test_invalid_cron_is_refused(session: Session, cron: str, reason: str) -> None:
    clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=5432)
    with pytest.raises(UsageError, match="invalid cron expression") as err:
        policies.create_policy(session, name="p", cluster="pg", schedules=[ScheduleSpec("volume", cron)])
    assert reason in err.value.message


def test_unknown_method_for_the_engine_is_refused_listing_known_methods(session: Session) -> None:
    clusters.register_cluster(session, name="r", engine="redis", host="h", port=6379)
    with pytest.raises(UsageError) as err:
        policies.create_policy(session, name="p", cluster="r", schedules=[ScheduleSpec("xtrabackup", "0 3 * * *")])
    assert err.value.message == "unknown backup method 'xtrabackup' for engine redis"
    assert "volume" in err.value.hint


def test_unknown_time_zone_and_bad_retention_period_are_refused(session: Session) -> None:
    clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=5432)
    with pytest.raises(UsageError, match="unknown time zone 'Mars/Base'"):
        policies.create_policy(session, name="p", cluster="pg",
                               schedules=[ScheduleSpec("volume", "0 3 * * *", timezone="Mars/Base")])
    with pytest.raises(UsageError, match="invalid retention period '7 days'"):
        policies.create_policy(session, name="p", cluster="pg",
                               schedules=[ScheduleSpec("volume", "0 3 * * *", retention_period="7 days")])


def test_protected_backup_cannot_be_deleted(session: Session) -> None:
    clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=5432)
    b = _backup(session, "pg", "b1", protected=True)
    with pytest.raises(BackupctlError, match="deletion protection on"):
        backups.delete_backup(session, b)
    backups.set_deletion_protection(session, "b1", None, False)
    backups.delete_backup(session, b)
    session.commit()
    assert backups.list_backups(session) == []


def test_a_backup_another_depends_on_cannot_be_deleted(session: Session) -> None:
    clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=5432)
    full = _backup(session, "pg", "full-1")
    inc = _backup(session, "pg", "inc-1", parent=full, type="incremental", minutes=60)
    with pytest.raises(BackupctlError) as err:
        backups.delete_backup(session, full)
    assert "inc-1 depend(s) on it" in err.value.message
    backups.delete_backup(session, inc)
    backups.delete_backup(session, full)
    session.commit()
    assert backups.list_backups(session) == []


def test_unregister_keep_latest_keeps_the_latest_chain_in_the_recycle_bin(session: Session) -> None:
    clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=5432)
    old = _backup(session, "pg", "old-full")
    full = _backup(session, "pg", "full", minutes=100)
    _backup(session, "pg", "inc", parent=full, type="incremental", minutes=200)
    with pytest.raises(UsageError, match="has 3 backup"):
        clusters.unregister_cluster(session, "pg", None, keep=None)
    result = clusters.unregister_cluster(session, "pg", None, keep="latest")
    session.commit()
    assert sorted(result.kept) == ["full", "inc"]
    assert result.deleted == [old.name]
    left = backups.list_backups(session, cluster="pg")
    assert [(b.name, b.recycled) for b in left] == [("full", True), ("inc", True)]
    assert left[1].parent.name == "full"
    with pytest.raises(NotFoundError):
        clusters.get_cluster(session, "pg")


def test_protected_cluster_cannot_be_unregistered(session: Session) -> None:
    clusters.register_cluster(session, name="pg", engine="postgresql", host="h", port=5432,
                              deletion_protection=True)
    with pytest.raises(BackupctlError, match="deletion protection on"):
        clusters.unregister_cluster(session, "pg", None, keep="all")


def test_users_roles_and_environments_are_plain_rows(session: Session) -> None:
    org = session.scalar(select(Organisation).where(Organisation.name == "default"))
    user = User(name="alice", email="alice@example.com", roles=[Role(organisation=org, role="auditor")])
    session.add_all([user, Environment(name="k8s-prod", kind="kubernetes", config={"context": "prod"})])
    session.commit()
    got = session.scalar(select(User).where(User.name == "alice"))
    assert [(r.organisation.name, r.role) for r in got.roles] == [("default", "auditor")]
    env = session.scalar(select(Environment).where(Environment.name == "k8s-prod"))
    assert env.config == {"context": "prod"}
