"""Benchmark: ledger appends per second inside one batch-sized transaction, against plain inserts
of the same rows into a table of the same shape, measured in the same run; then verification
entries per second. SQLite, and PostgreSQL when reachable.

Usage: python benchmarks/bench_ledger.py [--entries 20000] [--pg postgresql://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import time

from bench_databases import run_sized_bench
from sqlalchemy import Column, MetaData, String, Table, Text, insert
from sqlalchemy.engine import Engine

from service.audit.canonical import canonical_json, sha256_hex
from service.audit.ledger import append_many, create_ledger_schema, ledger_transaction, verify


def payloads(n: int) -> list[dict[str, object]]:
    return [
        {
            "evaluation_id": f"ev-{i:08d}",
            "uscc": "91420600MA4K00001M",
            "policy_id": "stable-jobs-refund",
            "period": 2025,
            "outcome": "ELIGIBLE",
            "amount_fen": 37037015 + i,
            "conditions": [{"id": f"c{j}", "result": "true"} for j in range(6)],
        }
        for i in range(n)
    ]


def run(engine: Engine, label: str, n: int) -> None:
    items = payloads(n)
    plain = Table(
        "plain_entry",
        MetaData(),
        Column("id", String(64), primary_key=True),
        Column("payload", Text),
        Column("payload_sha256", String(64)),
    )
    plain.metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        rows = []
        for i, item in enumerate(items):
            body = canonical_json(item).decode()
            rows.append({"id": str(i), "payload": body, "payload_sha256": sha256_hex(body.encode())})
        conn.execute(insert(plain), rows)
    plain_seconds = time.perf_counter() - started

    create_ledger_schema(engine)
    started = time.perf_counter()
    with ledger_transaction(engine) as conn:
        append_many(conn, [("evaluation", item) for item in items])
    ledger_seconds = time.perf_counter() - started

    started = time.perf_counter()
    with engine.connect() as conn:
        result = verify(conn)
    verify_seconds = time.perf_counter() - started
    assert result.valid, result.detail
    print(f"{label}: {n} entries in one transaction")
    print(f"  ledger appends (chained)    : {n / ledger_seconds:>10,.0f} entries/s")
    print(
        f"  baseline: plain inserts     : {n / plain_seconds:>10,.0f} rows/s "
        f"(ledger costs {ledger_seconds / plain_seconds:.2f}x)"
    )
    print(f"  verification                : {result.entries_checked / verify_seconds:>10,.0f} entries/s")


def main() -> None:
    run_sized_bench(run, "entries", 20_000)


if __name__ == "__main__":
    main()
