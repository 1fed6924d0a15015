"""The hashes a LoRA file is known by, computed in one front-to-back read (torch-free, for the web process too).

- **sha256** of the whole file: lorasite's identity for a content (dedupe, the worker cache's integrity check).
- **AutoV2**: the first 10 hex digits of the sha256 — what Civitai and A1111/Forge show and write into outputs.
- **AutoV3**: the sha256 of the tensor data only, bytes [8 + header length, EOF). It is kohya-ss sd-scripts'
  `addnet_hash_safetensors` (library/train_util.py: read the little-endian u64 header length `n`, seek to
  `n + 8`, sha256 the rest), which sd-webui-additional-networks shows and Civitai's scanner stores as AutoV3
  (its by-hash lookup accepts it). Editing the `__metadata__` changes the header, so it changes sha256 and AutoV2
  but not AutoV3: the same AutoV3 under another sha256 means "same weights, other metadata".
- **BLAKE3** of the whole file (the `blake3` package), the other full-file hash Civitai lists.

Hashes written inside a file's metadata (kohya's `sshs_model_hash`, `sshs_legacy_hash`, `modelspec.hash_sha256`)
are the trainer's claim about some earlier state of the file and anyone can edit them: they are never read here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import BinaryIO

import blake3

HASH_CHUNK = 8 * 1024 * 1024
AUTOV2_LENGTH = 10
HEADER_LENGTH_PREFIX = 8  # safetensors: a little-endian u64 header length, then the JSON header, then the data
# A query is a hash when it is this much hex: 8 digits is the shortest prefix Civitai's users paste (AutoV1).
HASH_QUERY = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class FileHashes:
    sha256: str
    autov2: str
    autov3: str
    blake3: str

    def as_fields(self) -> dict[str, str]:
        """The LoRA model's field names → values."""
        return asdict(self)


NOT_HASHED = FileHashes(sha256="", autov2="", autov3="", blake3="")
# How pages name each hash, in the order they show them.
HASH_LABELS = {"sha256": "SHA-256", "autov2": "AutoV2", "autov3": "AutoV3", "blake3": "BLAKE3"}


def metadata_claim(metadata: dict, autov3: str) -> tuple[str, bool] | None:
    """(what the file's kohya `sshs_model_hash` claims, whether it equals the AutoV3 computed here), or None
    when it claims nothing. Kohya computes that field the same way as AutoV3 when saving; a mismatch means the
    tensors changed after training wrote it (a merge, a resave), or the field was edited. Shown, never used."""
    claimed = metadata.get("sshs_model_hash")
    if not isinstance(claimed, str) or not claimed.strip():
        return None
    claimed = claimed.strip().lower()
    return claimed[:64], bool(autov3) and claimed == autov3


def autov2_of(sha256: str) -> str:
    return sha256[:AUTOV2_LENGTH]


def is_hash_query(text: str) -> bool:
    return bool(HASH_QUERY.fullmatch(text.strip().lower()))


class FileHasher:
    """Feed a file's bytes in order (any chunk sizes); `result()` gives every hash of it. The tensor-data hash
    starts where the header ends, which the first 8 bytes say; a file shorter than its own header has empty
    tensor data (the header checks refuse such a file before it is stored, this only has to be total)."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._blake3 = blake3.blake3()
        self._tensor_data = hashlib.sha256()
        self._position = 0
        self._prefix = b""
        self._data_start: int | None = None

    def update(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._sha256.update(chunk)
        self._blake3.update(chunk)
        start = self._position
        self._position += len(chunk)
        if self._data_start is None:
            self._prefix += chunk[: HEADER_LENGTH_PREFIX - len(self._prefix)]
            if len(self._prefix) < HEADER_LENGTH_PREFIX:
                return
            self._data_start = HEADER_LENGTH_PREFIX + int.from_bytes(self._prefix, "little")
        if self._position > self._data_start:
            self._tensor_data.update(memoryview(chunk)[max(0, self._data_start - start) :])

    def result(self) -> FileHashes:
        sha256 = self._sha256.hexdigest()
        return FileHashes(
            sha256=sha256,
            autov2=autov2_of(sha256),
            autov3=self._tensor_data.hexdigest(),
            blake3=self._blake3.hexdigest(),
        )


class HashingReader:
    """A stream read once, front to back, by whoever consumes it (storage), hashing what passes. No `seek`, so
    boto3's managed transfer reads it in order too."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.hasher = FileHasher()

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.hasher.update(chunk)
        return chunk


def hashes_of_chunks(chunks: Iterable[bytes]) -> FileHashes:
    hasher = FileHasher()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.result()


def hashes_of_stream(stream: BinaryIO) -> FileHashes:
    return hashes_of_chunks(iter(lambda: stream.read(HASH_CHUNK), b""))
