"""The group-commit recorder on SQLite and PostgreSQL: concurrent calls share few transactions and
return only once their records are durable; a failing transaction fails exactly its group's calls
and the writer goes on; the queue is bounded; stopping writes what is queued."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import date

import pytest
from sqlalchemy import Table, func, select
from sqlalchemy.engine import Engine
from testkit.audit_checks import accept_records, assert_audit_valid, refuse_records

from enterprise_registry.db import is_database_error, make_engine
from enterprise_registry.uscc import make
from rules.evaluator import evaluate
from rules.loader import LoadedPolicy, PolicySet
from service.audit.ledger import ledger_entry, ledger_transaction
from service.audit.records import Actor, PreparedRecord, evaluation_record, prepare_record
from service.evaluation.recorder import Recorder, RecorderStoppedError
from service.facts_documents import EnterpriseRows, build_document
from service.payouts.tables import create_payout_schema

TODAY = date(2026, 3, 31)
ACTOR = Actor("test-recorder", "admin")
WAIT_SECONDS = 20.0


@pytest.fixture
def audit_engine(db_engine: Engine) -> Engine:
    create_payout_schema(db_engine)  # the audit trail's tables included: verification reads both
    return db_engine


@pytest.fixture
def recorder(audit_engine: Engine) -> Iterator[Recorder]:
    running = Recorder(audit_engine).start()
    yield running
    running.stop()


def _prepared(policy: LoadedPolicy, n: int) -> PreparedRecord:
    """A real decision of enterprise number `n`, of which nothing is on record."""
    document = build_document(EnterpriseRows(make(f"91420600MA4K2{n:04d}")), policy.fact_year(2025))
    return prepare_record(evaluate(policy.compiled(2025), document, today=TODAY), document, ACTOR)


def _in_force(policies: PolicySet) -> list[LoadedPolicy]:
    return [p for p in policies if p.covers(2025)]


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def _stored(engine: Engine, evaluation_id: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(
                select(evaluation_record.c.evaluation_id).where(evaluation_record.c.evaluation_id == evaluation_id)
            ).first()
            is not None
        )


def _count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _calls(
    recorder: Recorder,
    batches: list[list[tuple[LoadedPolicy, PreparedRecord]]],
    after: Callable[[list[tuple[LoadedPolicy, PreparedRecord]]], None] = lambda _: None,
) -> tuple[list[threading.Thread], dict[int, BaseException | None]]:
    """One thread per call, started; each records its batch, then runs `after` (on success)."""
    outcomes: dict[int, BaseException | None] = {}

    def call(index: int) -> None:
        try:
            recorder.record(batches[index])
        except BaseException as exc:
            outcomes[index] = exc
            return
        after(batches[index])
        outcomes[index] = None

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    return threads, outcomes


def test_concurrent_calls_share_few_transactions_and_answer_only_when_durable(
    audit_engine: Engine, recorder: Recorder, policies: PolicySet
) -> None:
    in_force = _in_force(policies)
    # Calls of one record each, and of several policies in one call (ListMatchedBenefits).
    batches = [[(in_force[i % len(in_force)], _prepared(in_force[i % len(in_force)], i))] for i in range(36)]
    batches += [[(p, _prepared(p, 100 + i)) for p in in_force] for i in range(4)]
    total = sum(len(b) for b in batches)
    durable: list[str] = []

    def committed(batch: list[tuple[LoadedPolicy, PreparedRecord]]) -> None:
        # Returned means committed: another connection sees every record of the call at once.
        durable.extend(p.evaluation_id for _, p in batch if _stored(audit_engine, p.evaluation_id))

    with ledger_transaction(audit_engine):  # the writer's first group waits behind this lock
        threads, outcomes = _calls(recorder, batches, committed)
        _wait_until(lambda: recorder.outstanding == total, "every call has handed its records over")
        assert not outcomes, "a call returned before its records could be committed"
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert outcomes == dict.fromkeys(range(len(batches)))
    assert sorted(durable) == sorted(p.evaluation_id for b in batches for _, p in b)
    # The group taken before the lock was released, then everything queued behind it.
    assert 1 <= recorder.transactions <= 3 and recorder.records_written == total
    assert _count(audit_engine, evaluation_record) == total
    assert _count(audit_engine, ledger_entry) <= recorder.transactions * len(in_force)  # one entry per policy
    assert_audit_valid(audit_engine)


def test_a_failing_transaction_fails_exactly_its_calls_and_later_calls_succeed(
    audit_engine: Engine, recorder: Recorder, policies: PolicySet
) -> None:
    in_force = _in_force(policies)
    before = _prepared(in_force[0], 1)
    recorder.record([(in_force[0], before)])
    with audit_engine.begin() as conn:
        refuse_records(conn)
    doomed = [[(in_force[i % len(in_force)], _prepared(in_force[i % len(in_force)], 10 + i))] for i in range(12)]
    with ledger_transaction(audit_engine):  # all of them in the groups that meet the refusal
        threads, outcomes = _calls(recorder, doomed)
        _wait_until(lambda: recorder.outstanding == len(doomed), "every doomed call is queued")
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert sorted(outcomes) == list(range(len(doomed)))
    assert all(exc is not None and is_database_error(exc) for exc in outcomes.values()), outcomes
    assert recorder.failed_groups >= 1
    assert not any(_stored(audit_engine, p.evaluation_id) for b in doomed for _, p in b)
    with audit_engine.begin() as conn:
        accept_records(conn)
    after = _prepared(in_force[1], 2)
    recorder.record([(in_force[1], after)])  # the writer went on
    assert _stored(audit_engine, before.evaluation_id) and _stored(audit_engine, after.evaluation_id)
    assert _count(audit_engine, evaluation_record) == 2
    assert_audit_valid(audit_engine)  # nothing of the failed groups is left half written


def test_an_unreachable_database_fails_every_call_and_the_writer_keeps_answering(policies: PolicySet) -> None:
    policy = _in_force(policies)[0]
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")  # nothing listens on port 1
    try:
        with Recorder(engine) as recorder:
            for n in range(2):
                with pytest.raises(Exception) as raised:
                    recorder.record([(policy, _prepared(policy, n))])
                assert is_database_error(raised.value)
            assert recorder.failed_groups == 2 and recorder.transactions == 0
    finally:
        engine.dispose()


def test_the_queue_is_bounded(audit_engine: Engine, policies: PolicySet) -> None:
    policy = _in_force(policies)[0]
    calls = [[(policy, _prepared(policy, i))] for i in range(12)]
    with Recorder(audit_engine, capacity=4) as recorder:
        with ledger_transaction(audit_engine):
            threads, outcomes = _calls(recorder, calls)
            _wait_until(lambda: recorder.queued == 4, "the queue is full")
            time.sleep(0.05)  # the other callers wait for room rather than queue
            assert recorder.queued == 4 and recorder.outstanding < len(calls)
        for thread in threads:
            thread.join(WAIT_SECONDS)
        assert outcomes == dict.fromkeys(range(len(calls)))
        assert recorder.records_written == len(calls)


def test_stopping_writes_what_is_queued_then_refuses(audit_engine: Engine, policies: PolicySet) -> None:
    policy = _in_force(policies)[0]
    calls = [[(policy, _prepared(policy, i))] for i in range(5)]
    recorder = Recorder(audit_engine).start()
    with ledger_transaction(audit_engine):
        threads, outcomes = _calls(recorder, calls)
        _wait_until(lambda: recorder.outstanding == len(calls), "every call is queued")
        stopper = threading.Thread(target=recorder.stop)
        stopper.start()
    stopper.join(WAIT_SECONDS)
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert outcomes == dict.fromkeys(range(len(calls)))
    assert all(_stored(audit_engine, p.evaluation_id) for b in calls for _, p in b)
    with pytest.raises(RecorderStoppedError):
        recorder.record([(policy, _prepared(policy, 9))])
