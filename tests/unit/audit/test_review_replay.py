"""Independent review: replaying a stored record now that `evaluate` raises OverflowError for an
amount beyond int64 (rules/evaluator.py `_amount`), and the words a record stores now that the
outcome is an `Outcome` member."""

from __future__ import annotations

import dataclasses
from typing import cast

import orjson
import pytest
from records_testkit import AUDITOR, CATALOGUE, TODAY, audit_engine, document, policy, prepared, write_chunk
from sqlalchemy.engine import Engine

from rules.evaluator import evaluate
from rules.facts import Fact, FactsDocument
from rules.loader import LoadedPolicy
from rules.values import Outcome
from service.audit.canonical import sha256_hex
from service.audit.decision import Decision
from service.audit.facts_json import snapshot_of
from service.audit.ledger import Fault
from service.audit.record_tables import evaluation_record
from service.audit.record_verification import verify_records
from service.audit.records import load_record, prepare_decision
from service.audit.rendering import render, render_faithful, replay
from service.errors import RecordMismatchError

__all__ = ["audit_engine", "policy"]  # fixtures, used by name

# Beyond the importer's bound (10**15 fen) and beyond int64 once refunded at the SME rate (60%),
# yet still an integer orjson writes and reads (it stops at 2**64 - 1).
HUGE_PREMIUM = 2**64 - 1


def _small(facts: FactsDocument) -> FactsDocument:
    size = facts.facts["derived.size_class"]
    return dataclasses.replace(
        facts, facts={**facts.facts, "derived.size_class": Fact("small", size.source, size.as_of)}
    )


def test_the_huge_premium_makes_evaluate_raise_overflow(policy: LoadedPolicy) -> None:
    """What the replay tests below rely on: the reference evaluator refuses this amount."""
    with pytest.raises(OverflowError, match="beyond int64"):
        evaluate(policy.compiled(2025), _small(document(HUGE_PREMIUM)), today=TODAY)


def test_a_record_whose_facts_overflow_the_amount_is_refused_as_unreplayable(
    audit_engine: Engine, policy: LoadedPolicy
) -> None:
    honest = prepared(policy)
    facts_json, facts_sha256 = snapshot_of(_small(document(HUGE_PREMIUM)))
    pointed = prepare_decision(honest.decision, facts_json, facts_sha256, AUDITOR)
    write_chunk(audit_engine, policy, [pointed])
    with audit_engine.connect() as conn:
        record = load_record(conn, pointed.evaluation_id)
        assert record is not None
        with pytest.raises(RecordMismatchError, match="cannot be replayed"):
            render_faithful(conn, record, CATALOGUE)
    with pytest.raises(RecordMismatchError):
        replay(audit_engine, pointed.evaluation_id, CATALOGUE)


def test_verification_names_a_rewritten_record_whose_facts_overflow_the_amount(
    audit_engine: Engine, policy: LoadedPolicy
) -> None:
    facts_json, facts_sha256 = snapshot_of(_small(document(HUGE_PREMIUM)))
    pointed = prepare_decision(prepared(policy).decision, facts_json, facts_sha256, AUDITOR)
    write_chunk(audit_engine, policy, [prepared(policy), pointed])
    edited = pointed.record_json.replace(AUDITOR.principal, AUDITOR.principal.upper())
    with audit_engine.begin() as conn:
        conn.execute(
            evaluation_record.update()
            .where(evaluation_record.c.evaluation_id == pointed.evaluation_id)
            .values(record=edited, record_sha256=sha256_hex(edited.encode()))
        )
    with audit_engine.connect() as conn:
        problems = verify_records(conn, catalogue=CATALOGUE)
    assert (pointed.evaluation_id, Fault.EDITED) in [(p.row, p.fault) for p in problems]


# --- the words a record stores --------------------------------------------------------------------
def test_a_record_stores_the_bare_outcome_word(policy: LoadedPolicy) -> None:
    record = prepared(policy)
    assert '"outcome":"ELIGIBLE"' in record.record_json
    assert "Outcome" not in record.record_json
    assert orjson.loads(record.record_json)["outcome"] == "ELIGIBLE"


def test_a_record_written_with_plain_strings_hashes_as_one_written_with_members(policy: LoadedPolicy) -> None:
    """Records sealed before the enum (outcome a plain str) and after must give the same bytes."""
    member = prepared(policy)
    # a plain str, as decisions held before the enum (typed as the field is, to build one)
    plain = dataclasses.replace(member.decision, outcome=cast(Outcome, str(member.decision.outcome)))
    assert type(plain.outcome) is str
    again = prepare_decision(
        plain,
        member.facts_json,
        member.facts_sha256,
        AUDITOR,
        recorded_at=orjson.loads(member.record_json)["recorded_at"],
    )
    strip = {"evaluation_id"}  # random per record
    assert {k: v for k, v in orjson.loads(again.record_json).items() if k not in strip} == {
        k: v for k, v in orjson.loads(member.record_json).items() if k not in strip
    }
    assert again.record_json.replace(again.evaluation_id, member.evaluation_id) == member.record_json


def test_an_old_record_read_back_decides_as_it_was_made(audit_engine: Engine, policy: LoadedPolicy) -> None:
    made = prepared(policy)
    write_chunk(audit_engine, policy, [made])
    with audit_engine.connect() as conn:
        record = load_record(conn, made.evaluation_id)
        assert record is not None
        stored = Decision.from_record(record)
        assert stored.outcome is Outcome.ELIGIBLE and stored == made.decision
        assert render(conn, record, CATALOGUE).differences == []


@pytest.mark.parametrize("word", ["eligible", "Outcome.ELIGIBLE", "OUTCOME_ELIGIBLE", "", None])
def test_a_stored_outcome_that_is_no_word_is_a_value_error(policy: LoadedPolicy, word: object) -> None:
    record = orjson.loads(prepared(policy).record_json)
    with pytest.raises(ValueError):
        Decision.from_record({**record, "outcome": word})


def test_a_difference_in_outcome_is_quoted_as_its_word(audit_engine: Engine, policy: LoadedPolicy) -> None:
    honest = prepared(policy)
    record = orjson.loads(honest.record_json)
    write_chunk(audit_engine, policy, [honest])
    with audit_engine.connect() as conn:
        differences = render(conn, {**record, "outcome": "HELD"}, CATALOGUE).differences
    assert differences == ["outcome: stored 'HELD', replayed 'ELIGIBLE'"]
