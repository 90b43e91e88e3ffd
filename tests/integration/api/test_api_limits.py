"""Per-principal limits from the auth file, over a real socket (issue 12): calls per second
(RESOURCE_EXHAUSTED with the RetryInfo delay after which the call is admitted), calls in flight,
bytes per request message (no retry hint: the same message never fits), and the wait for a
request; a principal over its limits never slows another. Limits are DB-independent; the
ImportFacts cases commit, so both databases run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from benefits.v1 import benefit_service_pb2, policy_service_pb2, registry_service_pb2
from sqlalchemy import func, select
from testkit.api_fixtures import (
    A,
    B,
    Stubs,
    as_role,
    bearer,
    channel_stubs,
    enterprise_record,
    registry_records,
    retry_delays,
    rpc_error,
    serving,
    silent_call,
)
from testkit.databases import BACKENDS, fresh_database
from testkit.money_fixtures import uscc

from enterprise_registry.models import Enterprise
from service.api.servicers import IMPORT_CHUNK
from service.server import RunningServer

LIMITED = "limited-enterprise-token-0123456789"  # 2 calls/s, burst 3
NARROW = "narrow-admin-token-0123456789"  # 2 calls in flight
SMALL_FEED = "small-feed-token-0123456789"  # request messages of at most 1,024 bytes
PRINCIPALS = [
    {
        "principal": "limited-enterprise",
        "role": "enterprise",
        "uscc": B,
        "token": LIMITED,
        "limits": {"calls_per_second": 2, "burst": 3},
    },
    {"principal": "narrow-admin", "role": "admin", "token": NARROW, "limits": {"max_in_flight": 2}},
    {
        "principal": "small-feed",
        "role": "registry_feed",
        "sources": ["market_regulation"],
        "token": SMALL_FEED,
        "limits": {"max_request_bytes": 1024},
    },
]
IDLE_SECONDS = 2.0
LIST = policy_service_pb2.ListPoliciesRequest()
LIST_METHOD = "/benefits.v1.PolicyService/ListPolicies"


@pytest.fixture(scope="module", params=BACKENDS)
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("limits")
    with (
        fresh_database(request.param, folder) as url,
        serving(url, registry_records(), folder, principals=PRINCIPALS, request_idle_seconds=IDLE_SECONDS) as running,
    ):
        yield running


@pytest.fixture
def stubs(limited: RunningServer) -> Iterator[Stubs]:
    yield from channel_stubs(limited.port)


def _explain(stubs: Stubs, token: str, **fields: object) -> object:
    request = benefit_service_pb2.ExplainEligibilityRequest(
        **{"uscc": B, "policy_id": "stable-jobs-refund", "period": 2025, **fields}  # type: ignore[arg-type]
    )
    return stubs.benefit.ExplainEligibility(request, metadata=bearer(token), timeout=20)


def test_a_burst_beyond_the_rate_is_refused_with_when_to_retry(stubs: Stubs) -> None:
    time.sleep(1.5)  # a full bucket (3 tokens at 2/s)
    for _ in range(3):  # a quick call, so that the bucket barely refills meanwhile
        stubs.policy.ListPolicies(LIST, metadata=bearer(LIMITED), timeout=5)
    err = rpc_error(lambda: stubs.policy.ListPolicies(LIST, metadata=bearer(LIMITED), timeout=5))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 calls per second" in (err.details() or "")
    [delay] = retry_delays(err)
    assert 0 < delay <= 0.5  # one token at 2 per second
    stubs.policy.ListPolicies(LIST, metadata=as_role("admin"), timeout=5)  # another principal: unaffected
    time.sleep(delay)
    _explain(stubs, LIMITED)  # admitted once the delay has passed, whatever the method


def test_calls_in_flight_beyond_the_principals_maximum_are_refused(stubs: Stubs, limited: RunningServer) -> None:
    release = threading.Event()
    held = [silent_call(stubs.channel, LIST_METHOD, bearer(NARROW), release) for _ in range(2)]
    deadline = time.monotonic() + 5
    while limited.admission.in_flight("narrow-admin") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    err = rpc_error(lambda: stubs.policy.ListPolicies(LIST, metadata=bearer(NARROW), timeout=5))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "calls of this principal are open" in (err.details() or "")
    assert retry_delays(err) == [1.0]
    stubs.policy.ListPolicies(LIST, metadata=as_role("admin"), timeout=5)  # another admin: unaffected
    for call in held:
        call.cancel()
    release.set()
    deadline = time.monotonic() + 5
    while limited.admission.in_flight("narrow-admin"):
        assert time.monotonic() < deadline, "a cancelled call still counts as in flight"
        time.sleep(0.02)
    stubs.policy.ListPolicies(LIST, metadata=bearer(NARROW), timeout=5)


def test_a_request_larger_than_the_principal_may_send_is_refused_without_a_retry_hint(stubs: Stubs) -> None:
    # An enterprise may send 16 KiB by default (service.api.admission.ROLE_LIMITS); the suite's
    # enterprise has only its rate raised.
    request = benefit_service_pb2.ExplainEligibilityRequest(uscc=A, policy_id="x" * 20_000, period=2025)
    err = rpc_error(lambda: stubs.benefit.ExplainEligibility(request, metadata=as_role("enterprise"), timeout=5))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceeds this principal's limit of 16384 bytes" in (err.details() or "")
    assert retry_delays(err) == []


def _count(limited: RunningServer) -> int:
    with limited.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Enterprise)).scalar_one())


def _records(first: int, count: int, prefix: str) -> list[registry_service_pb2.ImportFactsRequest]:
    return [
        registry_service_pb2.ImportFactsRequest(record_json=json.dumps(enterprise_record(uscc(n, prefix))))
        for n in range(first, first + count)
    ]


def test_an_oversized_record_ends_the_stream_saying_what_was_committed(stubs: Stubs, limited: RunningServer) -> None:
    before = _count(limited)
    big = registry_service_pb2.ImportFactsRequest(
        record_json=json.dumps(enterprise_record(uscc(9_999, "MA4W"), name="大" * 600))
    )
    err = rpc_error(
        lambda: stubs.registry.ImportFacts(
            iter([*_records(0, IMPORT_CHUNK + 5, "MA4W"), big]), metadata=bearer(SMALL_FEED), timeout=60
        )
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.details() or ""
    assert "exceeds this principal's limit of 1024 bytes" in details
    assert f"{IMPORT_CHUNK} valid records before it were committed" in details
    assert _count(limited) == before + IMPORT_CHUNK  # the full chunk; the five after it are not committed


def test_a_stream_that_goes_silent_is_ended_after_the_idle_bound(stubs: Stubs, limited: RunningServer) -> None:
    release = threading.Event()

    def two_then_silence() -> Iterator[registry_service_pb2.ImportFactsRequest]:
        yield from _records(0, 2, "MA4X")
        release.wait(30)

    started = time.monotonic()
    err = rpc_error(
        lambda: stubs.registry.ImportFacts(two_then_silence(), metadata=as_role("registry_feed"), timeout=30)
    )
    release.set()
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert f"no request message arrived within {IDLE_SECONDS:g} s" in (err.details() or "")
    assert "0 valid records before it were committed" in (err.details() or "")
    assert time.monotonic() - started < 25  # ended by the server's bound, not the client's deadline


def test_bytes_that_are_no_message_of_the_method_are_invalid_argument(stubs: Stubs) -> None:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = stubs.channel.unary_unary("/benefits.v1.PolicyService/GetPolicy")
    err = rpc_error(lambda: call(b"\xff\xff\xff", metadata=tuple(as_role("admin")), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in (err.details() or "")
