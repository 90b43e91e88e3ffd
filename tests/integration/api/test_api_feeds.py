"""ImportFacts over a real socket, on SQLite and PostgreSQL: a feed writes only for its own
departments, and nothing as of a day after today in Shanghai (by a clock the test sets)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from benefits.v1 import registry_service_pb2
from testkit.api_fixtures import (
    TAX_FEED_TOKEN,
    Stubs,
    as_role,
    bearer,
    channel_stubs,
    enterprise_record,
    import_facts,
    registry_records,
    rpc_error,
    serving,
    si_record,
    tax_record,
)

from enterprise_registry.clock import Clock
from enterprise_registry.importer import MAX_ERRORS as MAX_REPORTED_REJECTS
from enterprise_registry.uscc import make
from service.server import RunningServer

X = make("91420600MA4K50001")  # its enterprise record comes from the wrong feed: never stored
Y = make("91420600MA4K50002")
FUTURE = make("91420600MA4K50003")
TODAY_IN_SHANGHAI = make("91420600MA4K50004")
EVERY = make("91420600MA4K50005")
MIDNIGHT = make("91420600MA4K50006")

# 2026-12-02T17:00Z is already 2026-12-03 in Shanghai (UTC+8).
EVENING_UTC = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
LAST_SECOND_OF_DEC_2 = datetime(2026, 12, 2, 15, 59, 59, tzinfo=UTC)  # 23:59:59 in Shanghai


class SettableClock(Clock):
    """The real Clock's Shanghai conversion over an instant the test chooses."""

    def __init__(self, instant: datetime) -> None:
        super().__init__(lambda: self.instant)
        self.instant = instant


@pytest.fixture(scope="module")
def clock() -> SettableClock:
    return SettableClock(EVENING_UTC)


@pytest.fixture(scope="module")
def feeds_server(
    api_db_url: str, clock: SettableClock, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with serving(api_db_url, registry_records(), tmp_path_factory.mktemp("feeds-auth"), clock=clock) as running:
        yield running


@pytest.fixture(scope="module")
def feed_stubs(feeds_server: RunningServer) -> Iterator[Stubs]:
    yield from channel_stubs(feeds_server.port)


@pytest.fixture(autouse=True)
def evening(clock: SettableClock) -> None:
    clock.instant = EVENING_UTC


def _kinds(stubs: Stubs, uscc: str) -> list[str]:
    reply = stubs.registry.GetEnterprise(
        registry_service_pb2.GetEnterpriseRequest(uscc=uscc), metadata=as_role("auditor"), timeout=20
    )
    return sorted(r.kind for r in reply.records)


def test_a_tax_feed_writes_tax_facts_and_nothing_else(feed_stubs: Stubs) -> None:
    stream = [
        tax_record(X),  # 1 good
        enterprise_record(X),  # 2 market_regulation: not the tax feed's
        tax_record(Y, year=2023),  # 3 good
        si_record(Y),  # 4 human_resources: not the tax feed's
        tax_record(Y),  # 5 good
    ]
    reply = import_facts(feed_stubs, stream, bearer(TAX_FEED_TOKEN))
    assert (reply.received_count, reply.stored_count, reply.stale_count) == (5, 3, 0)
    assert [(r.record_index, r.field) for r in reply.rejects] == [(2, "source"), (4, "source")]
    assert reply.rejects[0].reason == (
        "department market_regulation is not a source of this feed (it may write only for tax)"
    )
    assert "department human_resources" in reply.rejects[1].reason
    # Nothing of the refused records is stored; the good ones are.
    assert _kinds(feed_stubs, X) == ["tax_year"]
    assert _kinds(feed_stubs, Y) == ["tax_year", "tax_year"]
    x = feed_stubs.registry.GetEnterprise(
        registry_service_pb2.GetEnterpriseRequest(uscc=X), metadata=as_role("auditor"), timeout=20
    )
    assert x.name == "" and {r.source for r in x.records} == {"tax"}


def test_a_feed_of_every_department_writes_them_all(feed_stubs: Stubs) -> None:
    reply = import_facts(
        feed_stubs, [enterprise_record(EVERY), si_record(EVERY), tax_record(EVERY)], as_role("registry_feed")
    )
    assert (reply.stored_count, list(reply.rejects)) == (3, [])
    assert _kinds(feed_stubs, EVERY) == ["enterprise", "social_insurance_year", "tax_year"]


def test_facts_as_of_a_day_after_today_in_shanghai_are_rejected(feed_stubs: Stubs) -> None:
    # 17:00 UTC on 2 December: 3 December in Shanghai, so a record as of the 3rd is no future fact.
    reply = import_facts(
        feed_stubs,
        [
            enterprise_record(TODAY_IN_SHANGHAI, as_of="2026-12-03"),  # 1 today in Shanghai
            enterprise_record(FUTURE, as_of="2026-12-04"),  # 2 tomorrow
            si_record(TODAY_IN_SHANGHAI, as_of="2027-01-31"),  # 3 next year
        ],
        as_role("registry_feed"),
    )
    assert [(r.record_index, r.field) for r in reply.rejects] == [(2, "as_of"), (3, "as_of")]
    assert reply.rejects[0].reason == (
        "2026-12-04 is after today (2026-12-03, Asia/Shanghai): no department knows facts of a day to come"
    )
    assert reply.stored_count == 1
    assert _kinds(feed_stubs, TODAY_IN_SHANGHAI) == ["enterprise"]
    err = rpc_error(lambda: _kinds(feed_stubs, FUTURE))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_one_second_before_midnight_in_shanghai_the_next_day_is_still_to_come(
    feed_stubs: Stubs, clock: SettableClock
) -> None:
    clock.instant = LAST_SECOND_OF_DEC_2
    reply = import_facts(
        feed_stubs,
        [
            enterprise_record(MIDNIGHT, as_of="2026-12-03"),
            enterprise_record(MIDNIGHT, as_of="2026-12-02", name="襄阳边界有限公司"),
        ],
        as_role("registry_feed"),
    )
    assert [(r.record_index, r.field) for r in reply.rejects] == [(1, "as_of")]
    assert "after today (2026-12-02, Asia/Shanghai)" in reply.rejects[0].reason
    # The refused line 1 does not make line 2 (same key) a duplicate.
    assert reply.stored_count == 1
    stored = feed_stubs.registry.GetEnterprise(
        registry_service_pb2.GetEnterpriseRequest(uscc=MIDNIGHT), metadata=as_role("auditor"), timeout=20
    )
    assert stored.name == "襄阳边界有限公司"
    assert [r.as_of for r in stored.records] == ["2026-12-02"]


def test_a_feed_out_of_its_departments_and_in_the_future_is_told_about_its_source(feed_stubs: Stubs) -> None:
    reply = import_facts(feed_stubs, [si_record(FUTURE, as_of="2027-01-31")], bearer(TAX_FEED_TOKEN))
    assert [(r.record_index, r.field) for r in reply.rejects] == [(1, "source")]
    assert reply.stored_count == 0
    assert rpc_error(lambda: _kinds(feed_stubs, FUTURE)).code() == grpc.StatusCode.NOT_FOUND


def test_admin_imports_nothing(feed_stubs: Stubs) -> None:
    err = rpc_error(lambda: import_facts(feed_stubs, [tax_record(Y)], as_role("admin")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "role admin may not call ImportFacts"


def test_rejects_beyond_the_reported_thousand_are_counted_not_listed(feed_stubs: Stubs) -> None:
    # 1,500 refused records (the tax feed may not write market-regulation facts), every third good
    many = [make(f"91420600MA4K6{i:04d}") for i in range(1_500)]
    stream: list[dict[str, object]] = []
    for i, uscc in enumerate(many):
        stream.append(enterprise_record(uscc))
        if i % 3 == 0:
            stream.append(tax_record(uscc))
    reply = import_facts(feed_stubs, stream, bearer(TAX_FEED_TOKEN))
    assert (reply.received_count, reply.stored_count, reply.rejected_count) == (2_000, 500, 1_500)
    assert len(reply.rejects) == MAX_REPORTED_REJECTS
    indexes = [r.record_index for r in reply.rejects]
    expected = [n for n, record in enumerate(stream, start=1) if record["kind"] == "enterprise"]
    assert indexes == expected[:MAX_REPORTED_REJECTS], "the first ones, in stream order"
