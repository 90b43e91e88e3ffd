"""A server killed with SIGKILL in the middle of a payout batch, for real: a `benefits serve`
child process is killed while the batch runs (more than once), restarted on the same database,
and the same request finishes the same batch - no enterprise missing, none doubled, no half
batch ever visible as complete. On SQLite and PostgreSQL."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import grpc
import orjson
import pytest
from benefits.v1 import payout_service_pb2 as pb
from sqlalchemy import func, select
from testkit.api_fixtures import Stubs, as_role, load_registry, write_auth_file
from testkit.databases import BACKENDS, fresh_database
from testkit.server_process import server_process

from enterprise_registry.db import make_engine
from enterprise_registry.synthetic import generate
from rules.evaluator import evaluate
from rules.values import Outcome
from service.audit.ledger import ledger_entry, verify
from service.audit.records import evaluation_record, verify_records
from service.cli.defaults import load_policies
from service.facts_documents import DocumentSource, build_document
from service.payouts.seals import MONEY_EVENT_KIND, MoneyEvent
from service.payouts.tables import grant, payout_batch, payout_candidate
from service.payouts.verification import verify_payouts

ENTERPRISES = 400
CHUNK = 10  # small chunks: the batch runs for seconds and commits often
LEASE_SECONDS = "1"  # a dead worker's batch is taken over after a second
POLICY, PERIOD = "stable-jobs-refund", 2025
REQUEST_ID = "req-crash-test-0001"
OPERATOR = as_role("finance_operator")
KILL_AT = (0.2, 0.6)  # fractions of the registry evaluated when the server is killed


@pytest.fixture(params=BACKENDS)
def crash_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path, "crash.db") as url:
        load_registry(url, list(generate(ENTERPRISES, seed=11)))
        yield url


def _create(stubs: Stubs) -> pb.PayoutBatch:
    started: pb.PayoutBatch = stubs.payout.CreatePayoutBatch(
        pb.CreatePayoutBatchRequest(policy_id=POLICY, period=PERIOD, request_id=REQUEST_ID),
        metadata=OPERATOR,
        timeout=30,
    )
    return started


def _watch_until(stubs: Stubs, batch_id: str, evaluated_at_least: int) -> pb.PayoutBatchProgress:
    """Follow the batch until it has evaluated that many enterprises (or left RUNNING)."""
    progress: pb.PayoutBatchProgress
    for progress in stubs.payout.WatchPayoutBatch(
        pb.WatchPayoutBatchRequest(batch_id=batch_id), metadata=OPERATOR, timeout=120
    ):
        if progress.evaluated_count >= evaluated_at_least or progress.batch.state != pb.BATCH_STATE_RUNNING:
            return progress
    raise AssertionError("the progress stream ended while the batch was RUNNING")


def _state_in_database(url: str, batch_id: str) -> tuple[str, int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            state, evaluated = conn.execute(
                select(payout_batch.c.state, payout_batch.c.evaluated_count).where(payout_batch.c.batch_id == batch_id)
            ).one()
            grants = conn.execute(
                select(func.count()).select_from(grant).where(grant.c.batch_id == batch_id)
            ).scalar_one()
        return state, evaluated, grants
    finally:
        engine.dispose()


def _expected_lines(url: str, today: date) -> dict[str, int]:
    """Every eligible enterprise and its amount, evaluated here, independently of the server."""
    policy = load_policies().get(POLICY)
    compiled = policy.compiled(PERIOD)
    engine = make_engine(url)
    try:
        expected = {}
        for rows in DocumentSource(engine).all_rows():
            result = evaluate(compiled, build_document(rows, policy.fact_year(PERIOD)), today=today)
            if result.outcome == Outcome.ELIGIBLE:
                expected[rows.uscc] = result.amount_fen
        return expected
    finally:
        engine.dispose()


@pytest.mark.parametrize("workers", [1, 3], ids=["in-the-server", "three-worker-processes"])
def test_sigkill_during_a_batch_and_restart_finish_the_same_batch_exactly_once(
    crash_db_url: str, tmp_path: Path, workers: int
) -> None:
    auth_file = write_auth_file(tmp_path / "auth.yaml")
    log_file = tmp_path / "server.log"
    serve_args = ("--batch-chunk", str(CHUNK), "--batch-lease-seconds", LEASE_SECONDS, "--batch-workers", str(workers))
    batch_id = ""
    for kill_at in KILL_AT:
        with server_process(crash_db_url, auth_file, log_file, *serve_args) as (child, port):
            stubs = Stubs.connect(port)
            batch = _create(stubs)  # the first time it starts the batch; later, the same request resumes it
            assert batch.batch_id == (batch_id or batch.batch_id)
            batch_id = batch.batch_id
            progress = _watch_until(stubs, batch_id, int(ENTERPRISES * kill_at))
            assert progress.batch.state == pb.BATCH_STATE_RUNNING, "the batch finished before the kill"
            child.proc.send_signal(signal.SIGKILL)
            child.proc.wait(timeout=10)
            stubs.channel.close()
        state, evaluated, grants = _state_in_database(crash_db_url, batch_id)
        # Killed mid-run: still RUNNING, progress kept, and not one line visible.
        assert (state, grants) == ("RUNNING", 0)
        # (On a loaded machine the kill may land after the last chunk, while the batch turns DRAFT:
        # a crash point as good as any, and still no line may be visible.)
        assert int(ENTERPRISES * kill_at) <= evaluated <= ENTERPRISES

    with server_process(crash_db_url, auth_file, log_file, *serve_args) as (child, port):
        stubs = Stubs.connect(port)
        assert _create(stubs).batch_id == batch_id
        final = _watch_until(stubs, batch_id, ENTERPRISES + 1)
        lines = stubs.payout.ListPayoutLines(
            pb.ListPayoutLinesRequest(batch_id=batch_id, page_size=1000), metadata=OPERATOR, timeout=30
        ).lines
        stubs.channel.close()
    assert final.batch.state == pb.BATCH_STATE_DRAFT
    assert final.evaluated_count == ENTERPRISES and final.error_count == 0

    expected = _expected_lines(crash_db_url, date.today())
    assert len(expected) > ENTERPRISES // 4  # a batch worth the name
    assert {line.uscc: line.amount_fen for line in lines} == expected  # none missing
    assert len(lines) == len({line.uscc for line in lines}) == final.batch.line_count  # none doubled
    assert final.batch.total_fen == sum(expected.values())
    engine = make_engine(crash_db_url)
    try:
        with engine.connect() as conn:
            # Each enterprise evaluated into the batch exactly once, crashes notwithstanding.
            recorded = (
                conn.execute(select(evaluation_record.c.uscc).where(evaluation_record.c.batch_id == batch_id))
                .scalars()
                .all()
            )
            assert len(recorded) == len(set(recorded)) == ENTERPRISES
            candidates = conn.execute(
                select(func.count()).select_from(payout_candidate).where(payout_candidate.c.batch_id == batch_id)
            ).scalar_one()
            assert candidates == len(expected)
            assert verify(conn).valid
            assert verify_records(conn) == []
            assert verify_payouts(conn) == []  # the money events survived the kills: start, then DRAFT
            events = [
                orjson.loads(p)["event"]
                for p in conn.execute(
                    select(ledger_entry.c.payload).where(ledger_entry.c.kind == MONEY_EVENT_KIND)
                ).scalars()
            ]
            assert events == [MoneyEvent.START, MoneyEvent.DRAFT]
    finally:
        engine.dispose()


def test_a_second_server_takes_over_a_batch_only_after_the_lease_runs_out(crash_db_url: str, tmp_path: Path) -> None:
    """Two servers on one database: the batch belongs to one worker at a time."""
    auth_file = write_auth_file(tmp_path / "auth.yaml")
    serve_args = ("--batch-chunk", str(CHUNK), "--batch-lease-seconds", "30")
    with server_process(crash_db_url, auth_file, tmp_path / "a.log", *serve_args) as (first, port):
        stubs = Stubs.connect(port)
        batch_id = _create(stubs).batch_id
        _watch_until(stubs, batch_id, CHUNK)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        stubs.channel.close()
    killed_at = _state_in_database(crash_db_url, batch_id)[1]
    with server_process(crash_db_url, auth_file, tmp_path / "b.log", *serve_args) as (_, port):
        stubs = Stubs.connect(port)
        before = stubs.payout.GetPayoutBatch(pb.GetPayoutBatchRequest(batch_id=batch_id), metadata=OPERATOR)
        try:
            # The dead worker's lease (30 s) has not run out: nobody may touch the batch yet.
            stream = stubs.payout.WatchPayoutBatch(
                pb.WatchPayoutBatchRequest(batch_id=batch_id), metadata=OPERATOR, timeout=2
            )
            with pytest.raises(grpc.RpcError) as waited:
                for _ in stream:
                    pass
            assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            stubs.channel.close()
    assert before.state == pb.BATCH_STATE_RUNNING
    assert _state_in_database(crash_db_url, batch_id) == ("RUNNING", killed_at, 0)  # untouched
    assert 0 < killed_at < ENTERPRISES
