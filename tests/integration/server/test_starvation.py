"""Slow, silent and long-lived callers cannot stop the server answering others (issue 12).

A server with a pool of only two threads, over a real socket: 24 callers without a token and 24
with one open a unary call and never send its body, and 32 watchers follow a batch that stays
RUNNING (another worker holds its lease). Meanwhile Health/Check, ExplainEligibility and
GetPayoutBatch answer; the tokenless callers were refused at once, the silent ones with a token
are ended after the idle bound, and every principal's calls in flight return to zero.

On the synchronous server this replaced, each of those calls held a pool thread (24 silent
callers without a token sufficed to stall it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from benefits.v1 import benefit_service_pb2, payout_service_pb2
from grpc_health.v1 import health_pb2
from testkit.api_fixtures import (
    A,
    as_role,
    connected,
    future_error,
    registry_records,
    serving,
    silent_call,
    wait_until,
)
from testkit.databases import BACKENDS, fresh_database
from testkit.grpc_stubs import health_stub
from testkit.paths import RULES_DIR

from enterprise_registry.clock import Clock
from rules.loader import PolicyStore
from service.audit.records import Actor
from service.catalogue import CATALOGUE
from service.payouts import batches
from service.payouts.runner import claim
from service.server import RunningServer

POOL_THREADS = 2
SILENT_WITHOUT_TOKEN = 24
SILENT_WITH_TOKEN = 24
WATCHERS = 32
IDLE_SECONDS = 3.0
ANSWER_WITHIN = 5.0  # a deadline for the calls that must still be answered, not a speed figure
EXPLAIN = "/benefits.v1.BenefitService/ExplainEligibility"


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    with (
        fresh_database(request.param, tmp_path) as url,
        serving(
            url, registry_records(), tmp_path, max_workers=POOL_THREADS, request_idle_seconds=IDLE_SECONDS
        ) as running,
    ):
        yield running


def _running_batch_held_elsewhere(running: RunningServer) -> str:
    """A RUNNING batch whose lease another (live) worker holds: it stays RUNNING for the test."""
    policies = PolicyStore(RULES_DIR, CATALOGUE).current
    actor = Actor("test-finance_operator", "finance_operator")
    batch = batches.start_batch(
        running.engine,
        policies,
        policy_id="stable-jobs-refund",
        period=2025,
        request_id="starvation-watch",
        actor=actor,
        today=Clock().today(),
    )
    assert claim(running.engine, batch.batch_id, "a-worker-elsewhere", lease_seconds=600)
    return batch.batch_id


def test_silent_callers_and_watchers_do_not_stop_the_server_answering_others(server: RunningServer) -> None:
    release = threading.Event()
    with connected(server.port) as stubs, connected(server.port) as others:
        batch_id = _running_batch_held_elsewhere(server)
        watchers = [
            stubs.payout.WatchPayoutBatch(
                payout_service_pb2.WatchPayoutBatchRequest(batch_id=batch_id),
                metadata=as_role("finance_operator"),
                timeout=60,
            )
            for _ in range(WATCHERS)
        ]
        for watcher in watchers:  # each has its first progress: every watcher is open and served
            assert next(watcher).batch.state == payout_service_pb2.BATCH_STATE_RUNNING
        tokenless = [silent_call(stubs.channel, EXPLAIN, [], release) for _ in range(SILENT_WITHOUT_TOKEN)]
        silent = [silent_call(stubs.channel, EXPLAIN, as_role("admin"), release) for _ in range(SILENT_WITH_TOKEN)]
        time.sleep(0.5)  # every silent call has reached the server

        check = health_stub(others.channel).Check(health_pb2.HealthCheckRequest(), timeout=ANSWER_WITHIN)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        explained = others.benefit.ExplainEligibility(
            benefit_service_pb2.ExplainEligibilityRequest(uscc=A, policy_id="stable-jobs-refund", period=2025),
            metadata=as_role("admin"),
            timeout=ANSWER_WITHIN,
        )
        assert explained.evaluation.uscc == A
        batch = others.payout.GetPayoutBatch(
            payout_service_pb2.GetPayoutBatchRequest(batch_id=batch_id),
            metadata=as_role("finance_operator"),
            timeout=ANSWER_WITHIN,
        )
        assert batch.state == payout_service_pb2.BATCH_STATE_RUNNING

        for call in tokenless:  # refused at the call's start, before any body
            assert future_error(call, ANSWER_WITHIN).code() == grpc.StatusCode.UNAUTHENTICATED
        for call in silent:  # ended by the idle bound, each with a clear status
            error = future_error(call, IDLE_SECONDS + ANSWER_WITHIN)
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert f"within {IDLE_SECONDS:g} s" in (error.details() or "")
        wait_until(lambda: server.admission.in_flight("test-admin") == 0)  # released just after the status went
        assert server.admission.in_flight("test-finance_operator") == WATCHERS
        for watcher in watchers:
            watcher.cancel()
        release.set()
    wait_until(lambda: server.admission.in_flight("test-finance_operator") == 0)
