"""The worker's LoRA file cache: hits without fetching, integrity checks, LRU eviction, cross-process locking."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest

from generation.runtime.lora_cache import LoRACache, LoRAIntegrityError
from tests.runtime_fixtures import sha256_of


class Store:
    """A stand-in object store: fetch() copies an object and records the call."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fetched: list[str] = []
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, data: bytes) -> dict:
        (self.folder / key).write_bytes(data)
        return {"sha256": sha256_of(data), "object_key": key, "size": len(data)}

    def fetch(self, key: str, destination: Path) -> None:
        self.fetched.append(key)
        shutil.copyfile(self.folder / key, destination)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def cache_files(root: Path) -> list[str]:
    return sorted(path.name for path in root.rglob("*") if path.is_file() and path.suffix != ".lock")


def test_miss_then_hit_fetches_once(tmp_path: Path, store: Store) -> None:
    obj = store.put("a", b"A" * 100)
    cache = LoRACache(tmp_path / "cache", max_bytes=10_000, fetch=store.fetch)

    first = cache.path_for(**obj)
    second = cache.path_for(**obj)

    assert first == second == tmp_path / "cache" / obj["sha256"][:2] / f"{obj['sha256']}.safetensors"
    assert first.read_bytes() == b"A" * 100
    assert store.fetched == ["a"]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.bytes_fetched) == (1, 1, 100)
    # A second process-level cache object over the same folder hits too (the sidecar is on disk).
    other = LoRACache(tmp_path / "cache", max_bytes=10_000, fetch=store.fetch)
    other.path_for(**obj)
    assert store.fetched == ["a"] and other.stats.hits == 1


def test_truncated_file_is_fetched_again(tmp_path: Path, store: Store) -> None:
    obj = store.put("a", b"A" * 100)
    cache = LoRACache(tmp_path / "cache", max_bytes=10_000, fetch=store.fetch)
    path = cache.path_for(**obj)
    path.write_bytes(b"A" * 40)

    assert cache.path_for(**obj).read_bytes() == b"A" * 100
    assert store.fetched == ["a", "a"]


def test_rewritten_file_of_the_same_size_is_fetched_again(tmp_path: Path, store: Store) -> None:
    obj = store.put("a", b"A" * 100)
    cache = LoRACache(tmp_path / "cache", max_bytes=10_000, fetch=store.fetch)
    path = cache.path_for(**obj)
    stat = path.stat()
    path.write_bytes(b"B" * 100)
    # Kernel timestamps are coarse: make the rewrite visibly later, as it would be in practice.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    assert cache.path_for(**obj).read_bytes() == b"A" * 100
    assert store.fetched == ["a", "a"]


def test_hash_mismatch_raises_and_leaves_no_file(tmp_path: Path, store: Store) -> None:
    obj = store.put("a", b"A" * 100)
    expected = sha256_of(b"something else entirely" + b"!" * 77)
    cache = LoRACache(tmp_path / "cache", max_bytes=10_000, fetch=store.fetch)

    with pytest.raises(LoRAIntegrityError) as failure:
        cache.path_for(sha256=expected, object_key="a", size=100)

    assert expected in str(failure.value) and obj["sha256"] in str(failure.value)
    assert cache_files(tmp_path / "cache") == []


def test_size_mismatch_raises_and_leaves_no_file(tmp_path: Path, store: Store) -> None:
    obj = store.put("a", b"A" * 100)
    cache = LoRACache(tmp_path / "cache", max_bytes=10_000, fetch=store.fetch)
    with pytest.raises(LoRAIntegrityError, match="is 100 bytes, expected 101"):
        cache.path_for(sha256=obj["sha256"], object_key="a", size=101)
    assert cache_files(tmp_path / "cache") == []


def test_a_failing_fetch_leaves_no_file(tmp_path: Path) -> None:
    def broken_fetch(key: str, destination: Path) -> None:
        destination.write_bytes(b"partial")
        raise ConnectionError("connection reset")

    cache = LoRACache(tmp_path / "cache", max_bytes=10_000, fetch=broken_fetch)
    with pytest.raises(ConnectionError):
        cache.path_for(sha256="ab" * 32, object_key="a", size=100)
    assert cache_files(tmp_path / "cache") == []


def test_invalid_hash_is_rejected(tmp_path: Path, store: Store) -> None:
    cache = LoRACache(tmp_path / "cache", max_bytes=10_000, fetch=store.fetch)
    with pytest.raises(ValueError, match="SHA-256"):
        cache.path_for(sha256="../../etc/passwd", object_key="a", size=1)


def test_least_recently_used_entries_are_evicted_by_bytes(tmp_path: Path, store: Store) -> None:
    a, b, c = (store.put(key, key.encode() * 100) for key in ("a", "b", "c"))
    cache = LoRACache(tmp_path / "cache", max_bytes=250, fetch=store.fetch)

    cache.path_for(**a)
    cache.path_for(**b)
    cache.path_for(**a)  # a is now more recently used than b
    cache.path_for(**c)  # 300 bytes > 250: evict the least recently used, b

    assert cache_files(tmp_path / "cache") == sorted(
        f"{obj['sha256']}{suffix}" for obj in (a, c) for suffix in (".safetensors", ".verified")
    )
    assert cache.total_bytes() == 200
    cache.path_for(**b)  # fetched again; a is now the oldest
    assert store.fetched == ["a", "b", "c", "b"]
    assert not (tmp_path / "cache" / a["sha256"][:2] / f"{a['sha256']}.safetensors").exists()


def test_pinned_entries_are_never_evicted(tmp_path: Path, store: Store) -> None:
    a, b = store.put("a", b"a" * 100), store.put("b", b"b" * 100)
    cache = LoRACache(tmp_path / "cache", max_bytes=150, fetch=store.fetch)
    first = cache.path_for(**a)
    second = cache.path_for(**b, pinned={a["sha256"]})
    # Over budget, but both are in use by the current job.
    assert first.exists() and second.exists()


def _fetch_in_process(root: str, obj: dict, log: str, barrier) -> None:
    def slow_fetch(key: str, destination: Path) -> None:
        with open(log, "a") as stream:
            stream.write(f"{os.getpid()} {key}\n")
        time.sleep(0.5)
        shutil.copyfile(Path(root).parent / "store" / key, destination)

    cache = LoRACache(Path(root), max_bytes=10_000, fetch=slow_fetch)
    barrier.wait()
    assert cache.path_for(**obj).read_bytes() == b"shared" * 50


def test_two_processes_fetch_a_file_once(tmp_path: Path, store: Store) -> None:
    obj = store.put("shared", b"shared" * 50)
    log = tmp_path / "fetches.log"
    # spawn, not fork: the test process runs server threads (S3, live server) whose locks a fork could copy held.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_fetch_in_process, args=(str(tmp_path / "cache"), obj, str(log), barrier))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(timeout=120)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()

    assert [worker.exitcode for worker in workers] == [0, 0]
    assert len(log.read_text().splitlines()) == 1


def rot(path: Path) -> None:
    """Flip one bit of a cached file in place, keeping its size and mtime (what the sidecar fingerprints)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_bit_rot_keeping_size_and_mtime_is_a_hit_until_invalidated(tmp_path: Path, store: Store) -> None:
    obj = store.put("a", b"A" * 100)
    cache = LoRACache(tmp_path / "cache", max_bytes=10_000, fetch=store.fetch)
    path = cache.path_for(**obj)
    rot(path)

    # The cheap hit cannot see it (the reader's hash check does, and invalidates the entry)...
    assert cache.path_for(**obj).read_bytes() != b"A" * 100 and store.fetched == ["a"]
    cache.invalidate(obj["sha256"].upper())
    assert cache_files(tmp_path / "cache") == []
    # ...after which the next use fetches it again, intact.
    assert cache.path_for(**obj).read_bytes() == b"A" * 100 and store.fetched == ["a", "a"]
    cache.invalidate("f" * 64)  # an entry not cached: nothing to do
    with pytest.raises(ValueError, match="Not a SHA-256"):
        cache.invalidate("../x")
