"""Blob store for recordings: S3 (versioned bucket, server-side encryption) or a local directory."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)


class BlobStoreError(Exception):
    """The blob store failed; nothing is known to be written."""


class BlobMissing(BlobStoreError):
    """The store answered: there is no such blob (not an outage; asking again will not help)."""


@dataclass(frozen=True)
class StoredBlob:
    key: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class BlobRemoval:
    bytes: int
    versions: int


@dataclass(frozen=True)
class PartialsSweep:
    """Names (relative to the store's root) of the ``.partial`` files removed, and of those that
    could not be."""

    removed: list[str]
    failed: list[str]


class BlobStore(Protocol):
    def put(self, key: str, data: bytes) -> StoredBlob: ...

    def put_file(self, key: str, source: IO[bytes]) -> StoredBlob:
        """Stores what ``source`` holds from its current position, a part at a time, hashing
        it on the way: an upload of any size costs one part of memory."""
        ...

    def get(self, key: str) -> bytes: ...

    def delete_all_versions(self, key: str) -> BlobRemoval:
        """Remove every stored copy of ``key``; says how much was removed."""
        ...

    def check(self) -> str:
        """Raises BlobStoreError when the store cannot be used; else says what it is."""
        ...


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_part(source: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at the end (a pipe or socket may answer short)."""
    parts: list[bytes] = []
    wanted = size
    while wanted > 0:
        chunk = source.read(wanted)
        if not chunk:
            break
        parts.append(chunk)
        wanted -= len(chunk)
    return b"".join(parts)


class LocalBlobStore:
    chunk_bytes = 1024 * 1024

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise BlobStoreError(f"blob key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> StoredBlob:
        path = self._path(key)
        partial = path.with_suffix(".partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            partial.replace(path)
        except OSError as exc:
            partial.unlink(missing_ok=True)  # never leave a stray copy of a recording behind
            raise BlobStoreError(f"cannot write blob {key}: {exc}") from exc
        return StoredBlob(key, sha256_hex(data), len(data))

    def put_file(self, key: str, source: IO[bytes]) -> StoredBlob:
        path = self._path(key)
        partial = path.with_suffix(".partial")
        digest = hashlib.sha256()
        size = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as out:
                while chunk := source.read(self.chunk_bytes):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            partial.replace(path)
        except BaseException as exc:
            partial.unlink(missing_ok=True)  # never leave a stray copy of a recording behind
            if isinstance(exc, OSError):
                raise BlobStoreError(f"cannot write blob {key}: {exc}") from exc
            raise
        return StoredBlob(key, digest.hexdigest(), size)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobMissing(f"no blob {key}") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {key}: {exc}") from exc

    def check(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise BlobStoreError(f"blob directory {self.root} is missing or read-only")
        return f"local directory {self.root}"

    def delete_all_versions(self, key: str) -> BlobRemoval:
        path = self._path(key)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return BlobRemoval(0, 0)
        except OSError as exc:
            raise BlobStoreError(f"cannot delete blob {key}: {exc}") from exc
        return BlobRemoval(size, 1)

    def remove_stale_partials(self, changed_before: float) -> PartialsSweep:
        """Deletes the ``.partial`` files that a write killed mid-way left behind, last changed
        before ``changed_before`` (a POSIX time; a write under way keeps changing its own)."""
        removed: list[str] = []
        failed: list[str] = []
        for partial in sorted(self.root.rglob("*.partial")):
            name = partial.relative_to(self.root).as_posix()
            try:
                if partial.is_symlink() or not partial.is_file():
                    continue
                if partial.stat().st_mtime >= changed_before:
                    continue
                partial.unlink()
            except FileNotFoundError:
                continue  # its write finished (renamed) or failed (removed) meanwhile
            except OSError:
                logger.exception("could not remove the stale partial write %s", name)
                failed.append(name)
                continue
            removed.append(name)
        return PartialsSweep(removed, failed)


class S3BlobStore:
    # S3 takes parts of at least 5 MiB (but the last); one part is all put_file holds.
    part_bytes = 8 * 1024 * 1024

    def __init__(
        self, client: Any, bucket: str, sse: str = "AES256", kms_key_id: str | None = None
    ):
        self.client = client
        self.bucket = bucket
        self.sse = sse
        self.kms_key_id = kms_key_id

    def ensure_bucket(self) -> None:
        """Create the bucket if missing and switch versioning on (never Object Lock)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self.client.create_bucket(Bucket=self.bucket)
            self.client.put_bucket_versioning(
                Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
            )
        except (BotoCoreError, ClientError) as exc:
            # A store that times out on first use is an outage like any other call's.
            raise BlobStoreError(f"cannot set up bucket {self.bucket}: {exc}") from exc

    def _encryption(self) -> dict[str, str]:
        extra = {"ServerSideEncryption": self.sse}
        if self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        return extra

    def put(self, key: str, data: bytes) -> StoredBlob:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = sha256_hex(data)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                Metadata={"sha256": digest},
                **self._encryption(),
            )
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"cannot write blob {key}: {exc}") from exc
        return StoredBlob(key, digest, len(data))

    def put_file(self, key: str, source: IO[bytes]) -> StoredBlob:
        """One part or less is one PUT (with its sha256 metadata, as ``put``); more is a
        multipart upload, aborted when a part fails so that no partial object remains. A
        multipart object carries no sha256 metadata (that is fixed before the first part);
        the digest returned here is what the caller keeps."""
        from botocore.exceptions import BotoCoreError, ClientError

        part = _read_part(source, self.part_bytes)
        if len(part) < self.part_bytes:
            return self.put(key, part)
        digest = hashlib.sha256()
        size = 0
        try:
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **self._encryption()
            )["UploadId"]
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"cannot write blob {key}: {exc}") from exc
        try:
            done: list[dict[str, Any]] = []
            while part:
                digest.update(part)
                size += len(part)
                number = len(done) + 1
                answer = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
                )
                done.append({"ETag": answer["ETag"], "PartNumber": number})
                part = _read_part(source, self.part_bytes)
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
        except BaseException as exc:
            # Whatever stopped it (the store, or reading the source), no parts are left behind.
            self._abort(key, upload_id)
            if isinstance(exc, BotoCoreError | ClientError):
                raise BlobStoreError(f"cannot write blob {key}: {exc}") from exc
            raise
        return StoredBlob(key, digest.hexdigest(), size)

    def _abort(self, key: str, upload_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError):
            # Its parts stay, invisible to reads, until a bucket lifecycle rule for incomplete
            # multipart uploads (the operator's) removes them.
            logger.exception("could not abort the multipart upload of %s", key)

    def check(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"bucket {self.bucket} is not reachable: {exc}") from exc
        return f"s3 bucket {self.bucket}"

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobMissing(f"no blob {key}") from exc
            raise BlobStoreError(f"cannot read blob {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobStoreError(f"cannot read blob {key}: {exc}") from exc

    def delete_all_versions(self, key: str) -> BlobRemoval:
        """Delete every object version and delete marker of exactly ``key``."""
        from botocore.exceptions import BotoCoreError, ClientError

        removed = versions = 0
        try:
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
                entries = [v for v in page.get("Versions", []) if v["Key"] == key]
                markers = [m for m in page.get("DeleteMarkers", []) if m["Key"] == key]
                for entry in entries + markers:
                    self.client.delete_object(
                        Bucket=self.bucket, Key=key, VersionId=entry["VersionId"]
                    )
                removed += sum(int(v.get("Size", 0)) for v in entries)
                versions += len(entries) + len(markers)
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreError(f"cannot delete blob {key}: {exc}") from exc
        return BlobRemoval(removed, versions)


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL,
        region_name=settings.S3_REGION,
        # Bounded: a hanging S3 turns into a BlobStoreError (503), not a request stuck for minutes.
        config=Config(
            retries={"max_attempts": settings.S3_MAX_ATTEMPTS, "mode": "standard"},
            connect_timeout=settings.S3_CONNECT_TIMEOUT_S,
            read_timeout=settings.S3_READ_TIMEOUT_S,
        ),
    )


@cache
def get_blob_store() -> BlobStore:
    if settings.BLOB_STORE == "s3":
        store = S3BlobStore(
            s3_client(), settings.S3_BUCKET, settings.S3_SSE, settings.S3_SSE_KMS_KEY_ID
        )
        store.ensure_bucket()
        return store
    return LocalBlobStore(Path(settings.BLOB_LOCAL_DIR))
