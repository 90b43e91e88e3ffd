"""The database going away and coming back, for real: a server on PostgreSQL through a TCP proxy
the test cuts (tests/testkit/tcp_proxy.py), and a server on SQLite whose file another connection
holds locked. Calls meanwhile end UNAVAILABLE with a google.rpc.RetryInfo detail - never INTERNAL,
never a hang (each call has a deadline: a hang would end DEADLINE_EXCEEDED) - and, once the
database is back, the same calls succeed on the same server; an import cut half-way keeps what
it committed and is resent without doubling anything."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from benefits.v1 import benefit_service_pb2, payout_service_pb2, registry_service_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select
from sqlalchemy.engine import Engine, make_url
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
from testkit.databases import private_schema
from testkit.money_fixtures import GIANT, Money, titled, uscc, write_payers
from testkit.payout_runs import wait_until_evaluating
from testkit.tcp_proxy import TcpProxy, tcp_proxy

from enterprise_registry.db import DatabaseTimeouts, make_engine
from enterprise_registry.models import Enterprise
from service.api.status import RETRY_DELAY_SECONDS
from service.payouts.tables import grant

# Short enough for a test; a call that waited on the database without bound would outlast the
# deadline and end DEADLINE_EXCEEDED instead of UNAVAILABLE.
TIMEOUTS = DatabaseTimeouts(connect=2, statement=10, lock=5, busy=0.5)
DEADLINE = 15.0


def _lookup_calls(stubs: Stubs) -> dict[str, Callable[[], object]]:
    enterprise = as_role("enterprise")
    return {
        "GetEnterprise": lambda: stubs.registry.GetEnterprise(
            registry_service_pb2.GetEnterpriseRequest(uscc=A), metadata=enterprise, timeout=DEADLINE
        ),
        "ListMatchedBenefits": lambda: stubs.benefit.ListMatchedBenefits(
            benefit_service_pb2.ListMatchedBenefitsRequest(uscc=A, period=2025), metadata=enterprise, timeout=DEADLINE
        ),
        "ExplainEligibility": lambda: stubs.benefit.ExplainEligibility(
            benefit_service_pb2.ExplainEligibilityRequest(uscc=A, policy_id=SJR, period=2025),
            metadata=enterprise,
            timeout=DEADLINE,
        ),
    }


def _import(stubs: Stubs, records: list[dict[str, object]]) -> registry_service_pb2.ImportFactsResponse:
    return import_facts(stubs, records, as_role("registry_feed"))


def assert_retry_later(err: grpc.RpcError, *secrets: str) -> None:
    """UNAVAILABLE with a RetryInfo detail, and a message that names none of `secrets`."""
    assert isinstance(err, grpc.Call)
    assert err.code() == grpc.StatusCode.UNAVAILABLE, f"{err.code()}: {err.details()}"
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status details: {err.details()}"
    delays = []
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delays.append(info.retry_delay.ToTimedelta().total_seconds())
    assert delays == [RETRY_DELAY_SECONDS]
    message = err.details() or ""
    assert "retry" in message
    for secret in secrets:
        assert secret not in message


# ---------------------------------------------------------------------------------------------
# PostgreSQL through the proxy.
@pytest.fixture
def schema_url() -> Iterator[str]:
    """A private schema, reached directly (not through the proxy)."""
    with private_schema() as url:
        yield url


@pytest.fixture
def proxy(schema_url: str) -> Iterator[TcpProxy]:
    parsed = make_url(schema_url)
    with tcp_proxy(parsed.host or "127.0.0.1", parsed.port or 5432) as running:
        yield running


@pytest.fixture
def stubs(schema_url: str, proxy: TcpProxy, tmp_path: Path) -> Iterator[Stubs]:
    """Stubs of a server whose every database connection goes through `proxy`."""
    proxied = make_url(schema_url).set(port=proxy.port).render_as_string(hide_password=False)
    with serving(proxied, registry_records(), tmp_path, db_timeouts=TIMEOUTS) as running:
        yield from channel_stubs(running.port)


def _secrets(schema_url: str, proxy: TcpProxy) -> tuple[str, ...]:
    parsed = make_url(schema_url)
    return (str(proxy.port), str(parsed.port), parsed.host or "", parsed.username or "", "psycopg", "search_path")


@pytest.mark.postgres
def test_lookups_while_the_database_is_cut_are_unavailable_then_succeed_after_restore(
    stubs: Stubs, proxy: TcpProxy, schema_url: str
) -> None:
    calls = _lookup_calls(stubs)
    for call in calls.values():
        call()  # the pool holds live connections before the cut
    proxy.cut()
    for call in calls.values():
        assert_retry_later(rpc_error(call), *_secrets(schema_url, proxy))
    proxy.restore()
    for call in calls.values():  # the same server: the pool reconnects (pool_pre_ping)
        call()


@pytest.mark.postgres
def test_lookups_while_the_database_does_not_answer_end_within_the_connect_timeout(
    stubs: Stubs, proxy: TcpProxy, schema_url: str
) -> None:
    proxy.stall()  # connections accepted, never answered: only the connect timeout ends the wait
    for call in _lookup_calls(stubs).values():
        assert_retry_later(rpc_error(call), *_secrets(schema_url, proxy))
    proxy.restore()
    for call in _lookup_calls(stubs).values():
        call()


def _count_enterprises(schema_url: str) -> int:
    engine = make_engine(schema_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Enterprise)).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_import_cut_half_way_keeps_its_committed_chunk_and_a_resend_doubles_nothing(
    stubs: Stubs, proxy: TcpProxy, schema_url: str
) -> None:
    from service.api.servicers import IMPORT_CHUNK

    before = _count_enterprises(schema_url)
    records = [enterprise_record(uscc(n, "MA4U")) for n in range(IMPORT_CHUNK + IMPORT_CHUNK // 2)]

    def stream() -> Iterator[registry_service_pb2.ImportFactsRequest]:
        for index, record in enumerate(records):
            if index == IMPORT_CHUNK + 1:
                # the server has the first chunk and one record more: wait for that chunk's commit
                # (seen directly, not through the proxy), then cut before the rest arrives
                for _ in range(200):
                    if _count_enterprises(schema_url) >= before + IMPORT_CHUNK:
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError("the first chunk was never committed")
                proxy.cut()
            yield registry_service_pb2.ImportFactsRequest(record_json=json.dumps(record, ensure_ascii=False))

    err = rpc_error(lambda: stubs.registry.ImportFacts(stream(), metadata=as_role("registry_feed"), timeout=DEADLINE))
    assert_retry_later(err, *_secrets(schema_url, proxy))
    assert _count_enterprises(schema_url) == before + IMPORT_CHUNK  # the committed chunk, nothing after
    proxy.restore()
    reply = _import(stubs, records)  # the feed resends the whole stream
    assert reply.received_count == len(records) and not reply.rejects
    assert _count_enterprises(schema_url) == before + len(records)  # every record once
    again = _import(stubs, records)  # and once more: still nothing doubled
    assert not again.rejects
    assert _count_enterprises(schema_url) == before + len(records)


@pytest.mark.postgres
def test_an_import_while_the_database_is_cut_writes_nothing_and_succeeds_after_restore(
    stubs: Stubs, proxy: TcpProxy, schema_url: str
) -> None:
    before = _count_enterprises(schema_url)
    records = [enterprise_record(uscc(n, "MA4X")) for n in range(3)]
    proxy.cut()
    assert_retry_later(rpc_error(lambda: _import(stubs, records)), *_secrets(schema_url, proxy))
    assert _count_enterprises(schema_url) == before
    proxy.restore()
    assert _import(stubs, records).stored_count == len(records)
    assert _count_enterprises(schema_url) == before + len(records)


# ---------------------------------------------------------------------------------------------
# SQLite: a writer that waits for another's write transaction.
@pytest.mark.parametrize("held", ["import", "lookup"])
def test_a_sqlite_writer_kept_waiting_by_a_lock_is_told_to_retry(tmp_path: Path, held: str) -> None:
    path = tmp_path / "registry.db"
    with serving(f"sqlite:///{path}", registry_records(), tmp_path, db_timeouts=TIMEOUTS) as running:
        stubs = Stubs.connect(running.port)
        try:
            call: Callable[[], object] = (
                (lambda: _import(stubs, [enterprise_record(uscc(1, "MA4W"))]))
                if held == "import"
                else _lookup_calls(stubs)["ListMatchedBenefits"]  # writes its evaluation records
            )
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("begin immediate")  # holds the write lock
                assert_retry_later(rpc_error(call), str(path))
            finally:
                other.execute("rollback")
                other.close()
            call()  # the lock released: the same call succeeds
        finally:
            stubs.channel.close()


# ---------------------------------------------------------------------------------------------
# A payout batch running while the database is cut.
BATCH_ENTERPRISES = 40


@pytest.mark.postgres
def test_a_payout_batch_cut_mid_run_resumes_after_restore_with_every_grant_once(
    schema_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    codes = [uscc(n, "MA4Y") for n in range(BATCH_ENTERPRISES)]
    records = [r for n, code in enumerate(codes) for r in titled(code, n, 2025)]
    proxied = make_url(schema_url).set(port=proxy.port).render_as_string(hide_password=False)
    direct = make_engine(schema_url)
    try:
        with serving(
            proxied,
            records,
            tmp_path,
            db_timeouts=TIMEOUTS,
            payers_file=write_payers(tmp_path),
            batch_chunk_size=2,  # many commits: the cut falls between and within them
            batch_lease_seconds=1.0,  # the failed run is taken up again soon after
        ) as running:
            stubs = Stubs.connect(running.port)
            try:
                money = Money(stubs)
                started = stubs.payout.CreatePayoutBatch(
                    payout_service_pb2.CreatePayoutBatchRequest(
                        policy_id=GIANT, period=2025, request_id="outage-batch-0001"
                    ),
                    metadata=money.operator,
                    timeout=DEADLINE,
                )
                wait_until_evaluating(direct, started.batch_id, BATCH_ENTERPRISES)
                proxy.cut()
                get = lambda: money.get(started.batch_id)  # noqa: E731
                assert_retry_later(rpc_error(get), *_secrets(schema_url, proxy))
                proxy.restore()
                batch = finished_batch(stubs, started.batch_id)
                assert batch.state == payout_service_pb2.BATCH_STATE_DRAFT
                assert batch.line_count == BATCH_ENTERPRISES
                assert _grants_per_uscc(direct, started.batch_id) == dict.fromkeys(codes, 1)
                assert money.verify().valid
            finally:
                stubs.channel.close()
    finally:
        direct.dispose()


def _grants_per_uscc(engine: Engine, batch_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(grant.c.uscc, func.count()).where(grant.c.batch_id == batch_id).group_by(grant.c.uscc)
        )
        return {str(code): int(count) for code, count in rows}
