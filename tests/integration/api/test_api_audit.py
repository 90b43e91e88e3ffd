"""AuditService over a real socket: an auditor fetches, lists, verifies and replays the
evaluations that lookups recorded; tampering in SQL is caught, and a rebuilt chain is caught
by the signed checkpoint written outside the database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from benefits.v1 import audit_service_pb2, benefit_service_pb2, evaluation_pb2
from sqlalchemy import text
from testkit.api_fixtures import (
    SJR,
    A,
    B,
    Stubs,
    as_role,
    channel_stubs,
    registry_records,
    serving,
)

from service.audit import checkpoints
from service.server import RunningServer

AUDITOR = as_role("auditor")


@contextmanager
def audited_server(db_url: str, folder: Path) -> Iterator[RunningServer]:
    """A server with a ledger key that writes signed checkpoints into `folder`."""
    checkpoints.generate_key(folder / "ledger-key.pem")
    with serving(
        db_url,
        registry_records(),
        folder,
        ledger_key=folder / "ledger-key.pem",
        checkpoint_file=folder / "checkpoints.jsonl",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api_server(api_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Shared by the tests that put back whatever they tamper with."""
    with audited_server(api_db_url, tmp_path_factory.mktemp("audit")) as running:
        yield running


@pytest.fixture
def own_server(db_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    """A server of one test's own, for a tampering that cannot be put back (a cut ledger)."""
    with audited_server(db_url, tmp_path) as running:
        yield running


@pytest.fixture
def own_stubs(own_server: RunningServer) -> Iterator[Stubs]:
    yield from channel_stubs(own_server.port)


def _explain(stubs: Stubs, uscc: str, role: str = "enterprise") -> evaluation_pb2.Evaluation:
    reply: benefit_service_pb2.ExplainEligibilityResponse = stubs.benefit.ExplainEligibility(
        benefit_service_pb2.ExplainEligibilityRequest(uscc=uscc, policy_id=SJR, period=2025), metadata=as_role(role)
    )
    return reply.evaluation


def _verify(stubs: Stubs) -> audit_service_pb2.VerifyAuditLogResponse:
    verdict: audit_service_pb2.VerifyAuditLogResponse = stubs.audit.VerifyAuditLog(
        audit_service_pb2.VerifyAuditLogRequest(), metadata=AUDITOR
    )
    return verdict


def test_an_auditor_fetches_lists_verifies_and_replays(stubs: Stubs) -> None:
    looked_up = _explain(stubs, A)
    _explain(stubs, B, role="admin")
    stored = stubs.audit.GetEvaluation(
        audit_service_pb2.GetEvaluationRequest(evaluation_id=looked_up.evaluation_id), metadata=AUDITOR
    )
    assert (stored.outcome, stored.amount_fen) == (looked_up.outcome, looked_up.amount_fen)
    # The record is compact: the full trace is rendered by replay, equal to what the lookup showed.
    assert list(stored.conditions) == list(looked_up.conditions) and stored.amount == looked_up.amount
    assert list(stored.payable_conditions) == list(looked_up.payable_conditions)
    listed = stubs.audit.ListEvaluations(
        audit_service_pb2.ListEvaluationsRequest(
            uscc=A, policy_id=SJR, period=2025, outcome=evaluation_pb2.OUTCOME_ELIGIBLE
        ),
        metadata=AUDITOR,
    )
    assert looked_up.evaluation_id in [e.evaluation_id for e in listed.evaluations]
    assert all(e.uscc == A for e in listed.evaluations)
    verdict = _verify(stubs)
    assert verdict.valid and verdict.fault == audit_service_pb2.LEDGER_FAULT_NONE
    assert verdict.entries_checked >= 2
    replayed = stubs.audit.ReplayEvaluation(
        audit_service_pb2.ReplayEvaluationRequest(evaluation_id=looked_up.evaluation_id), metadata=AUDITOR
    )
    assert replayed.identical and list(replayed.differences) == []
    assert replayed.replayed.amount_fen == looked_up.amount_fen


def test_an_unknown_evaluation_is_not_found(stubs: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stubs.audit.GetEvaluation(audit_service_pb2.GetEvaluationRequest(evaluation_id="ev_nope"), metadata=AUDITOR)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_edited_record_is_located(api_server: RunningServer, stubs: Stubs) -> None:
    victim = _explain(stubs, A)
    with api_server.engine.begin() as conn:
        conn.execute(
            text("UPDATE evaluation_record SET record = replace(record, :a, :b) WHERE evaluation_id = :e"),
            {"a": f'"amount_fen":{victim.amount_fen}', "b": '"amount_fen":1', "e": victim.evaluation_id},
        )
    verdict = _verify(stubs)
    assert not verdict.valid and verdict.fault == audit_service_pb2.LEDGER_FAULT_EDITED
    assert victim.evaluation_id in verdict.detail
    with api_server.engine.begin() as conn:  # put it back for the next test
        conn.execute(
            text("UPDATE evaluation_record SET record = replace(record, :b, :a) WHERE evaluation_id = :e"),
            {"a": f'"amount_fen":{victim.amount_fen}', "b": '"amount_fen":1', "e": victim.evaluation_id},
        )
    assert _verify(stubs).valid


def test_a_record_that_no_longer_replays_to_itself_is_refused_not_shown(
    api_server: RunningServer, stubs: Stubs
) -> None:
    victim = _explain(stubs, A)
    edit = {"a": f'"amount_fen":{victim.amount_fen}', "b": '"amount_fen":1', "e": victim.evaluation_id}
    with api_server.engine.begin() as conn:
        conn.execute(
            text("UPDATE evaluation_record SET record = replace(record, :a, :b) WHERE evaluation_id = :e"), edit
        )
    call: Callable[[], object]
    try:
        for call in (
            lambda: stubs.audit.GetEvaluation(
                audit_service_pb2.GetEvaluationRequest(evaluation_id=victim.evaluation_id), metadata=AUDITOR
            ),
            lambda: stubs.audit.ListEvaluations(
                audit_service_pb2.ListEvaluationsRequest(uscc=A, page_size=1000), metadata=AUDITOR
            ),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.DATA_LOSS
            details = info.value.details() or ""
            assert victim.evaluation_id in details
            assert f"amount_fen: stored 1, replayed {victim.amount_fen}" in details
        replayed = stubs.audit.ReplayEvaluation(
            audit_service_pb2.ReplayEvaluationRequest(evaluation_id=victim.evaluation_id), metadata=AUDITOR
        )
        assert not replayed.identical and replayed.replayed.amount_fen == victim.amount_fen
        assert f"amount_fen: stored 1, replayed {victim.amount_fen}" in list(replayed.differences)
    finally:
        with api_server.engine.begin() as conn:  # put it back for the next test
            conn.execute(
                text("UPDATE evaluation_record SET record = replace(record, :b, :a) WHERE evaluation_id = :e"), edit
            )
    assert _verify(stubs).valid


def test_a_cut_tail_contradicts_the_signed_checkpoint(own_server: RunningServer, own_stubs: Stubs) -> None:
    _explain(own_stubs, A)
    own_server.checkpoint()
    with own_server.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER ledger_entry_append_only ON ledger_entry"))
        else:
            conn.execute(text("DROP TRIGGER ledger_entry_no_delete"))
        newest = conn.execute(text("SELECT max(seq) FROM ledger_entry")).scalar_one()
        conn.execute(text("DELETE FROM evaluation_record WHERE ledger_seq = :s"), {"s": newest})
        conn.execute(text("DELETE FROM ledger_entry WHERE seq = :s"), {"s": newest})
    verdict = _verify(own_stubs)
    assert not verdict.valid
    assert verdict.fault == audit_service_pb2.LEDGER_FAULT_CHECKPOINT
    assert "cut off" in verdict.detail and verdict.first_bad_entry == newest


def test_every_recorded_evaluation_of_the_registry_replays_identically(stubs: Stubs) -> None:
    from testkit.api_fixtures import LOADED

    for uscc in LOADED:  # every policy in force, for every enterprise of the test registry
        stubs.benefit.ListMatchedBenefits(
            benefit_service_pb2.ListMatchedBenefitsRequest(uscc=uscc, period=2025), metadata=as_role("admin")
        )
    ids: list[str] = []
    token = ""
    while True:
        page = stubs.audit.ListEvaluations(
            audit_service_pb2.ListEvaluationsRequest(page_size=100, page_token=token), metadata=AUDITOR
        )
        ids += [e.evaluation_id for e in page.evaluations]
        token = page.next_page_token
        if not token:
            break
    assert len(ids) >= len(LOADED) * 6
    for evaluation_id in ids:
        replayed = stubs.audit.ReplayEvaluation(
            audit_service_pb2.ReplayEvaluationRequest(evaluation_id=evaluation_id), metadata=AUDITOR
        )
        assert replayed.identical, (evaluation_id, list(replayed.differences))
