"""A throw-away PostgreSQL database for a benchmark's child processes: created empty, dropped afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from bench.report import Skipped

# The server the benchmarks use; this machine's (user postgres, trust) unless LORASITE_BENCH_POSTGRES says otherwise.
SERVER = os.environ.get("LORASITE_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")


@contextmanager
def throwaway_database(name: str) -> Iterator[str]:
    """The URL of a new empty database `name` on SERVER, dropped (connections and all) when the block ends;
    Skipped when the server does not answer."""
    import psycopg

    try:
        admin = psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        raise Skipped(f"PostgreSQL at {SERVER} does not answer ({error})") from error
    with admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{SERVER}/{name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
