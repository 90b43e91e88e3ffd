"""Lookups on SQLite and PostgreSQL: decided by the decide path, explained by the reference
evaluator (and refused when the two disagree), recorded once and answered from that record while
rule text, facts and day stay the same; concurrent lookups share chunks and are group-committed
through the API, and a failing group fails its calls, not the server."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import grpc
import pytest
from benefits.v1 import audit_service_pb2, benefit_service_pb2, evaluation_pb2
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from testkit.api_fixtures import (
    E_SMALL,
    LOADED,
    SJR,
    UNKNOWN,
    A,
    B,
    Stubs,
    as_role,
    channel_stubs,
    load_registry,
    registry_records,
    rpc_error,
    serving,
    si_record,
)
from testkit.audit_checks import accept_records, assert_audit_valid, refuse_records

from enterprise_registry.db import make_engine
from enterprise_registry.importer import load_records
from rules.errors import EngineDisagreementError, EngineError
from rules.evaluator import evaluate
from rules.facts import FactsDocument
from rules.loader import PolicySet
from service.audit.decision import Decision
from service.audit.facts_json import snapshot_of
from service.audit.ledger import ledger_transaction
from service.audit.records import Actor, evaluation_record, load_record, prepare_decision, write_records
from service.audit.verification import verify_audit_log
from service.errors import EnterpriseNotFoundError, RecordMismatchError
from service.evaluation import chunks, decide
from service.evaluation import lookups as lookups_module
from service.evaluation.lookups import Lookups, in_force
from service.evaluation.recorder import Recorder
from service.facts_documents import DocumentSource
from service.payouts.tables import create_payout_schema

TODAY = date(2026, 3, 31)
ACTOR = Actor("test-lookups", "admin")
WAIT_SECONDS = 20.0


@pytest.fixture
def registry(db_url: str) -> Iterator[Engine]:
    load_registry(db_url, registry_records())
    engine = make_engine(db_url)
    create_payout_schema(engine)  # the audit trail's tables included
    yield engine
    engine.dispose()


@pytest.fixture
def recorder(registry: Engine) -> Iterator[Recorder]:
    with Recorder(registry) as running:
        yield running


@pytest.fixture
def lookups(registry: Engine, recorder: Recorder) -> Lookups:
    return Lookups(registry, recorder)


def _explain(lookups: Lookups, policies: PolicySet, uscc: str, policy_id: str = SJR, today: date = TODAY) -> Any:
    return lookups.explain(policies, uscc=uscc, policy_id=policy_id, period=2025, today=today, actor=ACTOR)


def _document(source: DocumentSource, uscc: str, fact_year: int) -> FactsDocument:
    document = source.document(uscc, fact_year)
    assert document is not None, f"nothing on record for {uscc}"
    return document


def _records(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(evaluation_record)).scalar_one())


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


# ---------------------------------------------------------------------------------------------
# One lookup.
def test_every_lookup_decides_as_the_reference_evaluator_and_records_that_decision(
    registry: Engine, lookups: Lookups, policies: PolicySet
) -> None:
    source = DocumentSource(registry)
    outcomes = set()
    for uscc in LOADED:
        for policy in in_force(policies, 2025):
            answer = _explain(lookups, policies, uscc, policy.id)
            expected = evaluate(policy.compiled(2025), _document(source, uscc, policy.fact_year(2025)), today=TODAY)
            assert answer.evaluation == expected and not answer.reused
            with registry.connect() as conn:
                record = load_record(conn, answer.evaluation_id)
            assert record is not None and Decision.from_record(record) == Decision.of(expected)
            assert record["actor"] == {"principal": ACTOR.principal, "role": ACTOR.role}
            outcomes.add(expected.outcome)
    assert outcomes == {"ELIGIBLE", "INELIGIBLE", "UNDETERMINED", "HELD"}
    assert _records(registry) == len(LOADED) * len(in_force(policies, 2025))
    assert_audit_valid(registry)


def test_the_same_decision_is_answered_from_its_record(registry: Engine, lookups: Lookups, policies: PolicySet) -> None:
    first = _explain(lookups, policies, A)
    again = lookups.explain(
        policies, uscc=A, policy_id=SJR, period=2025, today=TODAY, actor=Actor("someone-else", "enterprise")
    )
    assert (again.evaluation_id, again.reused, again.evaluation) == (first.evaluation_id, True, first.evaluation)
    assert _records(registry) == 1
    later = _explain(lookups, policies, A, today=date(2026, 4, 1))  # another evaluation date
    assert later.evaluation_id != first.evaluation_id and not later.reused
    assert _records(registry) == 2


def test_changed_facts_are_a_new_decision_with_a_new_record(
    registry: Engine, lookups: Lookups, policies: PolicySet
) -> None:
    first = _explain(lookups, policies, A)
    load_records([si_record(A, ui_premium_paid_fen=100_000_001)], registry)  # same as_of: replaces it
    changed = _explain(lookups, policies, A)
    assert changed.evaluation_id != first.evaluation_id and not changed.reused
    assert (first.evaluation.amount_fen, changed.evaluation.amount_fen) == (37037015, 30000000)
    assert _explain(lookups, policies, A).evaluation_id == changed.evaluation_id
    assert _records(registry) == 2
    assert_audit_valid(registry)


def test_an_altered_record_is_never_answered_from(registry: Engine, lookups: Lookups, policies: PolicySet) -> None:
    first = _explain(lookups, policies, A)
    with registry.begin() as conn:
        conn.execute(
            text("UPDATE evaluation_record SET record = replace(record, :a, :b) WHERE evaluation_id = :e"),
            {"a": '"amount_fen":37037015', "b": '"amount_fen":1', "e": first.evaluation_id},
        )
    again = _explain(lookups, policies, A)
    assert again.evaluation_id != first.evaluation_id and not again.reused
    assert again.evaluation.amount_fen == 37037015


def test_a_faithfully_sealed_record_that_decides_otherwise_is_refused(
    registry: Engine, lookups: Lookups, policies: PolicySet
) -> None:
    first = _explain(lookups, policies, A)
    policy = policies.get(SJR)
    with registry.connect() as conn:
        genuine = Decision.from_record(load_record(conn, first.evaluation_id) or {})
    facts_json, facts_sha256 = snapshot_of(_document(DocumentSource(registry), A, policy.fact_year(2025)))
    wrong = prepare_decision(
        dataclasses.replace(genuine, amount_fen=genuine.amount_fen + 100), facts_json, facts_sha256, ACTOR
    )
    with ledger_transaction(registry) as conn:  # sealed like any record: only the decision is wrong
        write_records(conn, policy, [wrong])
    with pytest.raises(RecordMismatchError) as refused:
        _explain(lookups, policies, A)
    assert refused.value.evaluation_id == wrong.evaluation_id and "amount_fen" in str(refused.value)


def test_a_disagreement_of_decide_path_and_reference_evaluator_is_an_error(
    registry: Engine, lookups: Lookups, policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    genuine = evaluate  # what lookups calls: it imports it from rules.evaluator (no re-export)

    def off_by_one_fen(*args: Any, **kwargs: Any) -> Any:
        evaluation = genuine(*args, **kwargs)
        return dataclasses.replace(evaluation, amount_fen=evaluation.amount_fen + 1)

    monkeypatch.setattr(lookups_module, "evaluate", off_by_one_fen)
    with pytest.raises(EngineDisagreementError) as raised:
        _explain(lookups, policies, A)
    assert "amount_fen: decide path 37037015, reference evaluator 37037016" in str(raised.value)
    assert _records(registry) == 0  # nothing answered, nothing recorded


def test_an_enterprise_without_facts_and_a_policy_out_of_force_are_refused(
    lookups: Lookups, policies: PolicySet
) -> None:
    with pytest.raises(EnterpriseNotFoundError):
        _explain(lookups, policies, UNKNOWN)
    from rules.errors import PeriodNotCoveredError

    with pytest.raises(PeriodNotCoveredError):
        lookups.explain(policies, uscc=A, policy_id=SJR, period=2001, today=TODAY, actor=ACTOR)


# ---------------------------------------------------------------------------------------------
# Concurrent lookups: shared chunks, errors kept to their own lookup.
def _concurrently(lookups: Lookups, cases: list[tuple[str, str]], policies: PolicySet) -> list[Any]:
    """Run the cases at once while a first lookup (of another enterprise) holds the reader, so
    that all of them queue and share the next chunk; each case's answer or error."""
    gate, reading = threading.Event(), threading.Event()
    genuine = chunks.read_chunk  # what lookups calls: it imports it from chunks (no re-export)

    def held_read(*args: Any, **kwargs: Any) -> Any:
        reading.set()
        gate.wait(WAIT_SECONDS)
        return genuine(*args, **kwargs)

    def run(case: tuple[str, str]) -> Any:
        try:
            return _explain(lookups, policies, *case)
        except Exception as exc:
            return exc

    with (
        mock.patch.object(lookups_module, "read_chunk", held_read),
        ThreadPoolExecutor(max_workers=len(cases) + 1) as pool,
    ):
        # Another day: none of the cases can be answered from the first lookup's record.
        first = pool.submit(lambda: _explain(lookups, policies, E_SMALL, "high-tech-reward", date(2026, 4, 1)))
        assert reading.wait(WAIT_SECONDS)
        futures = [pool.submit(run, case) for case in cases]
        _wait_until(lambda: lookups.queued == len(cases), "every lookup is queued behind the first reader")
        gate.set()
        assert not isinstance(first.result(WAIT_SECONDS), Exception)
        return [f.result(WAIT_SECONDS) for f in futures]


def test_concurrent_lookups_share_chunks_and_answer_each_its_own(
    registry: Engine, lookups: Lookups, policies: PolicySet
) -> None:
    cases = [(uscc, p.id) for uscc in LOADED for p in in_force(policies, 2025)] + [(UNKNOWN, SJR)]
    answers = _concurrently(lookups, cases, policies)
    assert lookups.chunks_read == 2  # the first alone, then everyone queued behind it
    source = DocumentSource(registry)
    for (uscc, policy_id), answer in zip(cases, answers):
        if uscc == UNKNOWN:
            assert isinstance(answer, EnterpriseNotFoundError)
            continue
        policy = policies.get(policy_id)
        expected = evaluate(policy.compiled(2025), _document(source, uscc, policy.fact_year(2025)), today=TODAY)
        assert not isinstance(answer, Exception), (uscc, policy_id, answer)
        assert (answer.evaluation.uscc, answer.evaluation) == (uscc, expected)
    assert _records(registry) == len(cases)  # and the first lookup's
    assert_audit_valid(registry)


def test_a_chunk_that_fails_is_decided_again_one_enterprise_at_a_time(
    registry: Engine, lookups: Lookups, policies: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    genuine = decide.decide_chunk  # what lookups calls: it imports it from decide (no re-export)

    def refuses_b(plan: Any, columns: Any, **kwargs: Any) -> Any:
        if B in next(iter(columns.values())).usccs:
            raise EngineError("the engine refused B")
        return genuine(plan, columns, **kwargs)

    monkeypatch.setattr(lookups_module, "decide_chunk", refuses_b)
    cases = [(A, SJR), (B, SJR), (A, "job-expansion-subsidy")]
    answers = _concurrently(lookups, cases, policies)
    # The shared chunk failed; read again alone, A's two lookups were decided, B's failed again.
    assert lookups.chunks_read == 1 + 2
    assert isinstance(answers[1], EngineError)
    assert [a.evaluation.uscc for i, a in enumerate(answers) if i != 1] == [A, A]
    assert _records(registry) == 1 + 2


# ---------------------------------------------------------------------------------------------
# Through the API: group commit, every answered id durable and verifiable.
@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[Any]:
    with serving(db_url, registry_records(), tmp_path) as running:
        yield running


@pytest.fixture
def stubs(served: Any) -> Iterator[Stubs]:
    yield from channel_stubs(served.port)


def _api_explain(stubs: Stubs, uscc: str, policy_id: str) -> Any:
    return stubs.benefit.ExplainEligibility(
        benefit_service_pb2.ExplainEligibilityRequest(uscc=uscc, policy_id=policy_id, period=2025),
        metadata=as_role("admin"),
        timeout=WAIT_SECONDS,
    )


def _all_combinations(policies: PolicySet) -> list[tuple[str, str]]:
    return [(uscc, p.id) for uscc in LOADED for p in in_force(policies, 2025)]


def _while_the_ledger_is_held(served: Any, calls: list[Callable[[], Any]]) -> list[Any]:
    """Make the calls at once while the ledger lock is held, until every server thread that can
    is waiting for its records to be committed; each call's reply or error."""

    def run(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except grpc.RpcError as err:
            return err

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        with ledger_transaction(served.engine):
            futures = [pool.submit(run, call) for call in calls]
            _wait_until(
                lambda: served.recorder.outstanding >= min(len(calls), 16) - 1,
                "the server's threads wait for the recorder",
            )
        return [f.result(WAIT_SECONDS) for f in futures]


def test_concurrent_explanations_are_group_committed_and_every_id_verifies(
    served: Any, stubs: Stubs, policies: PolicySet
) -> None:
    cases = _all_combinations(policies)
    before = served.recorder.transactions
    replies = _while_the_ledger_is_held(served, [partial(_api_explain, stubs, *case) for case in cases])
    assert all(not isinstance(r, grpc.RpcError) for r in replies), replies
    transactions = served.recorder.transactions - before
    assert 1 <= transactions <= len(cases) // 2, transactions
    auditor = as_role("auditor")
    for (uscc, policy_id), reply in zip(cases, replies):
        stored = stubs.audit.GetEvaluation(
            audit_service_pb2.GetEvaluationRequest(evaluation_id=reply.evaluation.evaluation_id), metadata=auditor
        )
        assert (stored.uscc, stored.policy_id, stored.outcome, stored.amount_fen) == (
            uscc,
            policy_id,
            reply.evaluation.outcome,
            reply.evaluation.amount_fen,
        )
    verdict = stubs.audit.VerifyAuditLog(audit_service_pb2.VerifyAuditLogRequest(), metadata=auditor)
    assert verdict.valid, verdict.detail
    assert verdict.entries_checked <= transactions * len(in_force(policies, 2025))
    again = _api_explain(stubs, *cases[0])  # the same decision: its record
    assert again.evaluation.evaluation_id == replies[0].evaluation.evaluation_id


def test_a_failing_group_fails_its_calls_cleanly_and_later_calls_succeed(
    served: Any, stubs: Stubs, policies: PolicySet
) -> None:
    cases = _all_combinations(policies)[:10]
    with served.engine.begin() as conn:
        refuse_records(conn)
    failed = _while_the_ledger_is_held(served, [partial(_api_explain, stubs, *case) for case in cases])
    assert all(isinstance(r, grpc.RpcError) and r.code() == grpc.StatusCode.INTERNAL for r in failed), failed
    assert all("internal error (reference" in r.details() for r in failed)  # no database text leaks
    assert served.recorder.failed_groups >= 1
    with served.engine.begin() as conn:
        accept_records(conn)
    replies = [_api_explain(stubs, *case) for case in cases]  # the recorder went on
    assert [r.evaluation.uscc for r in replies] == [uscc for uscc, _ in cases]
    with served.engine.connect() as conn:
        assert verify_audit_log(conn).valid
        for reply in replies:
            assert load_record(conn, reply.evaluation.evaluation_id) is not None
    assert rpc_error(lambda: _api_explain(stubs, UNKNOWN, SJR)).code() == grpc.StatusCode.NOT_FOUND


def test_list_matched_benefits_records_each_policy_once_and_then_reuses(
    served: Any, stubs: Stubs, policies: PolicySet
) -> None:
    request = benefit_service_pb2.ListMatchedBenefitsRequest(uscc=A, period=2025)
    first = stubs.benefit.ListMatchedBenefits(request, metadata=as_role("admin"))
    assert len(first.benefits) == len(in_force(policies, 2025))
    assert evaluation_pb2.OUTCOME_ELIGIBLE in {b.outcome for b in first.benefits}
    with served.engine.connect() as conn:
        recorded = dict(conn.execute(select(evaluation_record.c.policy_id, evaluation_record.c.evaluation_id)).all())
    assert sorted(recorded) == sorted(b.policy_id for b in first.benefits)  # one record per policy
    assert stubs.benefit.ListMatchedBenefits(request, metadata=as_role("admin")) == first
    explained = _api_explain(stubs, A, SJR)  # answered from the record ListMatchedBenefits made
    assert explained.evaluation.evaluation_id == recorded[SJR]
    with served.engine.connect() as conn:
        assert int(conn.execute(select(func.count()).select_from(evaluation_record)).scalar_one()) == len(recorded)
