"""S3 and S3-compatible object stores through boto3.

URL: ``s3://bucket/prefix?endpoint=http://host:port&region=us-east-1&path_style=true&sse=AES256``.
Credentials come from the usual AWS chain (environment, profile, instance role); the
endpoint may also come from ``AWS_ENDPOINT_URL``. Requests retry with backoff (botocore's
adaptive mode); large objects go up in multipart parts.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

from backupctl.errors import StorageError, UsageError

MULTIPART_THRESHOLD = 64 * 1024 * 1024


class S3Store:
    def __init__(self, url: str) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.url = url
        parts = urlsplit(url)
        if not parts.netloc:
            raise UsageError(f"S3 URL {url!r} names no bucket", "write it as s3://bucket/prefix")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        if self.prefix:
            self.prefix += "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        endpoint = query.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(
            retries={"max_attempts": 10, "mode": "adaptive"},
            s3={"addressing_style": "path" if query.get("path_style", "true") == "true" else "virtual"},
            max_pool_connections=16,
        )
        self._extra = {}
        if query.get("sse"):
            self._extra["ServerSideEncryption"] = query["sse"]
        if query.get("storage_class"):
            self._extra["StorageClass"] = query["storage_class"]
        self._client = boto3.session.Session(profile_name=query.get("profile")).client(
            "s3", endpoint_url=endpoint, region_name=query.get("region") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=config)
        self._transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=16 * 1024 * 1024)
        self._errors = self._client.exceptions

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _fail(self, action: str, name: str, exc: Exception) -> StorageError:
        return StorageError(f"S3 {action} of {self.bucket}/{self._key(name)} failed: {exc}",
                            "check the endpoint, bucket and AWS credentials")

    def _is_missing(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("NoSuchKey", "404", "NotFound")

    def put(self, name: str, data: bytes | memoryview) -> None:
        try:
            if len(data) < MULTIPART_THRESHOLD:
                self._client.put_object(Bucket=self.bucket, Key=self._key(name), Body=bytes(data), **self._extra)
            else:
                self._client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(name),
                                            ExtraArgs=self._extra or None, Config=self._transfer)
        except Exception as exc:  # botocore raises many unrelated types
            raise self._fail("upload", name, exc) from exc

    def get(self, name: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except Exception as exc:
            if self._is_missing(exc):
                raise FileNotFoundError(name) from exc
            raise self._fail("download", name, exc) from exc

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=self._key(name),
                                           Range=f"bytes={offset}-{offset + length - 1}")
            return resp["Body"].read()
        except Exception as exc:
            if self._is_missing(exc):
                raise FileNotFoundError(name) from exc
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code == "InvalidRange":
                return b""
            raise self._fail("ranged download", name, exc) from exc

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):], obj["Size"]
        except Exception as exc:
            raise self._fail("listing", prefix, exc) from exc

    def delete(self, name: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            if not self._is_missing(exc):
                raise self._fail("delete", name, exc) from exc

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
            return True
        except FileNotFoundError:
            return False

    def size(self, name: str) -> int:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._key(name))["ContentLength"]
        except Exception as exc:
            if self._is_missing(exc):
                raise FileNotFoundError(name) from exc
            raise self._fail("stat", name, exc) from exc

    def check_writable(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise StorageError(f"S3 bucket {self.bucket!r} is not reachable: {exc}",
                               "create the bucket first, or check endpoint and credentials") from exc

    def close(self) -> None:
        self._client.close()
