"""Real services the fault tests start, break and restart: a redis-server of their own on a free port, real
Celery worker processes on it (killed with SIGKILL, like a lost node), and pointing this test process's
Celery app at that broker."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import kombu.pools
import redis as redis_client
from django.conf import settings
from django.db import connection


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)
    return value


class RedisServer:
    """A redis-server without persistence on a fixed free port: `stop()` kills it (the broker is down),
    `start()` brings it back, empty, on the same port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        log = open(self.log_dir / f"redis-{self.port}.log", "a")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = redis_client.Redis.from_url(self.url, socket_connect_timeout=0.5)
        wait_until(lambda: _answers(client), timeout=10, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def _answers(client: redis_client.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_client.RedisError:
        return False


def worker_environment(broker_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """What a worker process needs to share this test session's database, S3 API server and demo models."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "lorasite.settings",
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": broker_url,
        "LORASITE_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": settings.AWS_STORAGE_BUCKET_NAME,
        "AWS_S3_ENDPOINT_URL": settings.AWS_S3_ENDPOINT_URL,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "LORASITE_MODELS_DIR": str(settings.LORASITE_MODELS_DIR),
        "LORASITE_VAR_DIR": str(var_dir),
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


def start_celery_worker(*, env: dict[str, str], name: str, log_path: Path) -> subprocess.Popen:
    """A real `celery worker` (solo pool: the job runs in the process a SIGKILL hits) consuming the default
    queue and every demo model's queue, in its own process group; returns once it answers a ping on the
    broker this process's Celery app uses."""
    process = _launch_celery_worker(env=env, name=name, log_path=log_path)
    _wait_for_ping(process, name=name, log_path=log_path)
    return process


@contextmanager
def start_celery_workers(*, envs: dict[str, dict[str, str]], log_dir: Path) -> Iterator[dict[str, subprocess.Popen]]:
    """Several workers as `start_celery_worker` makes them (name -> environment; logs `<name>.log` in `log_dir`),
    launched together so that their start-up (imports, Django, the model registry) overlaps; yields name -> process
    once every one answers a ping, and SIGKILLs them all at the end."""
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name, env in envs.items():
            processes[name] = _launch_celery_worker(env=env, name=name, log_path=log_dir / f"{name}.log")
        for name, process in processes.items():
            _wait_for_ping(process, name=name, log_path=log_dir / f"{name}.log")
        yield processes
    finally:
        for process in processes.values():
            kill_process_group(process)


def _launch_celery_worker(*, env: dict[str, str], name: str, log_path: Path) -> subprocess.Popen:
    from generation.queues import celery_worker_argv, worker_models, worker_queues

    log = open(log_path, "a")
    return subprocess.Popen(
        celery_worker_argv(
            ["default", *worker_queues(worker_models())],
            ["-P", "solo", "--without-gossip", "--without-mingle", "-n", f"{name}@%h", "--loglevel", "INFO"],
        ),
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_for_ping(process: subprocess.Popen, *, name: str, log_path: Path) -> None:
    from lorasite.celery import app

    deadline = time.monotonic() + 120
    while not any(f"{name}@" in node for reply in app.control.ping(timeout=1.0) for node in reply):
        if process.poll() is not None or time.monotonic() > deadline:
            kill_process_group(process)
            raise RuntimeError(f"The Celery worker {name} did not start; see {log_path}")


def kill_process_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """SIGKILL the worker and anything it started, as when its node is lost: no cleanup, no acknowledgement."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    process.wait(timeout=30)


@contextmanager
def celery_app_on_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app (what the web process publishes with) at `url` for the block.

    Celery caches its connection and producer pools on first use and has no public way to swap the broker
    of a configured app, so the two caches are dropped here (test-only) and rebuilt lazily from the conf."""
    from lorasite.celery import app

    previous = app.conf.broker_url

    def reset_pools() -> None:
        # kombu keeps the pools in process-wide registries keyed by connection: closing one there would hand
        # the closed pool back to the next publisher of the same URL, so the registries are emptied too.
        kombu.pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    reset_pools()
    app.conf.broker_url = url
    try:
        yield
    finally:
        reset_pools()
        app.conf.broker_url = previous
