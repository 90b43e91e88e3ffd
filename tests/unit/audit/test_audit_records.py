"""Evaluation records: stored with facts and rule text, chained, checked, and replayed."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from rules.evaluator import evaluate
from rules.facts import Fact, FactsDocument, Record
from rules.loader import LoadedPolicy, load_policy_file
from service.audit.ledger import verify
from service.audit.records import (
    Actor,
    create_audit_schema,
    document_from_json,
    document_to_json,
    load_record,
    record_evaluation,
    replay,
    verify_records,
)
from service.catalogue import CATALOGUE

POLICY = Path(__file__).resolve().parents[3] / "rules" / "policies" / "stable-jobs-refund.yaml"
AS_OF = date(2025, 1, 31)
TODAY = date(2026, 3, 31)
AUDITOR = Actor("test-auditor", "auditor")


def _document(premium_fen: int = 123_456_715) -> FactsDocument:
    def fact(value: object) -> Fact:
        return Fact(value, "human_resources", AS_OF)  # type: ignore[arg-type]
    facts = {"enterprise.status": fact("active"), "enterprise.org_type": fact("enterprise"),
             "enterprise.labor_dispatch": fact(False), "enterprise.has_bank_account": fact(True),
             "enterprise.established_on": fact(date(2010, 5, 6)),
             "si.ui_months_paid": fact(12), "si.ui_arrears": fact(False),
             "si.ui_benefit_claimants": fact(30), "si.insured_avg_monthly": fact(1000),
             "si.insured_start": fact(1000), "si.ui_premium_paid_fen": fact(premium_fen),
             "si.ui_back_payment_fen": fact(0), "si.ui_late_fee_fen": fact(0),
             "derived.size_class": fact("large")}
    listings = [Record("credit_listing:zombie@2020-01-01", {"list": "zombie", "listed_on": date(2020, 1, 1),
                                                            "removed_on": date(2021, 1, 1)}, "credit", AS_OF)]
    return FactsDocument("91420600MA4K00001M", 2024, facts,
                         {"hires": [], "qualifications": [], "credit_listings": listings}, {"tax": "no record"})


@pytest.fixture
def audit_engine(db_engine: Engine) -> Engine:
    create_audit_schema(db_engine)
    return db_engine


@pytest.fixture(scope="module")
def policy() -> LoadedPolicy:
    return load_policy_file(POLICY, CATALOGUE)


def _record(engine: Engine, policy: LoadedPolicy, document: FactsDocument) -> str:
    result = evaluate(policy.compiled(2025), document, today=TODAY)
    return record_evaluation(engine, result, document, policy, AUDITOR)


def test_a_facts_document_round_trips_with_its_dates() -> None:
    document = _document()
    assert document_from_json(document_to_json(document), CATALOGUE) == document


def test_a_recorded_evaluation_is_chained_and_replays_identically(audit_engine: Engine,
                                                                  policy: LoadedPolicy) -> None:
    evaluation_id = _record(audit_engine, policy, _document())
    with audit_engine.connect() as conn:
        record = load_record(conn, evaluation_id)
        assert record is not None
        assert record["evaluation"]["amount_fen"] == 37_037_015
        assert record["actor"] == {"principal": "test-auditor", "role": "auditor"}
        assert verify(conn).valid and verify_records(conn) == []
    result = replay(audit_engine, evaluation_id, CATALOGUE)
    assert result is not None and result.identical, result.differences
    assert result.replayed.amount_fen == 37_037_015


def test_an_edited_record_is_caught_and_named(audit_engine: Engine, policy: LoadedPolicy) -> None:
    first = _record(audit_engine, policy, _document())
    second = _record(audit_engine, policy, _document(1_000_000))
    with audit_engine.begin() as conn:
        stored = conn.execute(text("SELECT record FROM evaluation_record WHERE evaluation_id = :e"),
                              {"e": second}).scalar_one()
        conn.execute(text("UPDATE evaluation_record SET record = :r WHERE evaluation_id = :e"),
                     {"r": stored.replace('"amount_fen":300000', '"amount_fen":900000'), "e": second})
    with audit_engine.connect() as conn:
        problems = verify_records(conn)
    assert [(p.row, p.fault, p.ledger_seq, p.detail) for p in problems] == \
        [(second, "edited", 2, "the stored record differs from ledger entry 2")]
    assert first not in " ".join(map(str, problems))


def test_an_edited_facts_snapshot_is_caught(audit_engine: Engine, policy: LoadedPolicy) -> None:
    evaluation_id = _record(audit_engine, policy, _document())
    with audit_engine.begin() as conn:
        conn.execute(text("UPDATE facts_snapshot SET document = replace(document, '123456715', '999999999')"))
    with audit_engine.connect() as conn:
        assert [(p.row, p.detail.split(" ")[:3]) for p in verify_records(conn)] == \
            [(evaluation_id, ["its", "facts", "snapshot"])]


def test_a_rule_file_changed_after_the_decision_still_replays_under_the_old_text(
        audit_engine: Engine, policy: LoadedPolicy, tmp_path: Path) -> None:
    evaluation_id = _record(audit_engine, policy, _document())
    changed = tmp_path / "stable-jobs-refund.yaml"
    changed.write_text(POLICY.read_text(encoding="utf-8").replace("2023: 30%", "2023: 35%"), encoding="utf-8")
    new_policy = load_policy_file(changed, CATALOGUE, require_tests=False)
    assert new_policy.sha256 != policy.sha256
    assert evaluate(new_policy.compiled(2025), _document(), today=TODAY).amount_fen != 37_037_015
    result = replay(audit_engine, evaluation_id, CATALOGUE)
    assert result is not None and result.identical
    assert result.replayed.rule_sha256 == policy.sha256


def test_replay_reports_differences(audit_engine: Engine, policy: LoadedPolicy) -> None:
    evaluation_id = _record(audit_engine, policy, _document())
    with audit_engine.begin() as conn:  # an altered snapshot (verification would flag it too)
        conn.execute(text("UPDATE facts_snapshot SET document = replace(document, '123456715', '100000000')"))
    result = replay(audit_engine, evaluation_id, CATALOGUE)
    assert result is not None and not result.identical
    assert any(d.startswith("amount_fen: stored 37037015, replayed 30000000") for d in result.differences)


def test_a_stored_record_rebuilds_the_evaluation_and_lists_by_filter(audit_engine: Engine,
                                                                     policy: LoadedPolicy) -> None:
    from service.audit.records import evaluation_from_dict, list_records

    document = _document()
    original = evaluate(policy.compiled(2025), document, today=TODAY)
    first = record_evaluation(audit_engine, original, document, policy, AUDITOR)
    second = _record(audit_engine, policy, _document(0))
    with audit_engine.connect() as conn:
        record = load_record(conn, first)
        assert record is not None
        assert evaluation_from_dict(record["evaluation"]) == original
        page, total = list_records(conn, policy_id="stable-jobs-refund", limit=1)
        assert total == 2 and [r["evaluation_id"] for r in page] == [second]
        assert list_records(conn, uscc="91420600MA4K00001M", outcome="ELIGIBLE")[1] == 2
        assert list_records(conn, period=2024)[1] == 0
