"""``backupctl repo set``: a repository's password source (and the default flag) changed in place.

Before, the only way to point a repository at a moved password file, or from an environment
variable to a secret manager's command, was to remove it from the catalogue and add it again,
which its backups' rows name."""

from __future__ import annotations

import json

from sqlalchemy import select

from backupctl.catalog.db import session_scope
from backupctl.catalog.models import AuditEvent
from backupctl.repository import Repository
from backupctl.services.organisations import get_organisation
from backupctl.services.repositories import default_repository
from tests.catalog.conftest import PASSWORD


def sources(run) -> dict[str, tuple[dict, bool]]:
    return {r["name"]: (r["password_source"], r["default"]) for r in json.loads(run("repo", "list", "--json").stdout)}


def test_the_password_source_moves_once_the_new_one_opens_the_repository(run, tmp_path, monkeypatch) -> None:
    run("repo", "add", "nas", "--url", str(tmp_path / "nas"))
    Repository.open(str(tmp_path / "nas"), PASSWORD).close()
    pw = tmp_path / "nas-password"
    pw.write_text(PASSWORD + "\n")
    out = run("repo", "set", "nas", "--password-file", str(pw)).stdout
    assert out.strip() == f"repository nas: password from file:{pw}"
    monkeypatch.delenv("BACKUPCTL_PASSWORD")                          # the old source is no longer read
    assert sources(run)["nas"] == ({"kind": "file", "value": str(pw)}, False)
    listed = json.loads(run("repo", "set", "nas", "--password-command", f"cat {pw}", "--json").stdout)
    assert listed["password_source"] == {"kind": "command", "value": f"cat {pw}"}
    assert audit_actions().count("repository.set") == 2


def test_a_source_that_does_not_open_it_changes_nothing(run, tmp_path, monkeypatch) -> None:
    run("repo", "add", "nas", "--url", str(tmp_path / "nas"))
    before = sources(run)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password")
    line = run.fails("repo", "set", "nas", "--password-file", str(wrong))
    assert line.startswith("error: wrong password")
    monkeypatch.setenv("UNSET_PW_VAR", "")
    monkeypatch.delenv("UNSET_PW_VAR")
    line = run.fails("repo", "set", "nas", "--password-env", "UNSET_PW_VAR")
    assert "UNSET_PW_VAR" in line
    assert sources(run) == before
    assert "repository.set" not in audit_actions()


def audit_actions() -> list[str]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEvent.action)))


def test_default_and_bad_input(run, tmp_path) -> None:
    run("repo", "add", "a", "--url", str(tmp_path / "a"), "--default")
    run("repo", "add", "b", "--url", str(tmp_path / "b"))
    run("repo", "set", "b", "--default")
    assert {n: d for n, (_s, d) in sources(run).items()} == {"a": False, "b": True}
    assert run.fails("repo", "set", "b") == ("error: nothing to change on repository b (give --password-env, "
                                             "--password-file, --password-command or --default)")
    assert run.fails("repo", "set", "b", "--password-env", "X", "--password-file", "/f") == \
        "error: --password-env and --password-file both name a password source (give one of them)"
    assert run.fails("repo", "set", "nope", "--default").startswith("error: no repository 'nope' in the catalogue")


def test_a_default_for_one_organisation_does_not_take_another_organisations_default(run, tmp_path) -> None:
    run("repo", "add", "shared", "--url", str(tmp_path / "shared"), "--default")
    run("repo", "add", "acme-only", "--url", str(tmp_path / "acme"), "--org", "acme")
    run("repo", "add", "other-only", "--url", str(tmp_path / "other"), "--org", "other")
    with session_scope() as s:
        assert default_repository(s, get_organisation(s, "other")).name == "shared"
    run("repo", "set", "acme-only", "--default")
    with session_scope() as s:
        assert default_repository(s, get_organisation(s, "acme")).name == "acme-only"
        # organisation 'other' cannot use acme-only: it keeps the default open to all (from a review)
        got = default_repository(s, get_organisation(s, "other"))
        assert got is not None and got.name == "shared"
