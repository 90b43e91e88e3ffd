"""`benefits serve` as a process: SIGTERM lets in-flight calls finish, refuses new ones, and
exits 0 within the grace period (SQLite)."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from benefits.v1 import policy_service_pb2, registry_service_pb2
from sqlalchemy import select
from testkit.api_fixtures import (
    Stubs,
    as_role,
    enterprise_record,
    load_registry,
    registry_records,
    rpc_error,
    write_auth_file,
)
from testkit.server_process import ServerProcess, server_process

from enterprise_registry.db import make_engine
from enterprise_registry.models import table_for
from enterprise_registry.uscc import make
from service.config import ServeConfig

GRACE = ServeConfig.shutdown_grace_seconds  # what `benefits serve` uses


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    load_registry(url, registry_records())
    return url


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    auth_file = write_auth_file(tmp_path / "auth.yaml")
    with server_process(sqlite_url, auth_file, tmp_path / "server.log") as running:
        yield running


def _list_policies(stubs: Stubs) -> policy_service_pb2.ListPoliciesResponse:
    reply: policy_service_pb2.ListPoliciesResponse = stubs.policy.ListPolicies(
        policy_service_pb2.ListPoliciesRequest(), metadata=as_role("admin"), timeout=10
    )
    return reply


def _stored_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        table = table_for("enterprise")
        with engine.connect() as conn:
            return {row.name for row in conn.execute(select(table.c.name))}
    finally:
        engine.dispose()


def test_sigterm_finishes_the_call_in_flight_refuses_new_ones_and_exits_0(
    server: tuple[ServerProcess, int], sqlite_url: str
) -> None:
    child, port = server
    stubs = Stubs.connect(port)
    gate = threading.Event()
    first, second = make("91420600MA4K50001"), make("91420600MA4K50002")

    def feed() -> Iterator[registry_service_pb2.ImportFactsRequest]:
        # A client stream held open across SIGTERM: the call in flight during shutdown.
        yield registry_service_pb2.ImportFactsRequest(
            record_json=json.dumps(enterprise_record(first, name="停机前有限公司"), ensure_ascii=False)
        )
        gate.wait(timeout=30)
        yield registry_service_pb2.ImportFactsRequest(
            record_json=json.dumps(enterprise_record(second, name="停机中有限公司"), ensure_ascii=False)
        )

    in_flight = stubs.registry.ImportFacts.future(feed(), metadata=as_role("registry_feed"), timeout=60)
    try:
        # A call made just before SIGTERM completes; on the same connection it also makes
        # sure the server has the streaming call by now.
        assert len(_list_policies(stubs).policies) == 6
        time.sleep(0.2)
        signalled = time.monotonic()
        child.proc.send_signal(signal.SIGTERM)
        child.wait_for(re.compile("shutting down"), timeout=10)
        # New calls are refused while the call in flight goes on.
        late = Stubs.connect(port)
        try:
            err = rpc_error(lambda: _list_policies(late))
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            late.channel.close()
        assert not in_flight.done()
        gate.set()
        reply = in_flight.result(timeout=GRACE)
        assert (reply.received_count, reply.stored_count, list(reply.rejects)) == (2, 2, [])
        assert child.proc.wait(timeout=GRACE + 5) == 0
        assert time.monotonic() - signalled < GRACE
    finally:
        gate.set()
        in_flight.cancel()
        stubs.channel.close()
    assert {"停机前有限公司", "停机中有限公司"} <= _stored_names(sqlite_url)
    # Gone: a later call fails UNAVAILABLE.
    after = Stubs.connect(port)
    try:
        assert rpc_error(lambda: _list_policies(after)).code() == grpc.StatusCode.UNAVAILABLE
    finally:
        after.channel.close()


def test_sigint_on_an_idle_server_exits_0_at_once(server: tuple[ServerProcess, int]) -> None:
    child, port = server
    stubs = Stubs.connect(port)
    try:
        assert len(_list_policies(stubs).policies) == 6
    finally:
        stubs.channel.close()
    signalled = time.monotonic()
    child.proc.send_signal(signal.SIGINT)
    assert child.proc.wait(timeout=GRACE + 5) == 0
    assert time.monotonic() - signalled < 3.0
    child.wait_for(re.compile("shutting down"), timeout=5)
