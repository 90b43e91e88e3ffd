"""The whole check streams: its number of queries does not grow with the records (counted, not
timed; benchmarks/bench_verify.py measures the speed and memory on a million), and it reports its
progress, part by part, up to each part's total."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from records_testkit import AUDITOR, TODAY, audit_engine, document, policy
from sqlalchemy import event
from sqlalchemy.engine import Engine

from rules.evaluator import evaluate
from rules.loader import LoadedPolicy
from service.audit.decision import Decision
from service.audit.facts_json import snapshot_of
from service.audit.ledger import ledger_transaction, read_snapshot
from service.audit.records import prepare_decision, write_records
from service.audit.verification import AuditVerdict, verify_audit_log
from service.payouts.tables import create_payout_schema

__all__ = ["audit_engine", "policy"]  # fixtures

CHUNK = 10  # records per ledger entry: 1,000 records are 100 entries, one page of the chain walk


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    """The statements the engine sends meanwhile."""
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def grow(engine: Engine, policy: LoadedPolicy, records: int, *, enterprises: int = 7) -> None:
    """Append `records` genuine records in chunks of CHUNK, over a few enterprises' facts."""
    decided = []
    for e in range(enterprises):
        facts = document(100_000_000 + e, uscc=f"91420600MA4K{e:05d}X")
        decided.append((Decision.of(evaluate(policy.compiled(2025), facts, today=TODAY)), *snapshot_of(facts)))
    stored: set[str] = set()
    with ledger_transaction(engine) as conn:
        for start in range(0, records, CHUNK):
            chunk = [decided[i % enterprises] for i in range(start, min(start + CHUNK, records))]
            write_records(
                conn, policy, [prepare_decision(d, text, sha, AUDITOR) for d, text, sha in chunk], stored=stored
            )


def check(engine: Engine) -> tuple[AuditVerdict, list[str]]:
    with counted(engine) as statements, read_snapshot(engine) as conn:
        verdict = verify_audit_log(conn)
    return verdict, statements


def test_the_queries_of_a_verification_do_not_grow_with_its_records(audit_engine: Engine, policy: LoadedPolicy) -> None:
    create_payout_schema(audit_engine)
    grow(audit_engine, policy, 100)
    small, small_statements = check(audit_engine)
    grow(audit_engine, policy, 900)
    large, large_statements = check(audit_engine)
    assert (small.valid, small.entries_checked) == (True, 10)
    assert (large.valid, large.entries_checked) == (True, 100)
    assert len(large_statements) == len(small_statements), (small_statements, large_statements)
    assert len(small_statements) <= 16  # a fixed handful: the chain's page, each part's streams


def test_the_chain_walk_costs_one_query_per_page(audit_engine: Engine, policy: LoadedPolicy) -> None:
    from service.audit.ledger import verify

    grow(audit_engine, policy, 2_500, enterprises=3)  # 250 entries
    with counted(audit_engine) as statements, audit_engine.connect() as conn:
        result = verify(conn, page_size=100)
    assert (result.valid, result.entries_checked) == (True, 250)
    assert len(statements) == 3  # pages of 100, 100 and 50


def test_progress_reaches_every_parts_total(audit_engine: Engine, policy: LoadedPolicy) -> None:
    create_payout_schema(audit_engine)
    grow(audit_engine, policy, 45)
    calls: list[tuple[str, int, int]] = []
    with read_snapshot(audit_engine) as conn:
        verdict = verify_audit_log(conn, progress=lambda what, done, total: calls.append((what, done, total)))
    assert verdict.valid
    parts = [what for what, _, _ in calls]
    assert sorted(set(parts), key=parts.index) == ["ledger entries", "evaluation records", "payout lines"]
    last = {what: (done, total) for what, done, total in calls}
    assert last == {"ledger entries": (5, 5), "evaluation records": (45, 45), "payout lines": (0, 0)}
    for what in last:  # each part counts up from 0
        done = [d for w, d, _ in calls if w == what]
        assert done[0] == 0 and done == sorted(done)
