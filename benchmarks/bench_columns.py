"""Benchmark: enterprises per second turned into the facts the rules read, for two fact years,
in chunks: the facts documents (`DocumentSource.rows_after` + `build_document` per enterprise and
year) against the columns (`service.evaluation.columns.read_columns`), measured in the same run,
best of a few rounds; then what an audit snapshot costs from the columns' read (one enterprise's
document rebuilt from the chunk's rows and put into JSON) and a cProfile of `read_columns`,
its time grouped by where it goes. SQLite, and PostgreSQL when reachable.

Usage: python benchmarks/bench_columns.py [--count 20000] [--chunk 2000] [--years 2024,2025] [--rounds 3]
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable, Sequence

from bench_databases import run_chunk_bench
from sqlalchemy.engine import Engine

from enterprise_registry.db import create_schema
from enterprise_registry.importer import load_records
from enterprise_registry.synthetic import generate
from service.audit.canonical import canonical_json
from service.audit.records import document_to_json
from service.evaluation.columns import ColumnSource, read_chunk, read_columns
from service.facts_documents import DocumentSource, build_document

# Where read_columns' time goes, by the file a function lives in (first match wins).
BUCKETS = (
    ("SME standard (size class, row by row)", ("sme_standard.py", "(size_class")),
    ("database driver (sqlite3 / psycopg)", ("sqlite3", "psycopg")),
    ("SQLAlchemy (statements, result rows)", ("sqlalchemy",)),
    ("hires that count (derived.counting_hires)", ("derived.py",)),
    ("encoding columns (rules.columns, numpy)", ("rules/columns.py", "numpy")),
    ("the reader itself (service/evaluation/columns.py)", ("evaluation/columns.py",)),
)


def documents(engine: Engine, chunk: int, years: Sequence[int]) -> int:
    source, cursor, count = DocumentSource(engine), "", 0
    while rows := source.rows_after(cursor, chunk):
        for enterprise in rows:
            for year in years:
                build_document(enterprise, year)
        cursor, count = rows[-1].uscc, count + len(rows)
    return count


def columns(engine: Engine, chunk: int, years: Sequence[int]) -> int:
    source, cursor, count = ColumnSource(engine), "", 0
    while usccs := source.chunk_after(cursor, chunk):
        with engine.connect() as conn:
            read_columns(conn, usccs, years)
        cursor, count = usccs[-1], count + len(usccs)
    return count


def best(rounds: int, work: Callable[[], int]) -> tuple[int, float]:
    times, count = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        count = work()
        times.append(time.perf_counter() - started)
    return count, min(times)


def snapshots(engine: Engine, chunk: int, year: int) -> tuple[int, float, float, float]:
    """Seconds to read the chunks (read_chunk), to build every enterprise's document from them and
    to put it into canonical JSON - and the same JSON from DocumentSource's documents."""
    source, cursor, count = ColumnSource(engine), "", 0
    read = rebuilt = reference = 0.0
    rows_source = DocumentSource(engine)
    while usccs := source.chunk_after(cursor, chunk):
        started = time.perf_counter()
        with engine.connect() as conn:
            rows = read_chunk(conn, usccs)
        read += time.perf_counter() - started
        started = time.perf_counter()
        for uscc in usccs:
            canonical_json(document_to_json(rows.document(uscc, year)))
        rebuilt += time.perf_counter() - started
        loaded = rows_source.rows_after(cursor, chunk)
        started = time.perf_counter()
        for enterprise in loaded:
            canonical_json(document_to_json(build_document(enterprise, year)))
        reference += time.perf_counter() - started
        cursor, count = usccs[-1], count + len(usccs)
    return count, read, rebuilt, reference


def profile(engine: Engine, chunk: int, years: Sequence[int]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    columns(engine, chunk, years)
    profiler.disable()
    stats = pstats.Stats(profiler)
    # typeshed leaves out Stats' raw tables (stats, total_tt, fcn_list); get_stats_profile() has no callers
    table = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    spent = dict.fromkeys([name for name, _ in BUCKETS] + ["other"], 0.0)
    for function, (_, _, own, _, callers) in table.items():
        # a built-in of no bucket of its own (len, str.startswith) is charged to whoever called it
        anonymous = function[0] == "~" and _bucket(function) == "other" and callers
        shares = callers.items() if anonymous else [(function, (0, 0, own, 0))]
        for caller, (_, _, seconds, _) in shares:
            spent[_bucket(caller)] += seconds
    print(
        f"  cProfile of the columns pass ({total:.2f} s under the profiler), own time by where it goes "
        "(built-ins charged to their callers):"
    )
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"    {seconds / total:>5.1%}  {name}")
    print("  the ten functions with the most own time:")
    stats.sort_stats("tottime")
    for function in stats.fcn_list[:10]:  # type: ignore[attr-defined]
        file, line, name = function
        print(f"    {table[function][2] / total:>5.1%}  {file.rsplit('site-packages/', 1)[-1]}:{line}({name})")


def _bucket(function: tuple[str, int, str]) -> str:
    where = "{}:{}({}".format(*function)
    return next((name for name, marks in BUCKETS if any(mark in where for mark in marks)), "other")


def run(engine: Engine, label: str, count: int, chunk: int, years: Sequence[int], rounds: int) -> None:
    create_schema(engine)
    load_records(list(generate(count, seed=7)), engine)
    columns(engine, chunk, years)  # warm: statement caches, pages
    n_docs, docs_seconds = best(rounds, lambda: documents(engine, chunk, years))
    n_cols, cols_seconds = best(rounds, lambda: columns(engine, chunk, years))
    assert n_docs == n_cols == count
    shown = ",".join(map(str, years))
    print(f"{label}: {count} enterprises, chunks of {chunk}, fact years {shown}, best of {rounds}")
    print(
        f"  documents: rows_after + build_document : {count / docs_seconds:>8,.0f} enterprises/s ({docs_seconds:.2f} s)"
    )
    print(
        f"  columns:   read_columns                : {count / cols_seconds:>8,.0f} enterprises/s "
        f"({cols_seconds:.2f} s, {docs_seconds / cols_seconds:.1f}x)"
    )
    _, read, rebuilt, reference = snapshots(engine, chunk, years[-1])
    print(
        f"  audit snapshot ({years[-1]}) from the columns' read: document rebuilt from the chunk's rows + "
        f"canonical JSON {rebuilt / count * 1e6:.0f} us/enterprise "
        f"(read_chunk alone {read / count * 1e6:.0f} us; the same JSON from build_document's "
        f"document {reference / count * 1e6:.0f} us)"
    )
    profile(engine, chunk, years)


if __name__ == "__main__":
    run_chunk_bench(run)
