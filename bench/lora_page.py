"""The LoRA page with a long history: its query count and render time with 10,000 rated jobs in the workspace
against 10 (issue 11: metrics come from aggregate queries, never from loading every job).

A child process runs Django on a temporary SQLite database and local storage (the embedded defaults), and another
on a throw-away PostgreSQL database (bench/postgres.py) when one answers; each builds two
workspaces — one LoRA with 10 rated jobs that used it and 10 rated base-model jobs, and the same with 10,000 of
each — renders `/w/<slug>/loras/<id>/` and `GET /api/v1/workspaces/<slug>/loras/<id>/` through Django's test
client, and reports the queries (CaptureQueriesContext) and the median time of 7 renders. Torch is not imported.
The metrics come from maintained counters (generation/usage.py), so the time stays flat, not only the queries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.postgres import throwaway_database
from bench.report import Section, Skipped

REPO = Path(__file__).resolve().parent.parent
SIZES = (10, 10_000)
RENDERS = 7
TIME_RATIO_TARGET = 2.0  # the 10,000-job render may take at most this many times the 10-job one

CHILD = r"""
import json, statistics, sys, time, uuid
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth.models import User
from django.db import connection, reset_queries
from django.test import Client
from django.test.utils import CaptureQueriesContext
from generation.models import GenerationJob, JobLoRA, JobStatus, OutputRating
from generation.usage import usage_counters_rebuild
from loras.models import LoRA, Status
from workspaces.services import workspace_create

from django.core.signals import request_finished, request_started
from django.db import close_old_connections
# As Django's test runner does: one connection for the whole run, so the queries of a request can be counted.
request_started.disconnect(close_old_connections)
request_finished.disconnect(close_old_connections)

user = User.objects.create_user("bench", password=None)
results = {}
for size in json.loads(sys.argv[1]):
    workspace = workspace_create(creator=user, name=f"Bench {size}", slug=f"bench-{size}")
    lora = LoRA.objects.create(
        workspace=workspace, name="style", original_filename="style.safetensors", file="bench/style.safetensors",
        file_size=1000, sha256=uuid.uuid4().hex * 2, status=Status.READY, base_model="wan-demo", expert="high",
    )
    def jobs(count):
        return GenerationJob.objects.bulk_create(
            GenerationJob(
                workspace=workspace, created_by=user, model_key="wan22-a14b-demo", model_name="Wan demo",
                kind="video", prompt=f"prompt {n}", status=JobStatus.SUCCEEDED, output_bytes=0,
            )
            for n in range(count)
        )
    used, base = jobs(size), jobs(size)
    JobLoRA.objects.bulk_create(
        JobLoRA(job=job, lora=lora, position=0, lora_ref=lora.id, name=lora.name, version=lora.version,
                sha256=lora.sha256, file_key=lora.file.name, file_size=lora.file_size, weight=1.0, expert="high")
        for job in used
    )
    OutputRating.objects.bulk_create(
        OutputRating(job=job, user=user, stars=1 + n % 5) for n, job in enumerate(used + base)
    )
    # Rows written in bulk bypass the services that keep the usage counters: rebuild them, as the backfill does.
    usage_counters_rebuild(workspace_id=workspace.id)
    if connection.vendor == "postgresql":  # what autovacuum does after a bulk load: planner statistics, visibility map
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    figures = {}
    for name, url in (
        ("page", f"/w/{workspace.slug}/loras/{lora.id}/"),
        ("api", f"/api/v1/workspaces/{workspace.slug}/loras/{lora.id}/"),
    ):
        reset_queries()  # the log keeps 9,000 queries: a full one would hide this render's
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(int(sys.argv[2])):
            started = time.perf_counter()
            client.get(url)
            times.append(time.perf_counter() - started)
        slowest = sorted(queries.captured_queries, key=lambda q: -float(q["time"]))[:3]
        figures[name] = {"queries": len(queries), "ms": statistics.median(times) * 1000, "slowest": slowest}
    results[size] = figures
print("RESULT=" + json.dumps(results))
"""


def _measure(database_url: str, root: str) -> dict:
    """The child's figures per size, on the database at `database_url` (migrated by the child)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "LORASITE_STORAGE", "CELERY_BROKER_URL", "REDIS_URL")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="lorasite.settings",
        DJANGO_DEBUG="1",
        LORASITE_VAR_DIR=root,
        DATABASE_URL=database_url,
        HF_HUB_OFFLINE="1",
    )
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(SIZES), str(RENDERS)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if child.returncode:
        raise RuntimeError(f"the child process failed:\n{child.stderr[-3000:]}")
    return json.loads(next(line[7:] for line in child.stdout.splitlines() if line.startswith("RESULT=")))


def run() -> list[Section]:
    measured, notes = {}, []
    with tempfile.TemporaryDirectory(prefix="lorasite-bench-page-") as root:
        measured["SQLite"] = _measure(f"sqlite:///{root}/bench.sqlite3", root)
        try:
            with throwaway_database("lorasite_bench_lora_page") as url:
                measured["PostgreSQL"] = _measure(url, root)
        except Skipped as skipped:
            notes.append(f"PostgreSQL not measured: {skipped}")
    rows, passed = [], True
    for database, results in measured.items():
        small, large = (results[str(size)] for size in SIZES)
        for name, label in (("page", "LoRA page (HTML)"), ("api", "LoRA detail API")):
            flat = large[name]["queries"] == small[name]["queries"]
            ratio = large[name]["ms"] / small[name]["ms"]
            passed &= flat and ratio <= TIME_RATIO_TARGET
            rows.append(
                [
                    database,
                    label,
                    small[name]["queries"],
                    large[name]["queries"],
                    f"{small[name]['ms']:.1f}",
                    f"{large[name]['ms']:.1f}",
                    f"{ratio:.2f}×",
                ]
            )
        notes.append(
            f"Slowest queries of the page at {SIZES[1]:,} jobs on {database}: "
            + "; ".join(f"{float(q['time']) * 1000:.0f} ms {q['sql'][:60]}…" for q in large["page"]["slowest"])
            + "."
        )
    verdict = (
        f"{'PASS' if passed else 'FAIL'}: the same number of queries with {SIZES[1]:,} rated jobs as with "
        f"{SIZES[0]}, and render time within {TIME_RATIO_TARGET:g}×, on {' and '.join(measured)} (see the table)"
    )
    notes.append(
        "The metrics and the card's fallback preview are read from the usage counters kept on every job and rating "
        "change (generation/usage.py); the latest uses walk an index and stop at 20; the storage meter sums the "
        "measured output sizes off a covering index (it grows with the workspace's jobs: about 1 ms at 20,000)."
    )
    return [
        Section(
            title=f"LoRA page with {SIZES[1]:,} rated jobs against {SIZES[0]}",
            method=(
                "A child process per database — a temporary SQLite file (the embedded defaults) and a throw-away "
                "PostgreSQL database (production's) — makes, per size N, a workspace with one LoRA, N succeeded "
                "jobs that used it and N base-model jobs, every job rated (rows written in bulk, then the usage "
                "counters rebuilt from them as the backfill does); then renders the LoRA page and its detail API "
                "through Django's test client: the queries of one render (CaptureQueriesContext) and the median "
                f"time of {RENDERS} renders."
            ),
            header=[
                "database",
                "view",
                f"queries, {SIZES[0]} jobs",
                f"queries, {SIZES[1]:,} jobs",
                f"ms, {SIZES[0]} jobs",
                f"ms, {SIZES[1]:,} jobs",
                "time ratio",
            ],
            rows=rows,
            verdict=verdict,
            passed=passed,
            notes=notes,
        )
    ]
