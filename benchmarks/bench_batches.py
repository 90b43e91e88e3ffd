"""Benchmark: a payout batch, enterprises per second from RUNNING to DRAFT (evaluate, record every
evaluation in the ledger, commit in chunks, stack, pro-rate, grant, seal), against the baseline
measured in the same run: building the same enterprises' facts documents and evaluating them,
with nothing written. The difference is the price of the audit trail and crash safety.
SQLite, and PostgreSQL when reachable.

Usage: python benchmarks/bench_batches.py [--count 20000] [--policy stable-jobs-refund] [--chunk 200]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import date

from bench_databases import DEFAULT_PG, bench_databases
from sqlalchemy.engine import Engine

from enterprise_registry.db import create_schema
from enterprise_registry.importer import load_records
from enterprise_registry.synthetic import generate
from rules.evaluator import evaluate
from service.audit.records import Actor
from service.cli.defaults import load_policies
from service.facts_documents import DocumentSource, build_document
from service.payouts.runner import RunSettings, create_batch
from service.payouts.tables import create_payout_schema

PERIOD = 2025
TODAY = date(2026, 3, 31)


def run(engine: Engine, label: str, count: int, policy_id: str, chunk: int) -> None:
    create_schema(engine)
    create_payout_schema(engine)
    load_records(list(generate(count, seed=7)), engine)
    policies = load_policies()
    policy = policies.get(policy_id)
    compiled = policy.compiled(PERIOD)

    started = time.perf_counter()
    for rows in DocumentSource(engine).all_rows():
        evaluate(compiled, build_document(rows, policy.fact_year(PERIOD)), today=TODAY)
    baseline = time.perf_counter() - started

    started = time.perf_counter()
    batch = create_batch(
        engine,
        policies,
        policy_id=policy_id,
        period=PERIOD,
        request_id=f"bench-{uuid.uuid4()}",
        actor=Actor("bench", "finance_operator"),
        today=TODAY,
        settings=RunSettings(chunk_size=chunk),
    )
    seconds = time.perf_counter() - started
    assert batch.state == "DRAFT" and batch.evaluated_count == count
    print(
        f"{label}: {policy_id} {PERIOD}, {count} enterprises, chunks of {chunk}: "
        f"{batch.line_count} lines, {batch.total_fen} fen"
    )
    print(f"  batch to DRAFT (recorded, resumable) : {count / seconds:>8,.0f} enterprises/s ({seconds:.1f} s)")
    print(
        f"  baseline: evaluate only, no writes   : {count / baseline:>8,.0f} enterprises/s "
        f"(the batch costs {seconds / baseline:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--policy", default="stable-jobs-refund")
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args()
    for label, engine in bench_databases(args.pg):
        run(engine, label, args.count, args.policy, args.chunk)


if __name__ == "__main__":
    main()
