"""LoRA ingest: header validation reads the same bytes whatever the file size, and an upload of a
2 GiB file through the app keeps the web process's memory flat.

Everything runs in one temporary directory (sparse files, the server's SQLite database, storage and
upload spool) that is removed at the end, also on failure; the moto and gunicorn servers are stopped.
Torch is not imported.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from bench.report import Section

REPO = Path(__file__).resolve().parent.parent
MiB, GiB = 1024**2, 1024**3
SMALL, LARGE = 10 * MiB, 2 * GiB
RSS_LIMIT = 64 * MiB
LOCAL_RUNS, S3_RUNS = 20, 5
BUCKET = "bench-loras"
STREAM_CHUNK = 1 * MiB
# Environment that could point the server at other services; the embedded defaults must apply.
SERVER_ENV_DROP = (
    "DATABASE_URL",
    "LORASITE_STORAGE",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "LORASITE_MAX_LORA_BYTES",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
)


def run() -> list[Section]:
    with tempfile.TemporaryDirectory(prefix="lorasite-bench-") as root:
        root = Path(root)
        return [header_validation(root), upload_through_app(root)]


# --- 1. header validation: ranged reads only ----------------------------------------------------


class CountingReader:
    def __init__(self, read_range: Callable[[int, int], bytes]) -> None:
        self.read_range, self.calls, self.bytes = read_range, 0, 0

    def __call__(self, offset: int, length: int) -> bytes:
        data = self.read_range(offset, length)
        self.calls += 1
        self.bytes += len(data)
        return data


def _validate(read_range: Callable[[int, int], bytes], *, size: int, filename: str) -> tuple[int, int, float, int]:
    """(read calls, bytes read, seconds, prefix + header bytes) for one header validation, as the app does it."""
    from loras.lora_inspect import inspect_lora
    from loras.safetensors_header import read_header

    counting = CountingReader(read_range)
    started = time.perf_counter()
    header = read_header(counting, file_size=size)
    inspection = inspect_lora(header, filename=filename, read_range=counting)
    elapsed = time.perf_counter() - started
    assert inspection.family == "wan-14b", inspection.family
    return counting.calls, counting.bytes, elapsed, header.bytes_read


def _measure(make_reader: Callable[[], Callable[[int, int], bytes]], *, size: int, runs: int) -> dict:
    _validate(make_reader(), size=size, filename="warmup.safetensors")
    results = [_validate(make_reader(), size=size, filename="bench.safetensors") for _ in range(runs)]
    calls, nbytes, _, header_bytes = results[0]
    assert all(r[:2] == (calls, nbytes) for r in results), "read pattern changed between runs"
    return {
        "calls": calls,
        "bytes": nbytes,
        "seconds": statistics.median(r[2] for r in results),
        "header": header_bytes,
    }


def _local_reader(path: Path) -> Callable[[], Callable[[int, int], bytes]]:
    # Like loras.services.ingest._local_read_range: open, seek, read for each range.
    def make() -> Callable[[int, int], bytes]:
        def read_range(offset: int, length: int) -> bytes:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(length)

        return read_range

    return make


def header_validation(root: Path) -> Section:
    from tests.lora_files import write_sparse_lora

    files = {size: write_sparse_lora(root / f"header-{size}.safetensors", size) for size in (SMALL, LARGE)}
    rows, measured = [], []
    try:
        for size, path in files.items():
            measured.append(("local", size, _measure(_local_reader(path), size=size, runs=LOCAL_RUNS), LOCAL_RUNS))
        with moto_s3() as (store, upload_seconds):
            for size, path in files.items():
                key = f"loras/{size}.safetensors"
                upload_seconds[size] = _timed(lambda key=key, path=path: store.save_file(key, path))
                measured.append(
                    (
                        "S3 (moto, HTTP)",
                        size,
                        _measure(lambda key=key: lambda o, n: store.read_range(key, o, n), size=size, runs=S3_RUNS),
                        S3_RUNS,
                    )
                )
                store.delete(key)  # moto keeps objects in memory; free the 2 GiB before the next one
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)

    for source, size, m, runs in measured:
        rows.append(
            [_size(size), source, m["calls"], f"{m['bytes']:,}", f"{m['header']:,}", f"{m['seconds'] * 1000:.2f}", runs]
        )

    by = {(source, size): m for source, size, m, _ in measured}
    sources = list(dict.fromkeys(source for source, *_ in measured))
    only_header = all(m["bytes"] == m["header"] for *_, m, _ in measured)
    same_calls = all(by[(s, SMALL)]["calls"] == by[(s, LARGE)]["calls"] for s in sources)
    spread = max(m["bytes"] for *_, m, _ in measured) - min(m["bytes"] for *_, m, _ in measured)
    local_ratio = by[("local", LARGE)]["seconds"] / by[("local", SMALL)]["seconds"]
    s3_ratio = by[(sources[1], LARGE)]["seconds"] / by[(sources[1], SMALL)]["seconds"]
    passed = only_header and same_calls and spread <= 64
    verdict = (
        f"{'flat' if passed else 'NOT flat'}: {by[('local', SMALL)]['calls']} ranged reads of exactly "
        "the 8-byte prefix "
        f"+ header for both sizes and both sources ({min(m['bytes'] for *_, m, _ in measured):,}-"
        f"{max(m['bytes'] for *_, m, _ in measured):,} B, a {LARGE // SMALL}x larger file reads {spread} B more); "
        f"local time {local_ratio:.2f}x for the 2 GiB file."
    )
    return Section(
        title="Header validation: bytes read for a 10 MiB vs a 2 GiB LoRA",
        method=(
            "A valid Wan-14B LoRA of each size (`tests.lora_files.write_sparse_lora`, sparse) is validated the way the "
            "app does it: `read_header(read_range, file_size=...)` then `inspect_lora(header, read_range=...)`, with a "
            "`read_range` that counts calls and bytes returned. Sources: the local file (open/seek/read per range, "
            "like `loras.services`), and a real S3 API over HTTP (moto's server on 127.0.0.1) through "
            "`lorasite.object_store.S3ObjectStore.read_range` (ranged `GetObject`); each object is "
            "uploaded first with one "
            "`PutObject`. Time is the median of the runs after one warm-up run, validation only "
            "(the size lookup is not included)."
        ),
        header=["file size", "source", "read calls", "bytes read", "prefix+header B", "time ms (median)", "runs"],
        rows=rows,
        verdict=verdict,
        passed=passed,
        notes=[
            f"The 2 GiB header is {spread} B longer than the 10 MiB one only because its tensor shape has more digits.",
            f"S3 time is {s3_ratio:.0f}x for the 2 GiB object, a property of moto, not of the app: "
            "moto serves a ranged "
            "GET by reading the whole object into memory (`FakeKey.value`) and slicing it. The bytes on the wire are "
            "the same for both sizes; real S3 answers a range in time independent of the object size.",
            "Uploading the objects to moto (one PUT each, in-memory server): "
            + ", ".join(f"{_size(s)} {t:.1f} s" for s, t in upload_seconds.items())
            + ".",
        ],
    )


@contextmanager
def moto_s3() -> Iterator[tuple[object, dict]]:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from moto.server import ThreadedMotoServer

    from lorasite.object_store import S3ObjectStore

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=BUCKET)
        store = S3ObjectStore(
            SimpleNamespace(bucket_name=BUCKET, connection=SimpleNamespace(meta=SimpleNamespace(client=client)))
        )
        # moto assembles a multipart upload in one bytearray; a single PUT is lighter (about 2x the object in RAM).
        single_put = TransferConfig(multipart_threshold=5 * GiB, max_concurrency=1)
        store.save_file = lambda key, path: client.upload_file(str(path), BUCKET, key, Config=single_put)
        yield store, {}
    finally:
        try:
            for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=item["Key"])
        except Exception:
            pass
        server.stop()


# --- 2. upload through the app: memory of the web process -----------------------------------------


def upload_through_app(root: Path) -> Section:
    from tests.lora_files import write_lora, write_sparse_lora

    var_dir, spool, logs = root / "var", root / "spool", root / "gunicorn.log"
    spool.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_DROP and not k.startswith("AWS_")}
    # TMPDIR: Django spools uploads with tempfile, so the 2 GiB spool file lands in our directory.
    env.update(
        LORASITE_VAR_DIR=str(var_dir), DJANGO_DEBUG="1", DJANGO_SETTINGS_MODULE="lorasite.settings", TMPDIR=str(spool)
    )
    token = _prepare_site(env)

    port = _free_port()
    with open(logs, "wb") as log, gunicorn(env, port, log) as worker_pid:
        try:
            client = UploadClient(port, token)
            warmup = write_lora(root / "warmup.safetensors", family="wan-14b", blocks=1, modules=["attn1.to_q"])
            result = client.upload(warmup, worker_pid)
            assert result["status"] == 201, result
            warmup.unlink()
            measured = []
            for size in (SMALL, LARGE):
                path = write_sparse_lora(root / f"upload-{_size(size).replace(' ', '')}.safetensors", size)
                try:
                    measured.append((size, client.upload(path, worker_pid)))
                finally:
                    path.unlink()
        except BaseException:
            sys.stderr.write(logs.read_text(errors="replace")[-4000:])
            raise
    stored = sum(p.stat().st_size for p in (var_dir / "media").rglob("*") if p.is_file())

    rows, ok = [], True
    for size, r in measured:
        # The web process's part ends with the stored object: the row is `processing` until the ingest task ran.
        good = r["status"] == 201 and r["body"].get("status") == "processing" and r["body"].get("file_size") == size
        ok = ok and good
        rows.append(
            [
                _size(size),
                f"{r['seconds']:.2f}",
                f"{size / MiB / r['seconds']:.0f}",
                f"{r['baseline'] / MiB:.1f}",
                f"{r['peak'] / MiB:.1f}",
                f"{(r['peak'] - r['baseline']) / MiB:+.1f}",
                f"{(r['after'] - r['baseline']) / MiB:+.1f}",
                f"{r['status']} {r['body'].get('status')}" if good else f"{r['status']} {_error_text(r['body'])}",
            ]
        )
    growth = measured[-1][1]["peak"] - measured[-1][1]["baseline"]
    passed = ok and growth < RSS_LIMIT
    verdict = (
        f"{'PASS' if passed else 'FAIL'}: peak RSS growth of the web process during the 2 GiB upload "
        f"{growth / MiB:.1f} MiB {'<' if growth < RSS_LIMIT else '>='} {RSS_LIMIT // MiB} MiB"
    )
    if not ok:
        verdict = (
            "FAIL: the uploads did not answer 201 processing (see the response column), so they were not stored; "
            f"peak RSS growth up to the failure was {growth / MiB:.1f} MiB (target < {RSS_LIMIT // MiB} MiB)"
        )
    return Section(
        title="Upload of a 2 GiB LoRA through the app: memory of the web process",
        method=(
            "gunicorn (`lorasite.wsgi:application`, 1 sync worker) with the embedded defaults (SQLite and local "
            "storage in a temporary `LORASITE_VAR_DIR`, `DJANGO_DEBUG=1`). The client streams a multipart/form-data "
            "`POST /api/v1/workspaces/bench/loras/` (field `file`, explicit Content-Length, 1 MiB chunks from a "
            "sparse file) with a token. The worker's RSS is sampled from `/proc/PID/status` every 50 ms; its peak is "
            "also read from VmHWM after resetting it (`/proc/PID/clear_refs` = 5) just before each upload. Baseline: "
            "RSS just before the upload, after a warm-up upload of a small real LoRA. Time: first byte sent to "
            "response received (the server spools the body, hashes it and copies it to storage)."
        ),
        header=[
            "file size",
            "time s",
            "MiB/s",
            "baseline RSS MiB",
            "peak RSS MiB",
            "peak growth MiB",
            "growth after MiB",
            "response",
        ],
        rows=rows,
        verdict=verdict,
        passed=passed,
        notes=[
            "Peak from VmHWM after a reset: "
            f"{'yes' if all(r['hwm_reset'] for _, r in measured) else 'no (sampling only)'}; "
            f"RSS samples during the 2 GiB upload: {measured[-1][1]['samples']}.",
            f"Storage held {stored / MiB:,.1f} MiB after the uploads (warm-up + 10 MiB + 2 GiB); the upload spool "
            f"directory was {'empty' if not any(spool.iterdir()) else 'NOT empty'} afterwards.",
        ],
    )


def _prepare_site(env: dict) -> str:
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=REPO, check=True)
    script = (
        "from django.contrib.auth.models import User\n"
        "from rest_framework.authtoken.models import Token\n"
        "from workspaces.services import workspace_create\n"
        "user = User.objects.create_user('bench', password=None)\n"
        "workspace_create(creator=user, name='Bench', slug='bench')\n"
        "print('TOKEN=' + Token.objects.create(user=user).key)\n"
    )
    out = subprocess.run(
        [*manage, "shell", "-c", script], env=env, cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    return next(line[6:] for line in out.splitlines() if line.startswith("TOKEN="))


@contextmanager
def gunicorn(env: dict, port: int, log) -> Iterator[int]:
    """Start gunicorn with one sync worker; yield the worker's pid; stop it on exit."""
    import psutil

    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "lorasite.wsgi:application",
        "-w",
        "1",
        "--timeout",
        "600",
        "-b",
        f"127.0.0.1:{port}",
        "--no-control-socket",
    ]
    master = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if master.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {master.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not answer within 60 s") from None
                time.sleep(0.2)
        workers = psutil.Process(master.pid).children()
        if len(workers) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {len(workers)}")
        yield workers[0].pid
    finally:
        if master.poll() is None:
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(master.pid, signal.SIGKILL)  # the group we created with start_new_session
                master.wait()


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.samples = pid, interval, 0, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, _proc_status(self.pid).get("VmRSS", 0))
            self.samples += 1
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def _proc_status(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith(" kB"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class UploadClient:
    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token

    def upload(self, path: Path, pid: int) -> dict:
        """Stream ``path`` as a multipart upload and measure the worker ``pid`` meanwhile."""
        size = path.stat().st_size
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        hwm_reset = _reset_peak(pid)
        baseline = _proc_status(pid)["VmRSS"]
        sampler = RssSampler(pid)
        sampler.start()
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=900)
        try:
            conn.putrequest("POST", "/api/v1/workspaces/bench/loras/")
            conn.putheader("Authorization", f"Token {self.token}")
            conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            conn.putheader("Content-Length", str(len(head) + size + len(tail)))
            conn.putheader("Accept", "application/json")
            conn.endheaders()
            try:
                conn.send(head)
                buffer = bytearray(STREAM_CHUNK)
                with open(path, "rb", buffering=0) as source:
                    while n := source.readinto(buffer):
                        conn.send(memoryview(buffer)[:n])
                conn.send(tail)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early (an error); read what it said
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
            seconds = time.perf_counter() - started
            sampler.stop()
        status = _proc_status(pid)
        peak = max(sampler.peak, status["VmHWM"] if hwm_reset else 0)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"raw": raw[:200].decode(errors="replace")}
        return {
            "status": response.status,
            "body": body,
            "seconds": seconds,
            "baseline": baseline,
            "peak": peak,
            "after": status["VmRSS"],
            "samples": sampler.samples,
            "hwm_reset": hwm_reset,
        }


# --- helpers ----------------------------------------------------------------------------------------


def _error_text(body: dict) -> str:
    """The exception and message from Django's DEBUG error page, or the API error."""
    if "raw" in body:
        lines = body["raw"].splitlines()
        return (lines[0].split(" at ")[0] + ": " + (lines[1] if len(lines) > 1 else ""))[:100]
    return str(body.get("detail") or body)[:100]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _size(size: int) -> str:
    return f"{size / GiB:g} GiB" if size >= GiB else f"{size / MiB:g} MiB"
