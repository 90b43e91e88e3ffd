"""The databases a benchmark runs on: a fresh SQLite file, then a private schema on PostgreSQL
when one is reachable (it says so when not)."""

from __future__ import annotations

import argparse
import tempfile
import uuid
from collections.abc import Callable, Iterator

from sqlalchemy import text
from sqlalchemy.engine import Engine

from enterprise_registry.db import make_engine

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def bench_databases(pg_url: str = DEFAULT_PG) -> Iterator[tuple[str, Engine]]:
    """Yield ("SQLite", engine), then ("PostgreSQL", engine); each is dropped after its turn."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        try:
            yield "SQLite", engine
        finally:
            engine.dispose()
    schema = "bench_" + uuid.uuid4().hex[:8]
    admin = make_engine(pg_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'create schema "{schema}"'))
    except Exception as exc:  # no PostgreSQL here: say so
        print(f"PostgreSQL not reachable ({exc.__class__.__name__}): skipped")
        admin.dispose()
        return
    engine = make_engine(f"{pg_url}?options=-csearch_path%3D{schema}")
    try:
        yield "PostgreSQL", engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()


# run(engine, label, count, chunk, fact years, rounds): one database's turn of a chunk benchmark
ChunkBench = Callable[[Engine, str, int, int, list[int], int], None]


def run_chunk_bench(run: ChunkBench) -> None:
    """The command line the chunk benchmarks share (enterprises, chunk size, fact years, rounds,
    PostgreSQL URL): `run` on each database in turn."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--years", default="2024,2025")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args()
    years = [int(year) for year in args.years.split(",")]
    for label, engine in bench_databases(args.pg):
        run(engine, label, args.count, args.chunk, years, args.rounds)


# run(engine, label, size): one database's turn of a benchmark of one size
SizedBench = Callable[[Engine, str, int], None]


def run_sized_bench(run: SizedBench, option: str, default: int) -> None:
    """The command line of a benchmark with one size (`--<option> N`, PostgreSQL URL): `run` on
    each database in turn."""
    parser = argparse.ArgumentParser()
    parser.add_argument(f"--{option}", dest="size", metavar=option.upper(), type=int, default=default)
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args()
    for label, engine in bench_databases(args.pg):
        run(engine, label, args.size)
