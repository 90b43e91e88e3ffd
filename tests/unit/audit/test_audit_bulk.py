"""Bulk writes of records and facts snapshots: COPY on PostgreSQL inside the caller's
transaction, executemany on SQLite; a snapshot stored once, even by two writers at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from records_testkit import policy, prepared, write_chunk
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from rules.loader import LoadedPolicy
from service.audit import bulk
from service.audit.ledger import ledger_transaction
from service.audit.records import create_audit_schema, evaluation_record, facts_snapshot, verify_records

__all__ = ["policy"]  # fixture


@pytest.fixture
def pg_engine(pg_engine: Engine) -> Engine:
    create_audit_schema(pg_engine)
    return pg_engine


@pytest.fixture
def any_engine(db_engine: Engine) -> Engine:
    create_audit_schema(db_engine)
    return db_engine


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


class _CopySpy:
    """Counts the COPY statements run through the driver connection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        real = bulk._driver

        def driver(connection: Any) -> Any:
            raw = real(connection)
            spy = self

            class Cursor:
                def __init__(self) -> None:
                    self.inner = raw.cursor()

                def __enter__(self) -> Cursor:
                    return self

                def __exit__(self, *exc: object) -> None:
                    self.inner.close()

                def copy(self, statement: str) -> Any:
                    spy.statements.append(statement)
                    return self.inner.copy(statement)

                def execute(self, statement: str) -> Any:
                    return self.inner.execute(statement)

            class Driver:
                def cursor(self) -> Cursor:
                    return Cursor()

            return Driver()

        monkeypatch.setattr(bulk, "_driver", driver)


@pytest.mark.postgres
def test_postgresql_copies_records_and_new_snapshots_in_the_callers_transaction(
    pg_engine: Engine, policy: LoadedPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _CopySpy(monkeypatch)
    records = [prepared(policy, 1_000_000 + i, uscc=f"91420600MA4K0{i:04d}X") for i in range(50)]
    write_chunk(pg_engine, policy, records)
    assert [s.split(" (")[0] for s in spy.statements] == ["COPY facts_snapshot_incoming", "COPY evaluation_record"]
    assert (_count(pg_engine, evaluation_record), _count(pg_engine, facts_snapshot)) == (50, 50)
    with pg_engine.connect() as conn:
        assert verify_records(conn) == []

    # Already stored snapshots are skipped (by the server): each is stored once.
    spy.statements.clear()
    write_chunk(pg_engine, policy, [prepared(policy, 1_000_000 + i, uscc=f"91420600MA4K0{i:04d}X") for i in range(3)])
    assert [s.split(" (")[0] for s in spy.statements] == ["COPY facts_snapshot_incoming", "COPY evaluation_record"]
    assert (_count(pg_engine, evaluation_record), _count(pg_engine, facts_snapshot)) == (53, 50)

    # A rollback takes the copied rows with it: COPY ran in the same transaction.
    with pytest.raises(RuntimeError, match="abandon"), ledger_transaction(pg_engine) as conn:
        from service.audit.records import write_records

        write_records(conn, policy, [prepared(policy, 7_000_000, uscc="91420600MA4K77777X")])
        raise RuntimeError("abandon")
    assert (_count(pg_engine, evaluation_record), _count(pg_engine, facts_snapshot)) == (53, 50)


@pytest.mark.postgres
def test_two_chunks_in_one_transaction_each_store_their_snapshots(pg_engine: Engine, policy: LoadedPolicy) -> None:
    from service.audit.records import write_records

    with ledger_transaction(pg_engine) as conn:
        write_records(conn, policy, [prepared(policy, 1, uscc="91420600MA4K00001X")])
        write_records(
            conn,
            policy,
            [prepared(policy, 2, uscc="91420600MA4K00002X"), prepared(policy, 1, uscc="91420600MA4K00001X")],
        )
    assert (_count(pg_engine, evaluation_record), _count(pg_engine, facts_snapshot)) == (3, 2)


@pytest.mark.postgres
def test_two_concurrent_writers_of_the_same_snapshot_both_succeed(pg_engine: Engine) -> None:
    """The second writer waits for the first's commit and then stores nothing; neither fails."""
    snapshot = {"a" * 64: '{"same":"snapshot"}', "b" * 64: '{"only":"second"}'}
    first_wrote, second_done = threading.Event(), threading.Event()
    failures: list[BaseException] = []
    committed_at: dict[str, float] = {}

    def second() -> None:
        try:
            first_wrote.wait(10)
            with pg_engine.begin() as conn:
                bulk.store_snapshots(conn, snapshot)
            committed_at["second"] = time.monotonic()
        except BaseException as exc:
            failures.append(exc)
        finally:
            second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    with pg_engine.begin() as conn:
        bulk.store_snapshots(conn, {"a" * 64: snapshot["a" * 64]})
        first_wrote.set()
        assert not second_done.wait(0.5), "the second writer did not wait for the first"
        committed_at["first"] = time.monotonic()
    thread.join(10)
    assert failures == [] and committed_at["second"] > committed_at["first"]
    with pg_engine.connect() as conn:
        stored = dict(conn.execute(select(facts_snapshot.c.facts_sha256, facts_snapshot.c.document)).all())
    assert stored == snapshot


def test_a_snapshot_already_stored_is_kept_once(any_engine: Engine, policy: LoadedPolicy) -> None:
    write_chunk(any_engine, policy, [prepared(policy), prepared(policy)])
    write_chunk(any_engine, policy, [prepared(policy)])
    assert (_count(any_engine, evaluation_record), _count(any_engine, facts_snapshot)) == (3, 1)
    with any_engine.connect() as conn:
        assert verify_records(conn) == []
