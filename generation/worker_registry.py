"""Which GPU workers are alive and which models they serve.

Each GPU worker process announces itself every `HEARTBEAT_SECONDS` with a record that lives
`TTL_SECONDS`: a worker that dies simply stops being listed once its last record expires, and a
clean shutdown withdraws it at once. Where the record lives follows the Celery broker, because
the web process and every worker already share it: a Redis broker keeps it under
`lorasite:worker:<node name>` with a Redis TTL; any other broker (the embedded filesystem broker
of `make run`) keeps one JSON file per worker under `VAR_DIR/workers/`, stale past its
`last_seen`.

Reading never raises: when the registry cannot be read (Redis down) the answer is None, "unknown",
and callers say so instead of failing. Torch-free and Celery-free; the worker wires `Heartbeat`
to its start and shutdown signals in generation/tasks.py.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

TTL_SECONDS = 30
HEARTBEAT_SECONDS = 10
KEY_PREFIX = "lorasite:worker:"
# The web process asks on every job page: a Redis that does not answer must not hold it up.
REDIS_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True)
class LiveWorker:
    name: str  # the Celery node name, e.g. gpu-wan@host
    models: tuple[str, ...]
    started: float  # Unix time
    last_seen: float  # Unix time


def _redis_url() -> str | None:
    url = settings.CELERY_BROKER_URL
    return url if url.startswith(("redis://", "rediss://")) else None


@functools.cache
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS)


def _folder() -> Path:
    return Path(settings.VAR_DIR) / "workers"


def _file_of(name: str) -> Path:
    # Node names are "name@host": keep the file name to safe characters.
    return _folder() / ("".join(c if c.isalnum() or c in "-_.@" else "_" for c in name) + ".json")


def _parse(raw: bytes | str) -> LiveWorker | None:
    try:
        data = json.loads(raw)
        return LiveWorker(
            name=data["name"], models=tuple(data["models"]), started=data["started"], last_seen=data["last_seen"]
        )
    except (ValueError, KeyError, TypeError):
        return None  # a half-written or foreign record is not a live worker


def announce(*, name: str, models: list[str], started: float) -> None:
    """Write (or refresh) this worker's record; it expires TTL_SECONDS from now."""
    record = json.dumps(asdict(LiveWorker(name=name, models=tuple(models), started=started, last_seen=time.time())))
    url = _redis_url()
    if url:
        _redis_client(url).set(KEY_PREFIX + name, record, ex=TTL_SECONDS)
        return
    path = _file_of(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(record)
    partial.replace(path)  # readers never see half a record


def withdraw(*, name: str) -> None:
    """Remove this worker's record (clean shutdown)."""
    url = _redis_url()
    if url:
        _redis_client(url).delete(KEY_PREFIX + name)
    else:
        _file_of(name).unlink(missing_ok=True)


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
    """Announces a worker now and every HEARTBEAT_SECONDS from a daemon thread until `stop()`."""

    def __init__(self, *, name: str, models: list[str]) -> None:
        self.name, self.models, self.started = name, list(models), time.time()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {name}", daemon=True)

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def _beat(self) -> None:
        try:
            announce(name=self.name, models=self.models, started=self.started)
        except (redis.RedisError, OSError) as error:
            # The next beat tries again; meanwhile the web process shows the models as unserved.
            logger.warning("Worker heartbeat failed: %s", error)

    def _run(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            self._beat()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=HEARTBEAT_SECONDS)
        try:
            withdraw(name=self.name)
        except (redis.RedisError, OSError) as error:
            logger.warning("Could not withdraw the worker record (it expires in %s s): %s", TTL_SECONDS, error)
