"""Which GPU workers are alive and which models they serve.

Each GPU worker process announces itself every `HEARTBEAT_SECONDS` with a record that lives
`TTL_SECONDS`: a worker that dies simply stops being listed once its last record expires, and a
clean shutdown withdraws it at once. Where the record lives follows the Celery broker, because
the web process and every worker already share it: a Redis broker keeps it under
`lorasite:worker:<node name>` with a Redis TTL; any other broker (the embedded filesystem broker
of `make run`) keeps one JSON file per worker under `VAR_DIR/workers/`, stale past its
`last_seen`.

A record says what the router (generation/routing.py) and the operator page need: the models served,
the worker's own queue, device and free memory, the pipelines loaded, per model the LoRAs (sha256)
merged, resident on the device and kept in host memory, the disk cache's LoRAs (the most recently used
`DISK_LIST_LIMIT`) and fill, the job running, and counters since start (downloads, adapter loads by
tier). Besides the live record, every worker's name stays listed with its last heartbeat (a Redis
hash, or a `.seen` file) until beat has re-routed what was waiting in its queue after it died
(generation/scaleout.py): `dead_workers()`, `forget()`.

Reading never raises: when the registry cannot be read (Redis down) the answer is None, "unknown",
and callers say so instead of failing. Torch-free and Celery-free; the worker wires `Heartbeat`
to its start and shutdown signals in generation/worker_startup.py.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

TTL_SECONDS = settings.LORASITE_WORKER_TTL_SECONDS
HEARTBEAT_SECONDS = settings.LORASITE_WORKER_HEARTBEAT_SECONDS
KEY_PREFIX = "lorasite:worker:"
SEEN_KEY = "lorasite:workers:seen"  # hash: worker name -> its last heartbeat (Unix time)
# A record stays small (it is read on every job sent): the disk cache's most recently used LoRAs only.
DISK_LIST_LIMIT = 256
# The web process asks on every job page: a Redis that does not answer must not hold it up.
REDIS_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True)
class LiveWorker:
    name: str  # the Celery node name, e.g. gpu-wan@host
    models: tuple[str, ...]
    started: float  # Unix time
    last_seen: float  # Unix time
    queue: str = ""  # its own queue, gpu.w.<name>
    device: str = ""  # "cuda:0", "cpu"
    free_memory_bytes: int | None = None  # on the device; None without a GPU
    total_memory_bytes: int | None = None
    pipelines: tuple[str, ...] = ()  # models whose pipeline is loaded, least recently used first
    # model key -> {"merged": [sha256…], "resident": [sha256…], "host_tier": [sha256…]}
    adapters: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    disk: tuple[str, ...] = ()  # sha256 of the disk cache's LoRAs, most recently used first (DISK_LIST_LIMIT)
    disk_count: int = 0  # all of them
    cache_bytes: int = 0
    cache_max_bytes: int = 0
    current_job: str = ""  # the job id it is running, "" when idle
    # since start: jobs, downloads, bytes_downloaded, and adapter_<tier> per LoRA applied (file, host_tier, resident)
    counters: dict[str, int] = field(default_factory=dict)
    # since start, per job phase: lorasite.metrics.PhaseHistograms.as_record()
    histograms: dict[str, dict] = field(default_factory=dict)

    def tier_sets(self, tier: str) -> dict[str, frozenset[str]]:
        """model key -> the sha256s in `tier` ("merged", "resident", "host_tier") for that model."""
        return {model: frozenset(tiers.get(tier, ())) for model, tiers in self.adapters.items()}


def _redis_url() -> str | None:
    url = settings.CELERY_BROKER_URL
    return url if url.startswith(("redis://", "rediss://")) else None


@functools.cache
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS)


def redis_client() -> redis.Redis | None:
    """The broker's Redis (short timeouts), or None when the broker is not Redis."""
    url = _redis_url()
    return _redis_client(url) if url else None


def _folder() -> Path:
    return Path(settings.VAR_DIR) / "workers"


def _file_of(name: str) -> Path:
    # Node names are "name@host": keep the file name to safe characters.
    return _folder() / ("".join(c if c.isalnum() or c in "-_.@" else "_" for c in name) + ".json")


_FIELDS = {f.name for f in fields(LiveWorker)}
_TUPLES = ("models", "pipelines", "disk")


def _parse(raw: bytes | str) -> LiveWorker | None:
    try:
        data = json.loads(raw)
        # Fields a newer or older worker does not know are left out or take their defaults.
        known = {key: value for key, value in data.items() if key in _FIELDS}
        known.update({key: tuple(known[key]) for key in _TUPLES if key in known})
        return LiveWorker(**known)
    except (ValueError, KeyError, TypeError):
        return None  # a half-written or foreign record is not a live worker


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(text)
    partial.replace(path)  # readers never see half a record


def announce(*, name: str, models: list[str], started: float, status: dict | None = None) -> None:
    """Write (or refresh) this worker's record; it expires TTL_SECONDS from now. `status`: the other fields of
    LiveWorker (what the worker holds now)."""
    now = time.time()
    extra = {key: value for key, value in (status or {}).items() if key in _FIELDS}
    worker = LiveWorker(name=name, models=tuple(models), started=started, last_seen=now, **extra)
    record = json.dumps(asdict(worker))
    url = _redis_url()
    if url:
        client = _redis_client(url)
        client.set(KEY_PREFIX + name, record, ex=TTL_SECONDS)
        client.hset(SEEN_KEY, name, now)
        return
    _write_file(_file_of(name), record)
    _write_file(_file_of(name).with_suffix(".seen"), json.dumps({"name": name, "last_seen": now}))


def withdraw(*, name: str) -> None:
    """Remove this worker's record (clean shutdown). Its name stays known, so that jobs still waiting in its
    queue are re-routed by beat."""
    url = _redis_url()
    if url:
        _redis_client(url).delete(KEY_PREFIX + name)
    else:
        _file_of(name).unlink(missing_ok=True)


def dead_workers() -> dict[str, float] | None:
    """Workers that once announced themselves and have no live record now: name -> last heartbeat (Unix time);
    None when the registry cannot be read."""
    live = live_workers()
    if live is None:
        return None
    url = _redis_url()
    try:
        if url:
            seen = {key.decode(): float(value) for key, value in _redis_client(url).hgetall(SEEN_KEY).items()}
        else:
            seen = {}
            for path in _folder().glob("*.seen"):
                data = json.loads(path.read_text())
                seen[data["name"]] = data["last_seen"]
    except (redis.RedisError, OSError, ValueError, KeyError) as error:
        logger.warning("The worker registry cannot be read for dead workers: %s", error)
        return None
    alive = {worker.name for worker in live}
    return {name: last_seen for name, last_seen in sorted(seen.items()) if name not in alive}


def forget(*, name: str) -> None:
    """Drop a dead worker's name once nothing waits in its queue any more."""
    url = _redis_url()
    if url:
        _redis_client(url).hdel(SEEN_KEY, name)
    else:
        _file_of(name).with_suffix(".seen").unlink(missing_ok=True)


def live_workers() -> list[LiveWorker] | None:
    """The workers whose record has not expired, by name; None when the registry cannot be read."""
    url = _redis_url()
    if url:
        try:
            client = _redis_client(url)
            keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=500))
            records = client.mget(keys) if keys else []
        except (redis.RedisError, OSError) as error:
            logger.warning("The worker registry in Redis cannot be read: %s", error)
            return None
    else:
        try:
            records = [path.read_bytes() for path in _folder().glob("*.json")]
        except OSError as error:
            logger.warning("The worker registry in %s cannot be read: %s", _folder(), error)
            return None
    workers = [worker for raw in records if raw is not None and (worker := _parse(raw))]
    # Files do not expire by themselves: a worker that died leaves one behind, stale past its TTL.
    fresh_since = time.time() - TTL_SECONDS
    return sorted((worker for worker in workers if worker.last_seen > fresh_since), key=lambda worker: worker.name)


def models_served() -> set[str] | None:
    """The model keys at least one live worker serves; None when the registry cannot be read."""
    workers = live_workers()
    return None if workers is None else {key for worker in workers for key in worker.models}


class Heartbeat:
    """Announces a worker now and every HEARTBEAT_SECONDS from a daemon thread until `stop()`; `beat()` announces
    at once (after each job, so the router sees what the job left loaded). `status()` returns the record's other
    fields; if it fails, the record goes out without them rather than not at all."""

    def __init__(self, *, name: str, models: list[str], status: Callable[[], dict] | None = None) -> None:
        self.name, self.models, self.started = name, list(models), time.time()
        self._status = status
        self._lock = threading.Lock()  # the thread's beats and the worker's beat() never interleave
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {name}", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        status = None
        if self._status is not None:
            try:
                status = self._status()
            except Exception:  # e.g. a dict the job changed while it was read: the next beat reads it again
                logger.warning("Worker status could not be read for the heartbeat", exc_info=True)
        with self._lock:
            try:
                announce(name=self.name, models=self.models, started=self.started, status=status)
            except (redis.RedisError, OSError) as error:
                # The next beat tries again; meanwhile the web process shows the models as unserved.
                logger.warning("Worker heartbeat failed: %s", error)

    def _run(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            self.beat()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=HEARTBEAT_SECONDS)
        try:
            withdraw(name=self.name)
        except (redis.RedisError, OSError) as error:
            logger.warning("Could not withdraw the worker record (it expires in %s s): %s", TTL_SECONDS, error)
