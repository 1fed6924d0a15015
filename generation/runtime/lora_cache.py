"""A worker-local disk cache of LoRA files, keyed by content hash, shared by every worker process on a machine.

Layout under `root`::

    <sha[:2]>/<sha>.safetensors   the file, only ever put in place by an atomic rename after its hash checked out
    <sha[:2]>/<sha>.verified      JSON sidecar written after that check; its mtime is the entry's last use (LRU)
    <sha[:2]>/<sha>.lock          per-entry lock, so concurrent processes fetch a file once and the others wait

A hit costs a `stat` and a read of the small sidecar, no hashing: the sidecar records the size and mtime the file
had when its hash was verified, so a file truncated or rewritten since then no longer matches and is fetched
again. Corruption that keeps size and mtime (bit rot) is caught by whoever reads the file to use it: the worker's
adapter manager hashes the bytes it reads and calls `invalidate()` on a mismatch, then fetches again.

Limitation: another process may evict a file between `path_for()` returning it and the caller opening it; the
window is short (the entry was just marked most recently used) and the job then fails with FileNotFoundError.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_DATA_SUFFIX = ".safetensors"
_MARKER_SUFFIX = ".verified"
_LOCK_SUFFIX = ".lock"


class LoRAIntegrityError(ValueError):
    """A fetched object is not the file the database describes (wrong size or hash)."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0


@dataclass(frozen=True)
class _Entry:
    sha256: str
    data: Path
    marker: Path
    size: int
    last_used: int  # ns


class LoRACache:
    """Fetches LoRA files on demand and keeps the most recently used ones within `max_bytes`.

    `fetch(object_key, destination)` must write the whole object to `destination` (boto3's managed
    `download_file`, which does parallel ranged GETs, or a copy from local storage).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        fetch: Callable[[str, Path], None],
        lock_timeout: float = 600.0,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.lock_timeout = lock_timeout
        self.stats = CacheStats()
        self._fetch = fetch
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, *, sha256: str, object_key: str, size: int, pinned: Collection[str] = ()) -> Path:
        """Return a local path holding the verified file, fetching it on a miss.

        `pinned` lists other hashes the current job uses; eviction after a fetch never removes them (nor this one).
        """
        sha256 = sha256.lower()
        if not _SHA256_RE.match(sha256):
            # Also what keeps a hostile value from turning into a path outside the cache.
            raise ValueError(f"Not a SHA-256 hex digest: {sha256!r}")
        data, marker, lock_path = self._paths(sha256)

        if self._is_valid(data, marker, sha256, size):
            self._record_hit(marker)
            return data

        data.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(lock_path, timeout=self.lock_timeout):
            # Another process may have fetched it while this one waited for the lock.
            if self._is_valid(data, marker, sha256, size):
                self._record_hit(marker)
                return data
            self.stats.misses += 1
            self._fetch_verified(object_key, sha256, size, data, marker)

        self._evict(keep={sha256, *(pin.lower() for pin in pinned)})
        return data

    def invalidate(self, sha256: str) -> None:
        """Forget a cached file whose bytes turned out not to have `sha256`, so the next `path_for` fetches it."""
        sha256 = sha256.lower()
        if not _SHA256_RE.match(sha256):
            raise ValueError(f"Not a SHA-256 hex digest: {sha256!r}")
        data, marker, lock_path = self._paths(sha256)
        with FileLock(lock_path, timeout=self.lock_timeout):
            # Sidecar first, as in eviction: a concurrent reader then sees a miss, never a hit on a missing file.
            marker.unlink(missing_ok=True)
            data.unlink(missing_ok=True)
        logger.warning("Cached LoRA %s failed its hash check when read; dropped from the cache", sha256)

    def total_bytes(self) -> int:
        return sum(entry.size for entry in self._entries())

    def recent_sha256(self, limit: int) -> tuple[list[str], int, int]:
        """The sha256 of the `limit` most recently used cached files, the number of files and their bytes
        (what a worker's heartbeat reports)."""
        entries = sorted(self._entries(), key=lambda entry: entry.last_used, reverse=True)
        return [entry.sha256 for entry in entries[:limit]], len(entries), sum(entry.size for entry in entries)

    def _paths(self, sha256: str) -> tuple[Path, Path, Path]:
        folder = self.root / sha256[:2]
        return tuple(folder / f"{sha256}{suffix}" for suffix in (_DATA_SUFFIX, _MARKER_SUFFIX, _LOCK_SUFFIX))

    def _record_hit(self, marker: Path) -> None:
        self.stats.hits += 1
        # utime rather than touch: an entry evicted meanwhile by another process must not get an orphan sidecar.
        try:
            _mark_used(marker)
        except FileNotFoundError:
            pass

    def _is_valid(self, data: Path, marker: Path, sha256: str, size: int) -> bool:
        try:
            recorded = json.loads(marker.read_text())
            stat = data.stat()
        except (OSError, ValueError):
            return False
        fingerprint_matches = (
            recorded.get("sha256") == sha256
            and stat.st_size == size == recorded.get("size")
            and stat.st_mtime_ns == recorded.get("mtime_ns")
        )
        if not fingerprint_matches:
            logger.warning("Cached LoRA %s is missing, truncated or modified; fetching it again", sha256)
        return fingerprint_matches

    def _fetch_verified(self, object_key: str, sha256: str, size: int, data: Path, marker: Path) -> None:
        # Holding the entry's lock, so any temporary file for this hash is a leftover of a crashed process.
        for stale in data.parent.glob(f".{sha256}.*.part"):
            stale.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)

        # Same directory as the destination, so the final os.replace is an atomic rename on one filesystem.
        handle, tmp_name = tempfile.mkstemp(prefix=f".{sha256}.", suffix=".part", dir=data.parent)
        os.close(handle)
        tmp = Path(tmp_name)
        try:
            logger.info("Fetching LoRA %s (%d bytes) from %s", sha256, size, object_key)
            self._fetch(object_key, tmp)
            fetched_size = tmp.stat().st_size
            self.stats.bytes_fetched += fetched_size
            if fetched_size != size:
                raise LoRAIntegrityError(
                    f"LoRA object {object_key!r} is {fetched_size} bytes, expected {size} (sha256 {sha256})"
                )
            actual = _sha256_of(tmp)
            if actual != sha256:
                raise LoRAIntegrityError(
                    f"LoRA object {object_key!r} has sha256 {actual}, expected {sha256}; the file was discarded"
                )
            os.replace(tmp, data)
        finally:
            tmp.unlink(missing_ok=True)
        _write_marker(marker, sha256=sha256, size=size, mtime_ns=data.stat().st_mtime_ns)
        _mark_used(marker)

    def _entries(self) -> list[_Entry]:
        entries = []
        for data in self.root.glob(f"??/*{_DATA_SUFFIX}"):
            sha256 = data.name.removesuffix(_DATA_SUFFIX)
            _, marker, _ = self._paths(sha256)
            try:
                size = data.stat().st_size
                # An entry without a sidecar was never verified (crash between rename and sidecar): oldest first.
                last_used = marker.stat().st_mtime_ns if marker.exists() else 0
            except FileNotFoundError:
                continue  # evicted by another process meanwhile
            entries.append(_Entry(sha256, data, marker, size, last_used))
        return entries

    def _evict(self, *, keep: set[str]) -> None:
        entries = sorted(self._entries(), key=lambda entry: entry.last_used)
        total = sum(entry.size for entry in entries)
        for entry in entries:
            if total <= self.max_bytes:
                return
            if entry.sha256 in keep:
                continue
            _, _, lock_path = self._paths(entry.sha256)
            try:
                # Never wait: a locked entry is being fetched by another process, i.e. it is about to be used.
                with FileLock(lock_path, timeout=0):
                    # Sidecar first, so a concurrent reader sees a miss (and queues on the lock) rather than a hit.
                    entry.marker.unlink(missing_ok=True)
                    entry.data.unlink(missing_ok=True)
            except Timeout:
                continue
            total -= entry.size
            logger.info("Evicted cached LoRA %s (%d bytes)", entry.sha256, entry.size)


def _sha256_of(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _mark_used(marker: Path) -> None:
    # The sidecar's mtime is the LRU clock (the data file's own mtime is part of its fingerprint). Set from
    # time.time_ns() because the kernel stamps files from a coarse clock, which would tie uses milliseconds apart.
    now = time.time_ns()
    os.utime(marker, ns=(now, now))


def _write_marker(marker: Path, **fields: object) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(fields))
    os.replace(tmp, marker)


def cached_sha256(path: Path) -> str:
    """The sha256 of a file this cache handed out (its name), e.g. of an adapter loaded from it."""
    return path.name.removesuffix(_DATA_SUFFIX)
