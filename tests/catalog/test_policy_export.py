"""`policy export` emits KubeBlocks BackupPolicy and BackupSchedule objects that validate against the CRDs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

CRDS = Path(__file__).resolve().parents[3] / "shared" / "kubeblocks-crds"


def _schema(kind_file: str, version: str = "v1alpha1") -> dict:
    crd = yaml.safe_load((CRDS / kind_file).read_text())
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)


@pytest.fixture
def exported(run) -> list[dict]:
    run("cluster", "register", "pg", "--engine", "postgresql", "--host", "db1", "--port", "5432",
        "--data-dir", "/var/lib/pg")
    run("repo", "add", "main", "--url", "/srv/backups")
    run("policy", "create", "pg-policy", "--cluster", "pg", "--repo", "main", "--schedule", "volume=0 3 * * *",
        "--timezone", "Europe/Paris", "--retention-period", "30d12h")
    return list(yaml.safe_load_all(run("policy", "export", "pg-policy", "--namespace", "prod").stdout))


def test_export_is_a_backup_policy_and_a_backup_schedule_that_validate(exported: list[dict]) -> None:
    assert CRDS.is_dir()
    policy, schedule = exported
    jsonschema.validate(policy, _schema("dataprotection.kubeblocks.io_backuppolicies.yaml"))
    jsonschema.validate(schedule, _schema("dataprotection.kubeblocks.io_backupschedules.yaml"))
    assert (policy["apiVersion"], policy["kind"]) == ("dataprotection.kubeblocks.io/v1alpha1", "BackupPolicy")
    assert policy["metadata"]["name"] == "pg-policy" and policy["metadata"]["namespace"] == "prod"
    assert policy["spec"]["backupRepoName"] == "main"
    assert policy["spec"]["backupMethods"] == [{"name": "volume", "snapshotVolumes": True}]
    assert schedule["kind"] == "BackupSchedule"
    assert schedule["spec"]["backupPolicyName"] == "pg-policy"
    assert schedule["spec"]["schedules"] == [{"name": "volume", "backupMethod": "volume",
                                              "cronExpression": "CRON_TZ=Europe/Paris 0 3 * * *", "enabled": True,
                                              "retentionPeriod": "30d12h"}]


def test_the_schemas_really_reject_a_broken_export(exported: list[dict]) -> None:
    policy, schedule = json.loads(json.dumps(exported))
    del schedule["spec"]["schedules"][0]["cronExpression"]
    with pytest.raises(jsonschema.ValidationError, match="cronExpression"):
        jsonschema.validate(schedule, _schema("dataprotection.kubeblocks.io_backupschedules.yaml"))
    policy["spec"]["backupMethods"][0]["snapshotVolumes"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(policy, _schema("dataprotection.kubeblocks.io_backuppolicies.yaml"))
