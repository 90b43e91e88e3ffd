"""A full disk and a read-only database, for real (tests/testkit/storage_faults.py): SQLite held at
its file's size (SQLITE_FULL) or made query-only (SQLITE_READONLY), and a PostgreSQL database of
the test's own turned read-only with its sessions ended, as after a failover (SQLSTATE 25006).

Writes meanwhile end with a clear status and a google.rpc.RetryInfo detail - RESOURCE_EXHAUSTED
for a full disk, UNAVAILABLE for a read-only database, never INTERNAL - and write nothing;
reads go on; the ledger verifies; and once the fault is lifted the same calls succeed on the same
server, a batch caught by the full disk finishes with every grant once, and a lookup's records
are neither lost nor doubled.

A full PostgreSQL disk is not made here: it needs a small file system mounted for the data
directory. The server raises its SQLSTATE (53100 disk_full) from a trigger instead."""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from benefits.v1 import benefit_service_pb2, payout_service_pb2, registry_service_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from testkit.api_fixtures import (
    SJR,
    A,
    Stubs,
    as_role,
    channel_stubs,
    enterprise_record,
    finished_batch,
    import_facts,
    registry_records,
    rpc_error,
    serving,
)
from testkit.databases import fresh_database, private_schema
from testkit.money_fixtures import GIANT, Money, titled, uscc, write_payers
from testkit.payout_runs import wait_until_evaluating
from testkit.storage_faults import postgres_database, sqlite_storage, worker_engine_settings

from enterprise_registry.db import DatabaseTimeouts, make_engine
from enterprise_registry.models import Enterprise
from service.api.status import FULL_RETRY_DELAY_SECONDS, RETRY_DELAY_SECONDS
from service.audit.record_tables import evaluation_record
from service.payouts.partitions import PartitionTask, RunSettings
from service.payouts.tables import grant, payout_batch

DEADLINE = 15.0
TIMEOUTS = DatabaseTimeouts(connect=2, statement=10, lock=5, busy=0.5)
FRESH = [uscc(n, "MA4F") for n in range(40)]  # enterprises no lookup has recorded yet
CROWD = 12  # concurrent lookups on a full disk


def assert_told(err: grpc.RpcError, code: grpc.StatusCode, delay: int, words: str, *secrets: str) -> None:
    """`code` with one RetryInfo detail of `delay` seconds and a message saying `words`, naming
    none of `secrets`."""
    assert isinstance(err, grpc.Call)
    assert err.code() == code, f"{err.code()}: {err.details()}"
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status details: {err.details()}"
    delays = []
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delays.append(info.retry_delay.ToTimedelta().total_seconds())
    assert delays == [delay]
    message = err.details() or ""
    assert words in message and "retry" in message
    for secret in secrets:
        assert secret not in message


def assert_full(err: grpc.RpcError, *secrets: str) -> None:
    assert_told(err, grpc.StatusCode.RESOURCE_EXHAUSTED, FULL_RETRY_DELAY_SECONDS, "storage is full", *secrets)


def assert_unavailable(err: grpc.RpcError, *secrets: str) -> None:
    assert_told(err, grpc.StatusCode.UNAVAILABLE, RETRY_DELAY_SECONDS, "unavailable", *secrets)


def _import(stubs: Stubs, records: list[dict[str, object]]) -> registry_service_pb2.ImportFactsResponse:
    return import_facts(stubs, records, as_role("registry_feed"))


def _matched(stubs: Stubs, code: str) -> benefit_service_pb2.ListMatchedBenefitsResponse:
    reply: benefit_service_pb2.ListMatchedBenefitsResponse = stubs.benefit.ListMatchedBenefits(
        benefit_service_pb2.ListMatchedBenefitsRequest(uscc=code, period=2025),
        metadata=as_role("auditor"),
        timeout=DEADLINE,
    )
    return reply


def _explain(stubs: Stubs, code: str) -> benefit_service_pb2.ExplainEligibilityResponse:
    reply: benefit_service_pb2.ExplainEligibilityResponse = stubs.benefit.ExplainEligibility(
        benefit_service_pb2.ExplainEligibilityRequest(uscc=code, policy_id=SJR, period=2025),
        metadata=as_role("auditor"),
        timeout=DEADLINE,
    )
    return reply


def _get_enterprise(stubs: Stubs, code: str) -> object:
    return stubs.registry.GetEnterprise(
        registry_service_pb2.GetEnterpriseRequest(uscc=code), metadata=as_role("auditor"), timeout=DEADLINE
    )


def _enterprises(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Enterprise)).scalar_one())


def _records_of(engine: Engine, code: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(evaluation_record).where(evaluation_record.c.uscc == code)
            ).scalar_one()
        )


def _batches(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(payout_batch)).scalar_one())


@pytest.fixture
def direct() -> Iterator[Callable[[str], Engine]]:
    """Engines of the test's own, beside the server's (never faulted): what is really stored."""
    engines: list[Engine] = []

    def of(url: str) -> Engine:
        engines.append(make_engine(url))
        return engines[-1]

    yield of
    for engine in engines:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# SQLite: a full disk.
def test_writes_on_a_full_disk_are_resource_exhausted_write_nothing_and_succeed_once_room_is_made(
    tmp_path: Path, direct: Callable[[str], Engine]
) -> None:
    path = tmp_path / "registry.db"
    url = f"sqlite:///{path}"
    records = registry_records() + [enterprise_record(code) for code in FRESH]
    with serving(url, records, tmp_path, db_timeouts=TIMEOUTS) as running:
        stored = direct(url)
        stubs = Stubs.connect(running.port)
        try:
            _matched(stubs, A)  # the pool and the recorder warm, one lookup recorded
            new = [enterprise_record(uscc(n, "MA4G")) for n in range(50)]
            with sqlite_storage(running.engine) as storage:
                storage.fill()
                before = _enterprises(stored)
                assert_full(rpc_error(lambda: _import(stubs, new)), str(path))
                assert _enterprises(stored) == before  # nothing of the import is kept

                # Lookups record their decisions (the recorder's group commit): they go on while
                # the last pages have room, then the first that needs a page is told, its
                # records all gone with the transaction.
                failed = None
                for code in FRESH:
                    try:
                        _matched(stubs, code)
                    except grpc.RpcError as err:
                        assert_full(err, str(path))
                        failed = code
                        break
                    assert _records_of(stored, code) > 0
                assert failed is not None, "no lookup met the full disk"
                assert _records_of(stored, failed) == 0
                assert_full(rpc_error(lambda: _explain(stubs, failed)))
                assert _records_of(stored, failed) == 0

                # Concurrent lookups share the recorder's groups: each call is either answered
                # with all its records stored, or told the disk is full with none stored.
                crowd = FRESH[FRESH.index(failed) + 1 :][:CROWD]
                assert len(crowd) == CROWD
                with ThreadPoolExecutor(CROWD) as threads:
                    outcomes = dict(zip(crowd, threads.map(lambda code: _outcome(stubs, code), crowd)))
                refused = [code for code, outcome in outcomes.items() if isinstance(outcome, grpc.RpcError)]
                assert refused, "every concurrent lookup found room"
                for code, outcome in outcomes.items():
                    if isinstance(outcome, grpc.RpcError):
                        assert_full(outcome, str(path))
                        assert _records_of(stored, code) == 0
                    else:
                        assert _records_of(stored, code) == len(outcome.benefits) > 0

                # reads go on: the registry, a lookup already recorded, the ledger's verification
                _get_enterprise(stubs, failed)
                assert _matched(stubs, A).benefits
                assert Money(stubs).verify().valid

                storage.make_room()  # the same server: the very calls now succeed
                assert _import(stubs, new).stored_count == len(new)
                assert _enterprises(stored) == before + len(new)
                listed = _matched(stubs, failed)
                recorded = _records_of(stored, failed)
                assert recorded == len(listed.benefits)  # every record once
                _matched(stubs, failed)  # again: its records are reused, none doubled
                assert _records_of(stored, failed) == recorded
                assert _explain(stubs, failed).evaluation.policy_id == SJR
                for code in refused:  # the refused concurrent lookups, once each
                    answered = _matched(stubs, code)
                    assert _records_of(stored, code) == len(answered.benefits)
                assert Money(stubs).verify().valid
        finally:
            stubs.channel.close()


def _outcome(stubs: Stubs, code: str) -> benefit_service_pb2.ListMatchedBenefitsResponse | grpc.RpcError:
    try:
        return _matched(stubs, code)
    except grpc.RpcError as err:
        return err


BATCH_ENTERPRISES = 60


def test_a_batch_running_while_the_disk_fills_finishes_after_room_is_made_with_every_grant_once(
    tmp_path: Path, direct: Callable[[str], Engine], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    codes = [uscc(n, "MA4H") for n in range(BATCH_ENTERPRISES)]
    records = [r for n, code in enumerate(codes) for r in titled(code, n, 2025)]
    caplog.set_level(logging.ERROR, logger="benefits.payouts")
    with serving(
        url,
        records,
        tmp_path,
        db_timeouts=TIMEOUTS,
        payers_file=write_payers(tmp_path),
        batch_chunk_size=2,  # many commits: the disk fills between them
        batch_lease_seconds=1.0,  # the failed run is taken up again soon after
    ) as running:
        stored = direct(url)
        stubs = Stubs.connect(running.port)
        try:
            money = Money(stubs)
            with sqlite_storage(running.engine) as storage:
                started = stubs.payout.CreatePayoutBatch(
                    payout_service_pb2.CreatePayoutBatchRequest(policy_id=GIANT, period=2025, request_id="full-0001"),
                    metadata=money.operator,
                    timeout=DEADLINE,
                )
                wait_until_evaluating(stored, started.batch_id, BATCH_ENTERPRISES)
                storage.fill()
                _wait_for_log(caplog, "database or disk is full")  # a chunk (or the end) was refused
                assert money.get(started.batch_id).state == payout_service_pb2.BATCH_STATE_RUNNING  # reads go on
                assert money.verify().valid
                storage.make_room()
                batch = finished_batch(stubs, started.batch_id)
            assert batch.state == payout_service_pb2.BATCH_STATE_DRAFT
            assert batch.line_count == BATCH_ENTERPRISES
            assert _grants_per_uscc(stored, started.batch_id) == dict.fromkeys(codes, 1)
            assert money.verify().valid
        finally:
            stubs.channel.close()


def _wait_for_log(caplog: pytest.LogCaptureFixture, words: str, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if any(words in record.getMessage() for record in caplog.records):
            return
        time.sleep(0.05)
    raise AssertionError(f"no log line said {words!r}")


def _grants_per_uscc(engine: Engine, batch_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(grant.c.uscc, func.count()).where(grant.c.batch_id == batch_id).group_by(grant.c.uscc)
        )
        return {str(code): int(count) for code, count in rows}


# ---------------------------------------------------------------------------------------------
# PostgreSQL's disk_full. A full file system is not made for PostgreSQL (it needs a small one
# mounted for the data directory); the server itself raises the very SQLSTATE instead, from a
# trigger on the tables a write fills, as it does when it cannot extend a file.
_DISK_FULL = """
create function refuse_as_disk_full() returns trigger language plpgsql as $$
begin
  raise exception 'could not extend file: No space left on device' using errcode = 'disk_full';
end $$"""


def _disk_full(engine: Engine, table: str, on: bool) -> None:
    with engine.begin() as conn:
        if on:
            conn.execute(
                text(f'create trigger disk_full before insert on "{table}" execute function refuse_as_disk_full()')
            )
        else:
            conn.execute(text(f'drop trigger disk_full on "{table}"'))


@pytest.mark.postgres
def test_postgresql_disk_full_is_resource_exhausted_writes_nothing_and_the_same_calls_succeed_after(
    tmp_path: Path, direct: Callable[[str], Engine]
) -> None:
    with private_schema() as url:
        records = registry_records() + [enterprise_record(code) for code in FRESH]
        with serving(url, records, tmp_path, db_timeouts=TIMEOUTS) as running:
            stored = direct(url)
            with stored.begin() as conn:
                conn.execute(text(_DISK_FULL))
            stubs = Stubs.connect(running.port)
            try:
                new = [enterprise_record(uscc(n, "MA4P")) for n in range(5)]
                before = _enterprises(stored)
                _disk_full(stored, "enterprise", True)
                assert_full(rpc_error(lambda: _import(stubs, new)))
                assert _enterprises(stored) == before
                _disk_full(stored, "evaluation_record", True)  # the recorder's group commit fails
                assert_full(rpc_error(lambda: _matched(stubs, FRESH[0])))
                assert_full(rpc_error(lambda: _explain(stubs, FRESH[0])))
                assert _records_of(stored, FRESH[0]) == 0
                _get_enterprise(stubs, FRESH[0])  # reads go on
                assert Money(stubs).verify().valid

                _disk_full(stored, "enterprise", False)
                _disk_full(stored, "evaluation_record", False)
                assert _import(stubs, new).stored_count == len(new)
                assert _enterprises(stored) == before + len(new)
                listed = _matched(stubs, FRESH[0])
                assert _records_of(stored, FRESH[0]) == len(listed.benefits) > 0
                assert Money(stubs).verify().valid
            finally:
                stubs.channel.close()


# ---------------------------------------------------------------------------------------------
# A read-only database: SQLite's query_only, PostgreSQL as a standby after a failover.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def read_only_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Stubs, str, Callable[[bool], None]]]:
    """Stubs of a running server, its database URL, and how to make that database read-only."""
    records = registry_records() + [enterprise_record(code) for code in FRESH]
    config: dict[str, Any] = {"db_timeouts": TIMEOUTS, "payers_file": write_payers(tmp_path)}
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        with serving(url, records, tmp_path, **config) as running, sqlite_storage(running.engine) as storage:
            yield from ((stubs, url, storage.read_only) for stubs in channel_stubs(running.port))
        return
    with postgres_database() as database, serving(database.url, records, tmp_path, **config) as running:
        yield from ((stubs, database.url, database.read_only) for stubs in channel_stubs(running.port))


def test_a_read_only_database_refuses_writes_as_unavailable_serves_reads_and_recovers_without_restart(
    read_only_server: tuple[Stubs, str, Callable[[bool], None]], direct: Callable[[str], Engine]
) -> None:
    stubs, url, read_only = read_only_server
    stored = direct(url)
    money = Money(stubs)
    _matched(stubs, A)  # recorded before: read back, not written, while the database is read-only
    new = [enterprise_record(uscc(n, "MA4R")) for n in range(3)]
    before, batches = _enterprises(stored), _batches(stored)

    def create() -> payout_service_pb2.PayoutBatch:
        started: payout_service_pb2.PayoutBatch = stubs.payout.CreatePayoutBatch(
            payout_service_pb2.CreatePayoutBatchRequest(policy_id=SJR, period=2025, request_id="read-only-0001"),
            metadata=money.operator,
            timeout=DEADLINE,
        )
        return started

    read_only(True)
    assert_unavailable(rpc_error(lambda: _import(stubs, new)), url)
    assert_unavailable(rpc_error(lambda: _matched(stubs, FRESH[0])))  # its records cannot be written
    assert_unavailable(rpc_error(lambda: _explain(stubs, FRESH[1])))
    assert_unavailable(rpc_error(create))
    assert _enterprises(stored) == before and _batches(stored) == batches
    assert _records_of(stored, FRESH[0]) == 0 and _records_of(stored, FRESH[1]) == 0
    _get_enterprise(stubs, FRESH[0])  # reads go on
    assert _matched(stubs, A).benefits
    assert money.verify().valid

    read_only(False)  # the primary is back: the same server, the same calls
    assert _import(stubs, new).stored_count == len(new)
    assert _enterprises(stored) == before + len(new)
    assert _records_of(stored, FRESH[0]) == 0
    listed = _matched(stubs, FRESH[0])
    assert _records_of(stored, FRESH[0]) == len(listed.benefits) > 0
    assert _explain(stubs, FRESH[1]).evaluation.policy_id == SJR
    batch = finished_batch(stubs, create().batch_id)
    assert batch.state == payout_service_pb2.BATCH_STATE_DRAFT
    assert _batches(stored) == batches + 1
    assert money.verify().valid


# ---------------------------------------------------------------------------------------------
# Partition worker processes wait on the database as long as the server would.
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_partition_worker_process_makes_its_engine_with_the_servers_database_timeouts(
    backend: str, tmp_path: Path
) -> None:
    timeouts = DatabaseTimeouts(connect=3, statement=7.5, lock=1.25, busy=0.75)
    with fresh_database(backend, tmp_path) as url:
        task = PartitionTask(url, (), 0, "coordinator", RunSettings(workers=2, db_timeouts=timeouts))
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            settings = pool.submit(worker_engine_settings, task).result(timeout=60)
    if backend == "sqlite":
        assert settings == {"busy_timeout": "750"}
    else:
        assert settings == {"statement_timeout": "7500ms", "lock_timeout": "1250ms", "connect_timeout": "3"}
