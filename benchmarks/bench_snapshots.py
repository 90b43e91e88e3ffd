"""Benchmark: facts snapshots per second (the canonical JSON and SHA-256 stored with every evaluation
record) for every enterprise of each chunk and every fact year asked for: the reference
`snapshot_of(ChunkRows.document(uscc, year))` (a `FactsDocument`, then walked into JSON) against
`ChunkRows.snapshot(index, year)` (JSON data straight from the rows, the year-independent part once
per enterprise), measured in the same run over the same chunks, the bytes compared. For each chunk
- read once, as a batch reads it - each path runs a few rounds on its own fresh `ChunkRows` (no
part made by an earlier round), and its best round counts. Once for one fact year (the last asked
for), once for all of them. SQLite, and PostgreSQL when reachable.

Usage: python benchmarks/bench_snapshots.py [--count 20000] [--chunk 2000] [--years 2024,2025] [--rounds 3]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from bench_databases import run_chunk_bench
from sqlalchemy.engine import Engine

from enterprise_registry.db import create_schema
from enterprise_registry.importer import load_records
from enterprise_registry.synthetic import generate
from service.audit.facts_json import snapshot_of
from service.evaluation.columns import ChunkRows, ColumnSource

Snapshots = list[tuple[str, str]]


def reference(rows: ChunkRows, years: Sequence[int]) -> Snapshots:
    return [snapshot_of(rows.document(uscc, year)) for uscc in rows.usccs for year in years]


def fast(rows: ChunkRows, years: Sequence[int]) -> Snapshots:
    return [rows.snapshot(index, year) for index in range(len(rows)) for year in years]


def best(
    rounds: int, rows: ChunkRows, years: Sequence[int], path: Callable[[ChunkRows, Sequence[int]], Snapshots]
) -> tuple[float, Snapshots]:
    """The fastest of `rounds` runs of `path`, each on a fresh copy of the chunk's rows."""
    seconds, made = float("inf"), []
    for _ in range(rounds):
        fresh = ChunkRows(rows.usccs, rows.kinds, rows.counting)
        started = time.perf_counter()
        made = path(fresh, years)
        seconds = min(seconds, time.perf_counter() - started)
    return seconds, made


def run(engine: Engine, label: str, count: int, chunk: int, years: Sequence[int], rounds: int) -> None:
    create_schema(engine)
    load_records(list(generate(count, seed=7)), engine)
    source = ColumnSource(engine)
    cases = [years[-1:], years] if len(years) > 1 else [years]
    spent = {(tuple(case), name): 0.0 for case in cases for name in ("reference", "fast")}
    cursor, read, enterprises = "", 0.0, 0
    while usccs := source.chunk_after(cursor, chunk):
        started = time.perf_counter()
        rows = source.chunk(usccs)
        read += time.perf_counter() - started
        for case in cases:
            for name, path in (("reference", reference), ("fast", fast)):
                seconds, made = best(rounds, rows, case, path)
                spent[tuple(case), name] += seconds
                if name == "reference":
                    expected = made
            assert made == expected, "the fast snapshots differ from the reference"
        cursor, enterprises = usccs[-1], enterprises + len(usccs)
    print(
        f"{label}: {enterprises} enterprises, chunks of {chunk}, best of {rounds} per chunk; "
        f"reading the chunks {read:.2f} s ({enterprises / read:,.0f} enterprises/s), not counted below"
    )
    for case in cases:
        n = enterprises * len(case)
        ref, mine = spent[tuple(case), "reference"], spent[tuple(case), "fast"]
        shown = ",".join(map(str, case))
        print(
            f"  fact years {shown:<9}  reference snapshot_of(document): {n / ref:>8,.0f} snapshots/s "
            f"({ref / n * 1e6:5.1f} us)   ChunkRows.snapshot: {n / mine:>8,.0f} snapshots/s "
            f"({mine / n * 1e6:5.1f} us)   {ref / mine:.1f}x, bytes identical"
        )


if __name__ == "__main__":
    run_chunk_bench(run)
