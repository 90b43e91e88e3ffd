"""Benchmark: evaluation records written per second, in chunks (one transaction each), the compact
scheme (`service.audit.records`: decision and clause mask, one ledger entry per chunk, COPY on
PostgreSQL) against the old one, built here as the old code did it (the whole trace in every
record, one ledger entry per record, ORM executemany); then verification records/s of each.
SQLite, and PostgreSQL when reachable, in the same run.

The evaluations are real: a synthetic registry is evaluated under one policy once, and the
evaluations and facts documents are reused under fresh USCCs (one facts snapshot per record, as
a batch has one per enterprise).

Usage: python benchmarks/bench_records.py [--records 100000] [--chunk 2000] [--pg URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import orjson
from bench_databases import DEFAULT_PG, bench_databases
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, insert, select
from sqlalchemy.engine import Connection, Engine

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_records
from enterprise_registry.synthetic import generate
from rules.evaluator import Evaluation, evaluate
from rules.facts import FactsDocument
from rules.loader import LoadedPolicy
from service.audit.canonical import canonical_json, sha256_hex
from service.audit.facts_json import document_to_json
from service.audit.ledger import append_many, ledger_entry, ledger_transaction
from service.audit.records import (
    Actor,
    create_audit_schema,
    policy_version,
    prepare_record,
    remember_policy,
    verify_records,
    write_records,
)
from service.cli.defaults import load_policies
from service.facts_documents import DocumentSource, build_document

PERIOD = 2025
TODAY = date(2026, 3, 31)
ACTOR = Actor("bench", "finance_operator")
DISTINCT = 2000  # enterprises actually evaluated; reused under fresh USCCs

# ------------------------------------------------------------------------------- the old scheme
old_metadata = MetaData()
old_facts = Table(
    "old_facts_snapshot",
    old_metadata,
    Column("facts_sha256", String(64), primary_key=True),
    Column("document", Text, nullable=False),
)
old_records = Table(
    "old_evaluation_record",
    old_metadata,
    Column("evaluation_id", String(40), primary_key=True),
    Column("uscc", String(18), nullable=False, index=True),
    Column("policy_id", String(100), nullable=False, index=True),
    Column("period", Integer, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("batch_id", String(40), nullable=True, index=True),
    Column("record", Text, nullable=False),
    Column("record_sha256", String(64), nullable=False),
    Column("ledger_seq", BigInteger, nullable=False, unique=True),
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def old_prepare(evaluation: Evaluation, document: FactsDocument) -> dict[str, Any]:
    """The old `prepare_record`: the whole trace in the record."""
    facts_json = canonical_json(document_to_json(document)).decode()
    facts_sha = sha256_hex(facts_json.encode())
    evaluation_id = "ev_" + uuid.uuid4().hex
    record = {
        "evaluation_id": evaluation_id,
        "evaluation": evaluation.to_dict(),
        "facts_sha256": facts_sha,
        "service_version": "benefits 0.1.0",
        "actor": {"principal": ACTOR.principal, "role": ACTOR.role},
        "batch_id": "pb_bench",
        "recorded_at": _now(),
    }
    record_json = canonical_json(record).decode()
    return {
        "evaluation": evaluation,
        "evaluation_id": evaluation_id,
        "record_json": record_json,
        "record_sha256": sha256_hex(record_json.encode()),
        "facts_json": facts_json,
        "facts_sha256": facts_sha,
    }


def old_write(conn: Connection, policy: LoadedPolicy, prepared: list[dict[str, Any]]) -> None:
    """The old `write_records`: one ledger entry per record, ORM inserts."""
    remember_policy(conn, policy)
    wanted = {p["facts_sha256"]: p["facts_json"] for p in prepared}
    digests = sorted(wanted)
    known: set[str] = set()
    for start in range(0, len(digests), 500):
        known.update(
            conn.execute(
                select(old_facts.c.facts_sha256).where(old_facts.c.facts_sha256.in_(digests[start : start + 500]))
            ).scalars()
        )
    new = [{"facts_sha256": d, "document": wanted[d]} for d in digests if d not in known]
    if new:
        conn.execute(insert(old_facts), new)
    entries = append_many(
        conn,
        [
            (
                "evaluation",
                {
                    "evaluation_id": p["evaluation_id"],
                    "record_sha256": p["record_sha256"],
                    "facts_sha256": p["facts_sha256"],
                    "rule_sha256": p["evaluation"].rule_sha256,
                },
            )
            for p in prepared
        ],
    )
    conn.execute(
        insert(old_records),
        [
            {
                "evaluation_id": p["evaluation_id"],
                "uscc": p["evaluation"].uscc,
                "policy_id": p["evaluation"].policy_id,
                "period": p["evaluation"].period,
                "outcome": p["evaluation"].outcome,
                "amount_fen": p["evaluation"].amount_fen,
                "batch_id": "pb_bench",
                "record": p["record_json"],
                "record_sha256": p["record_sha256"],
                "ledger_seq": entry.seq,
            }
            for p, entry in zip(prepared, entries)
        ],
    )


def old_verify(conn: Connection) -> int:
    """The old `verify_records`: each entry joined with its record, each text fetched once."""
    texts_ok: dict[str, bool] = {}
    checked = 0
    query = (
        select(ledger_entry.c.seq, ledger_entry.c.payload, old_records)
        .select_from(ledger_entry.outerjoin(old_records, old_records.c.ledger_seq == ledger_entry.c.seq))
        .where(ledger_entry.c.kind == "evaluation")
        .order_by(ledger_entry.c.seq)
    )
    for row in conn.execution_options(stream_results=True, yield_per=2000).execute(query):
        sealed = orjson.loads(row.payload)
        assert sha256_hex(row.record.encode()) == sealed["record_sha256"]
        evaluation = orjson.loads(row.record)["evaluation"]
        assert (row.uscc, row.outcome, row.amount_fen) == (
            evaluation["uscc"],
            evaluation["outcome"],
            evaluation["amount_fen"],
        )
        for table, column, key in ((old_facts, "document", "facts_sha256"), (policy_version, "source", "rule_sha256")):
            digest = sealed[key]
            if digest not in texts_ok:
                text = conn.execute(select(table.c[column]).where(table.c[key] == digest)).scalar()
                texts_ok[digest] = text is not None and sha256_hex(text.encode()) == digest
            assert texts_ok[digest]
        checked += 1
    return checked


# ------------------------------------------------------------------------------- inputs and timing


def evaluations(count: int) -> tuple[LoadedPolicy, list[tuple[Evaluation, FactsDocument]]]:
    policies = load_policies()
    policy = policies.get("stable-jobs-refund")
    compiled = policy.compiled(PERIOD)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/registry.db")
        create_schema(engine)
        load_records(list(generate(count, seed=7)), engine)
        pairs = []
        for rows in DocumentSource(engine).all_rows():
            document = build_document(rows, policy.fact_year(PERIOD))
            pairs.append((evaluate(compiled, document, today=TODAY), document))
        engine.dispose()
    return policy, pairs


def inputs(pairs: list[tuple[Evaluation, FactsDocument]], n: int) -> Iterator[tuple[Evaluation, FactsDocument]]:
    """`n` evaluations, each of its own enterprise (a fresh USCC: its own facts snapshot)."""
    for i in range(n):
        evaluation, document = pairs[i % len(pairs)]
        uscc = f"91420600BENCH{i:05d}"[:18]
        yield dataclasses.replace(evaluation, uscc=uscc), dataclasses.replace(document, uscc=uscc)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def run(
    engine: Engine, label: str, policy: LoadedPolicy, pairs: list[tuple[Evaluation, FactsDocument]], n: int, chunk: int
) -> None:
    create_audit_schema(engine)
    old_metadata.create_all(engine)
    results: dict[str, tuple[float, float, float, int]] = {}

    def scheme(
        name: str,
        prepare: Callable[[Evaluation, FactsDocument], Any],
        write: Callable[[Connection, LoadedPolicy, list[Any]], Any],
        size: Callable[[Any], int],
    ) -> None:
        prepare_s = write_s = 0.0
        stored = 0
        source = inputs(pairs, n)
        for start in range(0, n, chunk):
            items = [next(source) for _ in range(min(chunk, n - start))]  # the inputs: not timed
            seconds, batch = timed(lambda: [prepare(e, d) for e, d in items])  # noqa: B023 (called at once)
            prepare_s += seconds
            stored += sum(size(p) for p in batch)

            def commit(records: list[Any] = batch) -> None:
                with ledger_transaction(engine) as conn:
                    write(conn, policy, records)

            write_s += timed(commit)[0]
        results[name] = (prepare_s, write_s, 0.0, stored)

    # The new scheme first: its verification then reads a ledger of its own chunks only.
    scheme(
        "compact",
        lambda e, d: prepare_record(e, d, ACTOR, batch_id="pb_bench"),
        write_records,
        lambda p: len(p.record_json),
    )
    with engine.connect() as conn:
        seconds, problems = timed(lambda: verify_records(conn))
    assert problems == [], problems[:3]
    results["compact"] = (*results["compact"][:2], seconds, results["compact"][3])

    scheme("old", old_prepare, old_write, lambda p: len(p["record_json"]))
    with engine.connect() as conn:
        seconds, checked = timed(lambda: old_verify(conn))
    assert checked == n
    results["old"] = (*results["old"][:2], seconds, results["old"][3])

    with engine.connect() as conn:
        entries = {
            kind: conn.execute(select(ledger_entry.c.seq).where(ledger_entry.c.kind == kind)).all()
            for kind in ("evaluations", "evaluation")
        }
    print(
        f"{label}: {n:,} records in chunks of {chunk:,} ({len(entries['evaluations'])} compact entries, "
        f"{len(entries['evaluation'])} old entries)"
    )
    for name, (prepare_s, write_s, verify_s, stored) in results.items():
        print(
            f"  {name:8} prepare {n / prepare_s:>9,.0f}/s  write {n / write_s:>9,.0f}/s  "
            f"prepare+write {n / (prepare_s + write_s):>9,.0f}/s  verify {n / verify_s:>9,.0f}/s  "
            f"record {stored / n:>6,.0f} B"
        )
    old, new = results["old"], results["compact"]
    print(
        f"  compact vs old: write {old[1] / new[1]:.1f}x, prepare+write {(old[0] + old[1]) / (new[0] + new[1]):.1f}x"
        f", verify {old[2] / new[2]:.1f}x, record {old[3] / new[3]:.0f}x smaller"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=DISTINCT)
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args()
    policy, pairs = evaluations(args.distinct)
    print(f"inputs: {len(pairs):,} enterprises evaluated under {policy.id} {PERIOD}, reused under fresh USCCs")
    for label, engine in bench_databases(args.pg):
        run(engine, label, policy, pairs, args.records, args.chunk)


if __name__ == "__main__":
    main()
