"""The repository CLI: the flows of the README, stable --json, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess

from tests.helpers import make_tree, tree_digest


def run(*args: str, input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["backupctl", *args], input=input, capture_output=True,
                          env={**os.environ, **(env or {})})


def test_readme_flow_with_json(tmp_path):
    repo = str(tmp_path / "repo")
    src = make_tree(tmp_path / "src")
    env = {"BACKUPCTL_REPO": repo}
    assert run("repo", "init", "--json", env=env).returncode == 0
    created = run("snapshot", "create", "--tag", "nightly", str(src), "--json", env=env)
    assert created.returncode == 0, created.stderr
    snap = json.loads(created.stdout)
    assert set(snap) == {"id", "time", "parent", "tags", "summary"}
    assert snap["tags"] == ["nightly"]
    for key in ("files_new", "bytes_read", "bytes_added", "duration", "throughput"):
        assert key in snap["summary"]

    listed = json.loads(run("snapshot", "list", "--json", env=env).stdout)
    assert [s["id"] for s in listed] == [snap["id"]]
    assert run("snapshot", "list", "--tag", "other", "--json", env=env).stdout.strip() == b"[]"

    shown = json.loads(run("snapshot", "show", snap["id"][:8], "--files", "--json", env=env).stdout)
    assert any(e["path"] == "large.bin" and e["size"] == (src / "large.bin").stat().st_size for e in shown["entries"])

    restored = run("snapshot", "restore", "latest", str(tmp_path / "out"), "--json", env=env)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["bytes_restored"] == snap["summary"]["bytes_total"]
    assert tree_digest(tmp_path / "out") == tree_digest(src)

    check = json.loads(run("repo", "check", "--read-data", "--json", env=env).stdout)
    assert check["ok"] and check["snapshots"] == 1 and check["packs_read"] == check["packs"]
    stats = json.loads(run("repo", "stats", "--json", env=env).stdout)
    assert stats["logical_bytes"] == snap["summary"]["bytes_total"] and stats["stored_bytes"] > 0

    forgotten = run("snapshot", "forget", snap["id"][:8], env=env)
    assert forgotten.returncode == 0
    gc = json.loads(run("repo", "gc", "--json", env=env).stdout)
    assert gc["packs_deleted"] >= 1
    assert json.loads(run("repo", "stats", "--json", env=env).stdout)["stored_bytes"] == 0


def test_stdin_backup_and_restore_to_stdout(tmp_path):
    repo = str(tmp_path / "repo")
    env = {"BACKUPCTL_REPO": repo}
    run("repo", "init", env=env)
    payload = os.urandom(3 * 1024 * 1024) + b"tail"
    created = run("snapshot", "create", "--stdin-name", "db.dump", "-", input=payload, env=env)
    assert created.returncode == 0, created.stderr
    assert b"added to the repository" in created.stdout
    out = run("snapshot", "restore", "latest", "-", env=env)
    assert out.returncode == 0 and out.stdout == payload


def test_password_file_and_command(tmp_path):
    repo = str(tmp_path / "repo")
    pw = tmp_path / "pw"
    pw.write_text("from a file\n")
    env = {"BACKUPCTL_REPO": repo, "BACKUPCTL_PASSWORD": ""}
    assert run("repo", "init", "--password-file", str(pw), env=env).returncode == 0
    assert run("snapshot", "list", "--password-command", f"cat {pw}", env=env).returncode == 0
    assert run("snapshot", "list", "--password-file", str(pw), env=env).returncode == 0


def test_errors_are_one_line_with_advice(tmp_path):
    repo = str(tmp_path / "repo")
    env = {"BACKUPCTL_REPO": repo}
    cases = [
        (("snapshot", "list"), 1, "no repository at"),
    ]
    run("repo", "init", env=env) if False else None
    for args, code, text in cases:
        r = run(*args, env=env)
        assert r.returncode == code and text.encode() in r.stderr
    run("repo", "init", env=env)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    run("snapshot", "create", str(tmp_path / "busy"), env=env)
    for args, code, text in [
        (("repo", "init"), 1, "already exists"),
        (("snapshot", "create", str(tmp_path / "missing")), 2, "does not exist"),
        (("snapshot", "show", "deadbeef"), 1, "no snapshot 'deadbeef'"),
        (("snapshot", "restore", "latest", str(tmp_path / "busy")), 2, "is not empty"),
        (("repo", "check", "--read-data-subset", "abc"), 2, "is not a percentage"),
        (("snapshot", "list"), 2, "no password given"),
    ]:
        r = run(*args, env={**env, "BACKUPCTL_PASSWORD": ""} if text == "no password given" else env)
        assert r.returncode == code, (args, r.stderr)
        assert text.encode() in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and b"Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "busy" / "x").read_text() == "x"   # the refused restore touched nothing
    no_repo = run("snapshot", "list", env={"BACKUPCTL_REPO": ""})
    assert no_repo.returncode == 2 and b"--repo" in no_repo.stderr


def test_on_a_terminal_long_work_shows_a_progress_bar_then_a_summary(tmp_path):
    from tests.helpers import run_on_terminal, write_random

    write_random(tmp_path / "src" / "big.bin", 64 * 1024 * 1024, seed=3)
    repo = str(tmp_path / "repo")
    env = {"BACKUPCTL_PASSWORD": "pw"}
    assert run("repo", "init", "--repo", repo, env=env).returncode == 0
    code, text, out = run_on_terminal(["backupctl", "snapshot", "create", "--repo", repo, str(tmp_path / "src")], env)
    assert code == 0
    assert "backup" in text and "files" in text and "ETA" in text and "MB" in text    # the bar, drawn
    assert b"snapshot" in out and b"saved" in out and b"added to the repository" in out  # the summary
