"""Object storage with one interface for S3-compatible storage and the local filesystem.

Django's storage API covers save/open/delete/url; LoRA files also need ranged reads (the header
decides validity without downloading gigabytes), multipart uploads straight from the client, and
managed parallel downloads on the GPU worker. S3 does those natively; the local backend provides
the same protocol through signed, expiring app endpoints (see `lorasite.object_store_views`), so a
client has one code path for both.
"""

from __future__ import annotations

import hashlib
import mimetypes
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO

from django.conf import settings
from django.core import signing
from django.core.files.storage import storages
from django.urls import reverse

SIGNING_SALT = "lorasite.object_store"
COPY_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class PendingMultipart:
    key: str
    upload_id: str
    initiated: datetime


def sign_token(payload: dict, *, expires_in: int) -> str:
    return signing.dumps({**payload, "exp": int(time.time()) + expires_in}, salt=SIGNING_SALT, compress=True)


def unsign_token(token: str) -> dict:
    """The payload of a token made by `sign_token`; raises signing.BadSignature when forged or expired."""
    payload = signing.loads(token, salt=SIGNING_SALT)
    if payload.get("exp", 0) < time.time():
        raise signing.BadSignature("expired")
    return payload


class S3ObjectStore:
    def __init__(self, storage) -> None:
        self.storage = storage
        self.bucket = storage.bucket_name
        self.client = storage.connection.meta.client

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
        return response["Body"].read()

    def size(self, key: str) -> int:
        return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]

    def open_stream(self, key: str) -> BinaryIO:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]

    def save_file(self, key: str, path: str | Path) -> None:
        self.client.upload_file(str(path), self.bucket, key, Config=_transfer_config())

    def save_stream(self, key: str, stream: IO[bytes]) -> None:
        self.client.upload_fileobj(stream, self.bucket, key, Config=_transfer_config())

    def copy(self, source_key: str, key: str) -> None:
        # Server-side: the bytes never pass through this process.
        self.client.copy({"Bucket": self.bucket, "Key": source_key}, self.bucket, key, Config=_transfer_config())

    def download_to(self, key: str, path: str | Path) -> None:
        # Managed transfer: parallel ranged GETs for large objects.
        self.client.download_file(self.bucket, key, str(path), Config=_transfer_config())

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def exists(self, key: str) -> bool:
        return self.storage.exists(key)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield StoredObject(item["Key"], item["Size"], item["LastModified"])

    def download_url(self, key: str, *, filename: str, expires_in: int, inline: bool = False) -> str:
        params = {"Bucket": self.bucket, "Key": key, "ResponseContentDisposition": _disposition(filename, inline)}
        if inline:  # a browser plays or shows the object in place
            params["ResponseContentType"] = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)

    def multipart_create(self, key: str) -> str:
        return self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

    def multipart_part_url(
        self, key: str, upload_id: str, part_number: int, *, part_bytes: int, expires_in: int
    ) -> str:
        """A presigned PUT for one part whose signature covers its Content-Length (SigV4 signs the header):
        S3 refuses a body of any other length."""
        params = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": part_number}
        return self.client.generate_presigned_url(
            "upload_part", Params={**params, "ContentLength": part_bytes}, ExpiresIn=expires_in
        )

    def multipart_complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]},
        )

    def multipart_abort(self, key: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def multipart_pending(self) -> Iterator[PendingMultipart]:
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket):
            for item in page.get("Uploads", []):
                yield PendingMultipart(item["Key"], item["UploadId"], item["Initiated"])


class LocalObjectStore:
    def __init__(self, storage) -> None:
        self.storage = storage
        self.root = Path(storage.location)
        self.multipart_root = Path(settings.VAR_DIR) / "multipart"

    def _path(self, key: str) -> Path:
        return Path(self.storage.path(key))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        with open(self._path(key), "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def open_stream(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def save_file(self, key: str, path: str | Path) -> None:
        with open(path, "rb") as source:
            self.save_stream(key, source)

    def save_stream(self, key: str, stream: IO[bytes]) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            with open(partial, "wb") as out:
                shutil.copyfileobj(stream, out, COPY_CHUNK)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)

    def copy(self, source_key: str, key: str) -> None:
        with open(self._path(source_key), "rb") as source:
            self.save_stream(key, source)

    def download_to(self, key: str, path: str | Path) -> None:
        shutil.copyfile(self._path(key), path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root / prefix
        if not base.exists():
            return
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            stat = path.stat()
            yield StoredObject(
                path.relative_to(self.root).as_posix(), stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)
            )

    def download_url(self, key: str, *, filename: str, expires_in: int, inline: bool = False) -> str:
        token = sign_token({"key": key, "filename": filename, "inline": inline}, expires_in=expires_in)
        return reverse("object-download", kwargs={"token": token})

    def multipart_create(self, key: str) -> str:
        upload_id = hashlib.sha256(f"{key}:{time.time_ns()}".encode()).hexdigest()[:32]
        (self.multipart_root / upload_id).mkdir(parents=True)
        (self.multipart_root / upload_id / "key").write_text(key)
        return upload_id

    def multipart_part_url(
        self, key: str, upload_id: str, part_number: int, *, part_bytes: int, expires_in: int
    ) -> str:
        # The token carries the part's length: the endpoint refuses a longer body (413).
        token = sign_token({"upload_id": upload_id, "part": part_number, "bytes": part_bytes}, expires_in=expires_in)
        return reverse("object-upload-part", kwargs={"token": token})

    def part_path(self, upload_id: str, part_number: int) -> Path:
        directory = self.multipart_root / upload_id
        if not directory.is_dir():
            raise FileNotFoundError(f"No open upload {upload_id}.")
        return directory / f"{part_number:05d}.part"

    def multipart_complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        paths = []
        for number, etag in parts:
            path = self.part_path(upload_id, number)
            if not path.exists() or _md5_of(path) != etag.strip('"'):
                raise ValueError(f"Part {number} is missing or its ETag does not match.")
            paths.append(path)
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            for path in paths:
                with open(path, "rb") as part:
                    shutil.copyfileobj(part, out, COPY_CHUNK)
        shutil.rmtree(self.multipart_root / upload_id)

    def multipart_abort(self, key: str, upload_id: str) -> None:
        shutil.rmtree(self.multipart_root / upload_id, ignore_errors=True)

    def multipart_pending(self) -> Iterator[PendingMultipart]:
        if not self.multipart_root.exists():
            return
        for directory in self.multipart_root.iterdir():
            key_file = directory / "key"
            if key_file.exists():
                initiated = datetime.fromtimestamp(key_file.stat().st_mtime, UTC)
                yield PendingMultipart(key_file.read_text(), directory.name, initiated)


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(COPY_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _disposition(filename: str, inline: bool) -> str:
    safe = filename.replace('"', "").replace("\\", "")
    return f'{"inline" if inline else "attachment"}; filename="{safe}"'


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    # 8 MiB parts, 4 threads: large objects move in parallel while the process stays under ~40 MB.
    config = TransferConfig(
        multipart_threshold=16 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, max_concurrency=4
    )
    # A stream without `seek` is buffered part by part; s3transfer's setting, which boto3's constructor does not take.
    config.max_in_memory_upload_chunks = 4
    return config


def get_object_store() -> S3ObjectStore | LocalObjectStore:
    storage = storages["default"]
    return S3ObjectStore(storage) if hasattr(storage, "bucket_name") else LocalObjectStore(storage)
