"""Shared fixtures: fast key derivation, a real S3 endpoint (moto's server over HTTP), repository URLs."""

from __future__ import annotations

import os
import uuid

import pytest

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch):
    # scrypt at N=2^15 costs ~0.1 s per open; tests open repositories hundreds of times.
    monkeypatch.setenv("BACKUPCTL_KDF_N", "1024")
    monkeypatch.setenv("BACKUPCTL_PASSWORD", PASSWORD)
    for var in ("BACKUPCTL_REPO", "BACKUPCTL_PASSWORD_FILE", "BACKUPCTL_PASSWORD_COMMAND"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1: boto3 talks real HTTP to it, nothing is patched."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="backupctl-test")
    return "backupctl-test"


@pytest.fixture(params=["fs", "s3"])
def repo_url(request, tmp_path):
    """A fresh repository location on each backend."""
    if request.param == "fs":
        return str(tmp_path / "repo")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/{uuid.uuid4().hex}?endpoint={endpoint}"


@pytest.fixture
def fs_repo_url(tmp_path):
    return str(tmp_path / "repo")
