"""The catalogue commands through `backupctl` (click's CliRunner on backupctl.cli.cli)."""

from __future__ import annotations

import json

from backupctl.catalog.db import session_scope
from backupctl.catalog.models import PHASE_COMPLETED, Backup
from backupctl.services.clusters import get_cluster


def _register(run, name="pg", engine="postgresql", *extra: str):
    return run("cluster", "register", name, "--engine", engine, "--host", "db1", "--port", "5432", *extra)


def test_cluster_register_list_show_unregister(run) -> None:
    out = _register(run, "pg", "postgresql", "--user", "backup", "--password-env", "PGPASSWORD").stdout
    assert out.strip() == "registered cluster pg (postgresql at db1:5432) in organisation default"
    _register(run, "cache", "redis")
    listed = json.loads(run("cluster", "list", "--json").stdout)
    assert [(c["name"], c["engine"], c["port"]) for c in listed] == [("cache", "redis", 5432),
                                                                     ("pg", "postgresql", 5432)]
    shown = json.loads(run("cluster", "show", "pg", "--json").stdout)
    assert shown["password_env"] == "PGPASSWORD"
    assert shown["user"] == "backup"
    assert set(shown) == {"name", "engine", "version", "topology", "organisation", "environment", "host", "port",
                          "user", "password_env", "data_dir", "deletion_protection", "created_at", "deleted_at"}
    table = run("cluster", "list").stdout
    assert "pg" in table and "redis" in table
    assert run("cluster", "unregister", "cache").stdout.startswith("unregistered cluster cache")
    assert [c["name"] for c in json.loads(run("cluster", "list", "--json").stdout)] == ["pg"]
    assert [c["name"] for c in json.loads(run("cluster", "list", "--all", "--json").stdout)] == ["cache", "pg"]


def test_clusters_of_another_organisation_are_invisible(run) -> None:
    _register(run, "pg", "postgresql", "--org", "acme")
    assert json.loads(run("cluster", "list", "--json").stdout) == []
    assert [c["name"] for c in json.loads(run("cluster", "list", "--org", "acme", "--json").stdout)] == ["pg"]
    assert run.fails("cluster", "show", "pg") == \
        "error: no cluster 'pg' in organisation default (see 'backupctl cluster list', or register it with " \
        "'backupctl cluster register')"


def test_unknown_engine_is_one_clear_line(run) -> None:
    line = run.fails("cluster", "register", "o", "--engine", "oracle", "--host", "h", "--port", "1521")
    assert line == "error: unknown engine 'oracle' (choose one of: postgresql, mysql, redis)"


def test_policy_create_show_update_list_delete(run) -> None:
    _register(run, "pg", "postgresql", "--data-dir", "/var/lib/pg")
    run("repo", "add", "main", "--url", "/srv/backups")
    out = run("policy", "create", "pg-nightly", "--cluster", "pg", "--schedule", "volume=30 2 * * *",
              "--timezone", "Asia/Shanghai", "--repo", "main", "--keep-last", "7", "--pitr-window", "3d").stdout
    assert out.strip() == "created policy pg-nightly for cluster pg: 1 schedule(s)"
    d = json.loads(run("policy", "show", "pg-nightly", "--json").stdout)
    assert d["schedules"] == [{"backup_method": "volume", "backup_type": "full", "cron_expression": "30 2 * * *",
                               "timezone": "Asia/Shanghai", "enabled": True, "retention_period": "7d"}]
    assert d["retention"] == {"keep_last": 7, "pitr_window": "3d"}
    assert d["repository"] == "main"
    run("policy", "update", "pg-nightly", "--schedule", "volume=0 4 * * 0", "--disable", "volume",
        "--retention-period", "30d", "--keep-weekly", "4")
    d = json.loads(run("policy", "show", "pg-nightly", "--json").stdout)
    assert d["schedules"][0]["cron_expression"] == "0 4 * * 0"
    assert d["schedules"][0]["enabled"] is False
    assert d["schedules"][0]["retention_period"] == "30d"
    assert d["schedules"][0]["timezone"] == "Asia/Shanghai"
    assert d["retention"] == {"keep_last": 7, "pitr_window": "3d", "keep_weekly": 4}
    assert [p["name"] for p in json.loads(run("policy", "list", "--json").stdout)] == ["pg-nightly"]
    assert "volume: 0 4 * * 0 Asia/Shanghai (disabled)" in run("policy", "list").stdout
    run("policy", "delete", "pg-nightly")
    assert json.loads(run("policy", "list", "--json").stdout) == []


def test_invalid_cron_is_one_clear_line(run) -> None:
    _register(run)
    line = run.fails("policy", "create", "p", "--cluster", "pg", "--schedule", "volume=0 25 * * *")
    assert line.startswith("error: invalid cron expression '0 25 * * *': ")
    assert "(write minute hour day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 every day))" in line
    line = run.fails("policy", "create", "p", "--cluster", "pg", "--schedule", "volume=every day")
    assert line.startswith("error: invalid cron expression 'every day': 2 field(s), expected 5")


def test_unknown_method_for_the_engine_is_one_clear_line(run) -> None:
    _register(run, "r", "redis")
    line = run.fails("policy", "create", "p", "--cluster", "r", "--schedule", "pg_basebackup=0 3 * * *")
    assert line == "error: unknown backup method 'pg_basebackup' for engine redis (methods for redis: volume)"
    line = run.fails("backup", "create", "--cluster", "r", "--method", "pg_basebackup")
    assert line == "error: unknown backup method 'pg_basebackup' for engine redis (methods for redis: volume)"


def _add_backups(cluster: str, *specs: tuple[str, str | None, bool]) -> None:
    """Insert completed backups (name, parent name, protected) straight into the catalogue."""
    with session_scope() as s:
        c = get_cluster(s, cluster)
        made: dict[str, Backup] = {}
        for name, parent, protected in specs:
            b = Backup(name=name, organisation=c.organisation, cluster=c, cluster_name=c.name, engine=c.engine,
                       method="volume", type="incremental" if parent else "full", parent=made.get(parent),
                       phase=PHASE_COMPLETED, repository_name="main", deletion_protection=protected)
            s.add(b)
            s.flush()
            made[name] = b


def test_deleting_a_protected_backup_is_one_clear_line(run) -> None:
    _register(run)
    _add_backups("pg", ("b1", None, True))
    line = run.fails("backup", "delete", "b1")
    assert line == ("error: backup b1 has deletion protection on "
                    "(turn it off first with 'backupctl backup unprotect b1')")
    run("backup", "unprotect", "b1")
    run("backup", "delete", "b1")
    assert json.loads(run("backup", "list", "--json").stdout) == []


def test_deleting_a_backup_another_depends_on_is_one_clear_line(run) -> None:
    _register(run)
    _add_backups("pg", ("full", None, False), ("inc", "full", False))
    line = run.fails("backup", "delete", "full")
    assert line == ("error: backup full cannot be deleted: inc depend(s) on it (an incremental needs its parent "
                    "to restore) (delete the dependent backups first, or let retention remove the whole chain)")
    shown = json.loads(run("backup", "show", "inc", "--json").stdout)
    assert shown["parent"] == "full"
    assert shown["type"] == "incremental"


def test_unregister_asks_what_to_do_with_backups(run) -> None:
    _register(run)
    _add_backups("pg", ("full", None, False), ("inc", "full", False))
    line = run.fails("cluster", "unregister", "pg")
    assert line == ("error: cluster pg has 2 backup(s): say what to do with them (pass --keep latest, --keep all "
                    "or --keep none (kept ones go to the recycle bin))")
    out = json.loads(run("cluster", "unregister", "pg", "--keep", "all", "--json").stdout)
    assert out == {"cluster": "pg", "kept": ["full", "inc"], "deleted": [], "log_expiry": None,
                   "log_expiry_error": None}             # no repository holds logs of it
    recycled = json.loads(run("backup", "list", "--recycled", "--json").stdout)
    assert [(b["name"], b["recycled"], b["cluster"]) for b in recycled] == [("full", True, "pg"), ("inc", True, "pg")]


def test_repo_add_and_list(run, tmp_path) -> None:
    run("repo", "add", "nas", "--url", str(tmp_path / "nas"), "--default")
    run("repo", "add", "acme-s3", "--url", "s3://bucket/acme", "--org", "acme", "--password-env", "ACME_REPO_PW",
        "--no-connect")
    listed = json.loads(run("repo", "list", "--json").stdout)
    assert [(r["name"], r["default"], r["organisations"], r["password_source"]) for r in listed] == [
        ("acme-s3", False, ["acme"], {"kind": "env", "value": "ACME_REPO_PW"}),
        ("nas", True, [], {"kind": "env", "value": "BACKUPCTL_PASSWORD"}),
    ]
    line = run.fails("repo", "add", "nas", "--url", "/elsewhere")
    assert line == "error: a repository named nas is already in the catalogue (choose another name)"


def test_catalog_info_reports_the_head_revision(run, backupctl_env) -> None:
    info = json.loads(run("catalog", "info", "--json").stdout)
    assert info["revision"] == info["head"] == "0003"
    assert info["url"] == f"sqlite:///{backupctl_env / 'catalog.db'}"


def test_the_cli_works_on_postgresql(run, pg_url, monkeypatch) -> None:
    from tests.catalog.conftest import _reset_pg

    _reset_pg(pg_url)
    monkeypatch.setenv("BACKUPCTL_DATABASE_URL", pg_url)
    _register(run, "pg-on-pg")
    assert [c["name"] for c in json.loads(run("cluster", "list", "--json").stdout)] == ["pg-on-pg"]
    assert json.loads(run("catalog", "info", "--json").stdout)["url"].startswith("postgresql+psycopg://")


def test_repo_add_creates_a_new_repository_and_checks_the_password_of_an_existing_one(run, tmp_path,
                                                                                   monkeypatch) -> None:
    from backupctl.repository import Repository
    from tests.catalog.conftest import PASSWORD

    added = json.loads(run("repo", "add", "nas", "--url", str(tmp_path / "nas"), "--json").stdout)
    assert added["created"] is True
    Repository.open(str(tmp_path / "nas"), PASSWORD).close()           # a real repository, our password
    again = json.loads(run("repo", "add", "nas2", "--url", str(tmp_path / "nas"), "--json").stdout)
    assert again["created"] is False
    monkeypatch.setenv("OTHER_PW", "not the password")
    line = run.fails("repo", "add", "nas3", "--url", str(tmp_path / "nas"), "--password-env", "OTHER_PW")
    assert line.startswith("error: wrong password")
    names = [r["name"] for r in json.loads(run("repo", "list", "--json").stdout)]
    assert names == ["nas", "nas2"]                                     # the refused one was not recorded


def test_a_restore_ends_with_one_line_of_size_speed_duration_and_stages() -> None:
    from backupctl.cli.restore import _summary

    data = {"name": "pg-restore-1", "phase": "Completed", "target_dir": "/srv/pg-copy", "rto_seconds": 4.0,
            "stages": [{"name": "prepare_data", "seconds": 3.0, "details": {"bytes": 2 * 1024**3, "files": 980}},
                       {"name": "fetch_wal", "seconds": 0.5, "details": {"files": 3, "bytes": 48 * 1024**2}},
                       {"name": "configure_recovery", "seconds": 0.0, "details": {}},
                       {"name": "start", "seconds": 0.5, "details": {}}]}
    assert _summary(data) == ("restore pg-restore-1 Completed into /srv/pg-copy: 2.00 GiB in 980 files and 3 WAL "
                              "files (48.00 MiB), 4.0 s (512.00 MiB/s); stages: prepare_data 3.0 s, fetch_wal "
                              "0.5 s, configure_recovery 0.0 s, start 0.5 s")


def test_a_backup_ends_with_one_line_of_size_added_bytes_duration_and_speed() -> None:
    from backupctl.cli.backup import _summary

    data = {"name": "pg-full-1", "phase": "Completed", "logical_size": 3 * 1024**3, "bytes_added": 64 * 1024**2,
            "repository": "main", "started_at": "2026-11-28T10:00:00+00:00",
            "completed_at": "2026-11-28T10:00:06+00:00", "throughput": 512 * 1024**2}
    assert _summary(data) == ("backup pg-full-1 Completed: 3.00 GiB read, 64.00 MiB added to repository main, "
                              "6.0 s (512.00 MiB/s)")
    assert _summary(data, files=1234) == ("backup pg-full-1 Completed: 1234 files, 3.00 GiB read, 64.00 MiB added "
                                          "to repository main, 6.0 s (512.00 MiB/s)")


def test_show_prints_sizes_speeds_and_stages_for_a_person(capsys) -> None:
    """backup show printed raw byte counts, restore show a Python dict per stage."""
    from backupctl.cli.catalog_options import print_fields

    print_fields({"name": "r1", "logical_size": 3 * 1024**3, "throughput": 512 * 1024**2, "parent": None,
                  "snapshot_ids": ["a1", "b2"], "deletion_protection": False,
                  "stages": [{"name": "prepare_data", "seconds": 2.5, "details": {"files": 10, "bytes": 1536}},
                             {"name": "start", "seconds": 0.4, "details": {}}]})
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["name                 r1",
                     "logical_size         3.00 GiB",
                     "throughput           512.00 MiB/s",
                     "parent               -",
                     "snapshot_ids         a1; b2",
                     "deletion_protection  False",
                     "stages               name=prepare_data, seconds=2.5, details=(files=10, bytes=1.50 KiB); "
                     "name=start, seconds=0.4, details=-"]
