"""`backup create` end to end with the volume engine tool and a real repository, then `catalog rebuild`."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

from backupctl.catalog import db
from backupctl.repository import Repository
from backupctl.repository.restore import restore_snapshot
from engine_tools import registry
from engine_tools.volume import VolumeTool
from tests.catalog.conftest import PASSWORD


def _setup(run, repo_path: Path, data_dir: Path) -> None:
    run("repo", "add", "main", "--url", str(repo_path), "--default")
    run("cluster", "register", "pg", "--engine", "postgresql", "--host", "127.0.0.1", "--port", "5432",
        "--data-dir", str(data_dir))


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_volume_plugin_is_found_through_the_entry_point_group() -> None:
    tools = registry.load_tools()
    assert any(isinstance(t, VolumeTool) for t in tools)
    resolved = registry.resolve_method("mysql", None)
    assert resolved.spec.name == "volume"


def test_backup_create_records_a_completed_backup_whose_snapshot_restores_byte_for_byte(
        run, repo_path: Path, data_dir: Path, tmp_path: Path) -> None:
    _setup(run, repo_path, data_dir)
    b = json.loads(run("backup", "create", "--cluster", "pg", "--method", "volume", "--json").stdout)
    assert b["phase"] == "Completed"
    assert (b["cluster"], b["engine"], b["method"], b["type"], b["repository"]) == \
        ("pg", "postgresql", "volume", "full", "main")
    expected_size = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    assert b["logical_size"] == expected_size
    assert b["bytes_added"] > 0
    assert b["started_at"] <= b["completed_at"]
    assert b["restorable_from"] == b["restorable_to"]
    assert len(b["snapshot_ids"]) == 1
    with Repository.open(str(repo_path), PASSWORD) as repo:
        snap = repo.find_snapshot(b["snapshot_ids"][0])
        assert snap.metadata["backup"] == b["name"]
        assert (snap.metadata["cluster"], snap.metadata["engine"], snap.metadata["method"],
                snap.metadata["type"]) == ("pg", "postgresql", "volume", "full")
        restore_snapshot(repo, snap, str(tmp_path / "restored"))
    assert _same_tree(data_dir, tmp_path / "restored")
    listed = json.loads(run("backup", "list", "--json").stdout)
    assert [x["name"] for x in listed] == [b["name"]]


def test_backup_delete_forgets_the_repository_snapshot(run, repo_path: Path, data_dir: Path) -> None:
    _setup(run, repo_path, data_dir)
    b = json.loads(run("backup", "create", "--cluster", "pg", "--method", "volume", "--json").stdout)
    run("backup", "delete", b["name"])
    with Repository.open(str(repo_path), PASSWORD) as repo:
        assert repo.snapshots() == []
    assert json.loads(run("backup", "list", "--json").stdout) == []


def test_backup_without_any_repository_is_one_clear_line(run, data_dir: Path) -> None:
    run("cluster", "register", "pg", "--engine", "postgresql", "--host", "h", "--port", "5432",
        "--data-dir", str(data_dir))
    line = run.fails("backup", "create", "--cluster", "pg", "--method", "volume")
    assert line == ("error: no repository to back up cluster pg into (pass --repo NAME, set one on its policy, or "
                    "add a default one with 'backupctl repo add NAME --url URL --default')")


def test_the_policy_repository_is_used_before_the_default_one(run, repo_path: Path, data_dir: Path,
                                                              tmp_path: Path) -> None:
    _setup(run, repo_path, data_dir)
    other = tmp_path / "other-repo"
    Repository.init(str(other), PASSWORD).close()
    run("repo", "add", "other", "--url", str(other))
    run("policy", "create", "p", "--cluster", "pg", "--repo", "other", "--schedule", "volume=0 3 * * *")
    b = json.loads(run("backup", "create", "--cluster", "pg", "--method", "volume", "--json").stdout)
    assert b["repository"] == "other"
    b = json.loads(run("backup", "create", "--cluster", "pg", "--method", "volume", "--repo", "main", "--json").stdout)
    assert b["repository"] == "main"


def test_incremental_with_a_full_only_method_is_one_clear_line(run, repo_path: Path, data_dir: Path) -> None:
    _setup(run, repo_path, data_dir)
    line = run.fails("backup", "create", "--cluster", "pg", "--method", "volume", "--type", "incremental")
    assert line == "error: method volume cannot take incremental backups of postgresql (it can: full)"


def test_cluster_without_data_dir_cannot_use_the_volume_method(run, repo_path: Path) -> None:
    run("repo", "add", "main", "--url", str(repo_path), "--default")
    run("cluster", "register", "r", "--engine", "redis", "--host", "h", "--port", "6379")
    line = run.fails("backup", "create", "--cluster", "r", "--method", "volume")
    assert line.startswith("error: cluster r has no data directory, so the volume method cannot back it up")


def test_wrong_repository_password_fails_before_recording_anything(run, repo_path: Path, data_dir: Path,
                                                                   monkeypatch) -> None:
    _setup(run, repo_path, data_dir)
    monkeypatch.setenv("BACKUPCTL_PASSWORD", "wrong")
    run.fails("backup", "create", "--cluster", "pg", "--method", "volume")
    assert json.loads(run("backup", "list", "--json").stdout) == []


def test_a_failing_engine_tool_leaves_a_failed_backup_with_its_error(run, repo_path: Path, data_dir: Path,
                                                                     monkeypatch) -> None:
    _setup(run, repo_path, data_dir)

    def broken(self, repo, request):
        raise OSError("disk on fire")

    monkeypatch.setattr(VolumeTool, "backup", broken)
    line = run.fails("backup", "create", "--cluster", "pg", "--method", "volume")
    assert line.startswith("error: backup pg-volume-") and "failed: OSError: disk on fire" in line
    [b] = json.loads(run("backup", "list", "--json").stdout)
    assert (b["phase"], b["error_message"], b["snapshot_ids"]) == ("Failed", "disk on fire", [])


def test_catalog_rebuild_recreates_backups_from_the_repository(run, repo_path: Path, data_dir: Path,
                                                                backupctl_env: Path) -> None:
    _setup(run, repo_path, data_dir)
    first = json.loads(run("backup", "create", "--cluster", "pg", "--method", "volume", "--json").stdout)
    (data_dir / "base" / "1" / "new").write_bytes(b"x" * 5000)
    second = json.loads(run("backup", "create", "--cluster", "pg", "--method", "volume", "--json").stdout)
    # a plain snapshot without catalogue metadata is ignored
    from backupctl.repository.backup import backup_paths

    with Repository.open(str(repo_path), PASSWORD) as repo:
        backup_paths(repo, [str(data_dir / "PG_VERSION")])

    db.dispose_engines()
    (backupctl_env / "catalog.db").unlink()            # the catalogue is lost
    for extra in backupctl_env.glob("catalog.db-*"):
        extra.unlink()

    out = json.loads(run("catalog", "rebuild", "--repo", str(repo_path), "--json").stdout)
    assert sorted(out["created"]) == sorted([first["name"], second["name"]])
    assert out["ignored_snapshots"] == 1
    assert out["repository"] == "repo"
    rebuilt = {b["name"]: b for b in json.loads(run("backup", "list", "--json").stdout)}
    for original in (first, second):
        got = rebuilt[original["name"]]
        for key in ("cluster", "engine", "method", "type", "phase", "snapshot_ids", "logical_size", "bytes_added",
                    "restorable_to", "organisation"):
            assert got[key] == original[key], key
        assert got["recycled"] is True          # its cluster is not registered in the new catalogue
    again = json.loads(run("catalog", "rebuild", "--repo", str(repo_path), "--json").stdout)
    assert again["created"] == [] and sorted(again["existing"]) == sorted(rebuilt)


def test_rebuild_restores_the_parent_chain_and_delete_then_respects_it(run, repo_path: Path, data_dir: Path) -> None:
    from backupctl.catalog.manifest import BackupManifest, snapshot_metadata
    from backupctl.repository.backup import backup_paths

    with Repository.open(str(repo_path), PASSWORD) as repo:
        for name, kind, parent in (("pg-full-1", "full", None), ("pg-inc-1", "incremental", "pg-full-1")):
            meta = snapshot_metadata(BackupManifest(backup=name, org="default", cluster="pg", engine="postgresql",
                                                    method="volume", type=kind, parent=parent,
                                                    positions={"lsn": f"0/{len(name)}000028"}))
            backup_paths(repo, [str(data_dir)], metadata=meta)
    run("repo", "add", "main", "--url", str(repo_path))
    out = json.loads(run("catalog", "rebuild", "--repo", str(repo_path), "--json").stdout)
    assert out["created"] == ["pg-full-1", "pg-inc-1"] and out["missing_parents"] == []
    inc = json.loads(run("backup", "show", "pg-inc-1", "--json").stdout)
    assert (inc["parent"], inc["type"], inc["positions"], inc["repository"]) == \
        ("pg-full-1", "incremental", {"lsn": "0/8000028"}, "main")
    line = run.fails("backup", "delete", "pg-full-1")
    assert "pg-inc-1 depend(s) on it" in line


def test_an_incremental_builds_on_a_backup_in_its_own_repository_only(run, chain_tool, repo_path: Path,
                                                                        data_dir: Path, tmp_path: Path) -> None:
    """A chain never spans repositories: each repository must restore what it holds on its own."""
    other = tmp_path / "other"
    Repository.init(str(other), PASSWORD).close()
    run("repo", "add", "main", "--url", str(repo_path), "--default")
    run("repo", "add", "offsite", "--url", str(other))
    run("cluster", "register", "pg", "--engine", "postgresql", "--host", "127.0.0.1", "--port", "5432",
        "--data-dir", str(data_dir))
    full = json.loads(run("backup", "create", "--cluster", "pg", "--method", "pgfiles", "--json").stdout)
    line = run.fails("backup", "create", "--cluster", "pg", "--method", "pgfiles", "--type", "incremental",
                     "--repo", "offsite")
    assert line == ("error: cluster pg has no completed pgfiles backup in repository offsite to base an "
                    "incremental on (take a full backup there first (--type full))")
    inc = json.loads(run("backup", "create", "--cluster", "pg", "--method", "pgfiles", "--type", "incremental",
                         "--json").stdout)
    assert inc["parent"] == full["name"] and inc["repository"] == "main"
    offsite_full = json.loads(run("backup", "create", "--cluster", "pg", "--method", "pgfiles", "--repo", "offsite",
                                  "--json").stdout)
    later = json.loads(run("backup", "create", "--cluster", "pg", "--method", "pgfiles", "--type", "incremental",
                           "--json").stdout)
    assert later["parent"] == inc["name"] and later["parent"] != offsite_full["name"]
