"""Shared by the evaluation-record tests: one real policy, facts documents that vary by the
premium paid (so by the amount), and helpers that record chunks of them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from rules.evaluator import evaluate
from rules.facts import Fact, FactsDocument, FactValue, Record
from rules.loader import LoadedPolicy, load_policy_file
from service.audit.ledger import ledger_transaction
from service.audit.records import Actor, PreparedRecord, create_audit_schema, prepare_record, write_records
from service.catalogue import CATALOGUE

POLICY = Path(__file__).resolve().parents[3] / "rules" / "policies" / "stable-jobs-refund.yaml"
AS_OF = date(2025, 1, 31)
TODAY = date(2026, 3, 31)
AUDITOR = Actor("test-auditor", "auditor")
USCC = "91420600MA4K00001M"


def document(premium_fen: int = 123_456_715, uscc: str = USCC) -> FactsDocument:
    def fact(value: FactValue) -> Fact:
        return Fact(value, "human_resources", AS_OF)

    facts = {
        "enterprise.status": fact("active"),
        "enterprise.org_type": fact("enterprise"),
        "enterprise.labor_dispatch": fact(False),
        "enterprise.has_bank_account": fact(True),
        "enterprise.established_on": fact(date(2010, 5, 6)),
        "si.ui_months_paid": fact(12),
        "si.ui_arrears": fact(False),
        "si.ui_benefit_claimants": fact(30),
        "si.insured_avg_monthly": fact(1000),
        "si.insured_start": fact(1000),
        "si.ui_premium_paid_fen": fact(premium_fen),
        "si.ui_back_payment_fen": fact(0),
        "si.ui_late_fee_fen": fact(0),
        "derived.size_class": fact("large"),
    }
    listings = [
        Record(
            "credit_listing:zombie@2020-01-01",
            {"list": "zombie", "listed_on": date(2020, 1, 1), "removed_on": date(2021, 1, 1)},
            "credit",
            AS_OF,
        )
    ]
    return FactsDocument(
        uscc, 2024, facts, {"hires": [], "qualifications": [], "credit_listings": listings}, {"tax": "no record"}
    )


def prepared(
    policy: LoadedPolicy, premium_fen: int = 123_456_715, *, uscc: str = USCC, batch_id: str | None = None
) -> PreparedRecord:
    facts = document(premium_fen, uscc)
    return prepare_record(evaluate(policy.compiled(2025), facts, today=TODAY), facts, AUDITOR, batch_id=batch_id)


def write_chunk(engine: Engine, policy: LoadedPolicy, records: list[PreparedRecord]) -> int:
    """Write one chunk; its ledger entry's seq."""
    with ledger_transaction(engine) as conn:
        entry = write_records(conn, policy, records)
    assert entry is not None
    return entry.seq


@pytest.fixture
def audit_engine(db_engine: Engine) -> Engine:
    create_audit_schema(db_engine)
    return db_engine


@pytest.fixture(scope="module")
def policy() -> LoadedPolicy:
    return load_policy_file(POLICY, CATALOGUE)


__all__ = ["AUDITOR", "CATALOGUE", "TODAY", "USCC", "audit_engine", "document", "policy", "prepared", "write_chunk"]
