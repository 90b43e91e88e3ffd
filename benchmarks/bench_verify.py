"""Benchmark: the auditor's whole check (`verify_audit_log`: the chain, every evaluation record,
the money tables, the checkpoints) on a ledger of a small baseline of records and then of N, in
the same run: records/s, queries issued and the peak of Python memory (tracemalloc) during the
check. SQLite, and PostgreSQL when reachable (BENEFITS_TEST_PG_URL, or --pg).

The ledger is built through the project's own writing code (`prepare_decision`, `write_records`:
one ledger entry per chunk), from real evaluations of a synthetic registry reused under fresh
evaluation ids; `--enterprises` of them, so as many facts snapshots. Verification must find no
problem, so the records are genuine. The baseline's records are the first of the N (the ledger
grows in place between the two checks).

Usage: python benchmarks/bench_verify.py [--n 1000000] [--baseline 10000] [--chunk 2000] [--pg URL]
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bench_databases import DEFAULT_PG, bench_databases
from bench_records import ACTOR, evaluations
from sqlalchemy import event
from sqlalchemy.engine import Engine

from rules.loader import LoadedPolicy
from service.audit.decision import Decision
from service.audit.facts_json import snapshot_of
from service.audit.ledger import ledger_transaction, read_snapshot
from service.audit.records import create_audit_schema, now_stamp, prepare_decision, write_records
from service.audit.verification import verify_audit_log
from service.payouts.tables import create_payout_schema

CHUNKS_PER_TRANSACTION = 10  # commits are not what is measured here


@dataclass(frozen=True)
class Figures:
    records: int
    entries: int
    seconds: float
    queries: int
    peak_bytes: int


@contextmanager
def counted(engine: Engine) -> Iterator[list[int]]:
    """A one-item list holding the number of statements the engine sent meanwhile."""
    count = [0]

    def tick(*_: object) -> None:
        count[0] += 1

    event.listen(engine, "before_cursor_execute", tick)
    try:
        yield count
    finally:
        event.remove(engine, "before_cursor_execute", tick)


class Builder:
    """Appends genuine records, chunk by chunk, to one database."""

    def __init__(self, engine: Engine, policy: LoadedPolicy, enterprises: int, chunk: int) -> None:
        self.engine, self.policy, self.chunk = engine, policy, chunk
        _, pairs = evaluations(enterprises)
        self.inputs = [(Decision.of(evaluation), *snapshot_of(document)) for evaluation, document in pairs]
        self.written = 0
        self.stored: set[str] = set()  # facts snapshots already written

    def grow_to(self, n: int) -> float:
        """Write records until `n` are stored; the seconds it took."""
        started = time.perf_counter()
        while self.written < n:
            with ledger_transaction(self.engine) as conn:
                for _ in range(CHUNKS_PER_TRANSACTION):
                    size = min(self.chunk, n - self.written)
                    if size <= 0:
                        break
                    stamp = now_stamp()
                    prepared = [
                        prepare_decision(decision, facts_json, facts_sha, ACTOR, recorded_at=stamp)
                        for decision, facts_json, facts_sha in (
                            self.inputs[(self.written + i) % len(self.inputs)] for i in range(size)
                        )
                    ]
                    write_records(conn, self.policy, prepared, stored=self.stored)
                    self.written += size
        return time.perf_counter() - started


def verify_once(engine: Engine, *, trace_memory: bool) -> tuple[float, int, int, int]:
    """(seconds, queries, peak traced bytes or 0, entries checked) of one whole check."""
    with counted(engine) as queries:
        if trace_memory:
            tracemalloc.start()
        started = time.perf_counter()
        with read_snapshot(engine) as conn:
            verdict = verify_audit_log(conn)
        seconds = time.perf_counter() - started
        peak = 0
        if trace_memory:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert verdict.valid, (verdict.detail, verdict.problems[:3])
    return seconds, queries[0], peak, verdict.entries_checked


def measure(engine: Engine, records: int) -> Figures:
    # Timed and counted without tracemalloc (it slows allocation); memory in a second run.
    seconds, queries, _, entries = verify_once(engine, trace_memory=False)
    _, _, peak, _ = verify_once(engine, trace_memory=True)
    return Figures(records, entries, seconds, queries, peak)


def run(engine: Engine, label: str, builder_args: tuple[LoadedPolicy, int, int], sizes: list[int]) -> None:
    create_audit_schema(engine)
    create_payout_schema(engine)
    builder = Builder(engine, *builder_args)
    print(f"{label}:")
    for n in sizes:
        build_s = builder.grow_to(n)
        figures = measure(engine, n)
        print(
            f"  {figures.records:>9,} records ({figures.entries:,} ledger entries): built in {build_s:,.0f} s "
            f"({build_s / max(n, 1) * 1e6:,.0f} us/record cumulative); verified in {figures.seconds:,.1f} s, "
            f"{figures.records / figures.seconds:,.0f} records/s, {figures.queries:,} queries, "
            f"peak {figures.peak_bytes / 2**20:,.1f} MiB (tracemalloc)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000, help="records of the big ledger")
    parser.add_argument("--baseline", type=int, default=10_000, help="records of the small ledger, checked first")
    parser.add_argument("--chunk", type=int, default=2000, help="records per ledger entry (as a batch writes)")
    parser.add_argument("--enterprises", type=int, default=1000, help="distinct enterprises (facts snapshots)")
    parser.add_argument("--pg", default=os.environ.get("BENEFITS_TEST_PG_URL", DEFAULT_PG))
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    from service.cli.defaults import load_policies

    policy = load_policies().get("stable-jobs-refund")
    sizes = sorted({min(args.baseline, args.n), args.n})
    for label, engine in bench_databases(args.pg):
        run(engine, label, (policy, args.enterprises, args.chunk), sizes)
        if args.sqlite_only:
            break


if __name__ == "__main__":
    main()
