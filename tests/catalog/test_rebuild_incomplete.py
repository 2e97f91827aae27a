"""An incomplete backup (a member snapshot gone) is not brought back by 'catalog rebuild', and leaves
nothing of itself in the catalogue (its organisation was created before the check; from a review)."""

from __future__ import annotations

import io

from sqlalchemy import select

from backupctl.catalog.db import session_scope
from backupctl.catalog.manifest import K_MEMBERS, BackupManifest, snapshot_metadata
from backupctl.catalog.models import Organisation
from backupctl.repository import Repository
from backupctl.repository.backup import backup_stream
from backupctl.services.rebuild import rebuild_from_repository
from backupctl.services.repositories import add_repository
from tests.catalog.conftest import PASSWORD


def test_an_incomplete_backup_leaves_no_organisation_behind(tmp_path) -> None:
    url = str(tmp_path / "repo")
    Repository.init(url, PASSWORD).close()
    meta = snapshot_metadata(BackupManifest(backup="ghost-b1", org="ghost", cluster="c", engine="postgresql",
                                            method="physical", type="full"))
    meta[K_MEMBERS] = ["0" * 64]                          # its data snapshot was forgotten
    with Repository.open(url, PASSWORD) as repo:
        backup_stream(repo, io.BytesIO(b"label"), "backup_label", metadata=meta)
    with session_scope() as s:
        row = add_repository(s, name="r", url=url)
        with Repository.open(url, PASSWORD) as repo:
            report = rebuild_from_repository(s, repo, row)
        assert report.incomplete == ["ghost-b1"] and report.created == []
        assert s.scalar(select(Organisation).where(Organisation.name == "ghost")) is None
