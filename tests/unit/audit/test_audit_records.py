"""Evaluation records: compact, stored with facts and rule text by hash, sealed one chunk per
ledger entry, rendered on demand, found again for reuse."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import orjson
import pytest
from records_testkit import (
    AUDITOR,
    CATALOGUE,
    POLICY,
    TODAY,
    USCC,
    audit_engine,
    document,
    policy,
    prepared,
    write_chunk,
)
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from rules.evaluator import evaluate
from rules.loader import LoadedPolicy, load_policy_file
from service.audit.canonical import canonical_json, sha256_hex
from service.audit.decision import Decision
from service.audit.ledger import ledger_entry, verify
from service.audit.merkle import root
from service.audit.records import (
    RECORDS_KIND,
    SERVICE_VERSION,
    document_from_json,
    document_to_json,
    evaluation_record,
    facts_snapshot,
    find_recorded,
    list_records,
    load_record,
    prepare_decision,
    record_evaluation,
    replay,
    snapshot_of,
    verify_records,
)
from service.audit.rendering import render, render_faithful
from service.errors import RecordMismatchError

__all__ = ["audit_engine", "policy"]  # fixtures

COMPACT_FIELDS = {
    "evaluation_id",
    "policy_id",
    "rule_sha256",
    "policy_version",
    "period",
    "fact_year",
    "uscc",
    "evaluated_on",
    "outcome",
    "amount_fen",
    "mask",
    "facts_sha256",
    "actor",
    "recorded_at",
    "batch_id",
    "engine",
    "service_version",
}


def _record(engine: Engine, policy: LoadedPolicy, premium_fen: int = 123_456_715) -> str:
    facts = document(premium_fen)
    result = evaluate(policy.compiled(2025), facts, today=TODAY)
    return record_evaluation(engine, result, facts, policy, AUDITOR)


def test_a_facts_document_round_trips_with_its_dates() -> None:
    facts = document()
    assert document_from_json(document_to_json(facts), CATALOGUE) == facts


def test_a_record_is_compact_and_holds_the_decision(audit_engine: Engine, policy: LoadedPolicy) -> None:
    facts = document()
    result = evaluate(policy.compiled(2025), facts, today=TODAY)
    evaluation_id = record_evaluation(audit_engine, result, facts, policy, AUDITOR)
    with audit_engine.connect() as conn:
        stored = conn.execute(select(evaluation_record).where(evaluation_record.c.evaluation_id == evaluation_id)).one()
    record = orjson.loads(stored.record)
    assert set(record) == COMPACT_FIELDS  # no trace, no explanation
    assert stored.record == canonical_json(record).decode() and stored.record_sha256 == sha256_hex(
        stored.record.encode()
    )
    assert Decision.from_record(record) == Decision.of(result)
    everything_holds = "T" * len(result.conditions) + "/" + "T" * len(result.payable)
    assert (record["outcome"], record["amount_fen"], record["mask"]) == ("ELIGIBLE", 37_037_015, everything_holds)
    assert record["actor"] == {"principal": "test-auditor", "role": "auditor"}
    assert record["facts_sha256"] == snapshot_of(facts)[1] and record["service_version"] == SERVICE_VERSION
    assert (stored.rule_sha256, stored.facts_sha256, stored.evaluated_on, stored.leaf_index) == (
        policy.sha256,
        record["facts_sha256"],
        TODAY.isoformat(),
        0,
    )
    fat = len(canonical_json(result.to_dict()))
    assert len(stored.record) * 4 < fat, (len(stored.record), fat)


def test_a_record_needs_no_evaluation_object(audit_engine: Engine, policy: LoadedPolicy) -> None:
    """The fast path: a Decision and a shared snapshot suffice; the record replays faithfully."""
    facts = document()
    result = evaluate(policy.compiled(2025), facts, today=TODAY)
    decision = Decision(
        policy.id,
        policy.version,
        policy.sha256,
        2025,
        2024,
        USCC,
        TODAY.isoformat(),
        result.outcome,
        result.amount_fen,
        Decision.of(result).mask,
    )
    facts_json, facts_sha = snapshot_of(facts)
    records = [
        prepare_decision(decision, facts_json, facts_sha, AUDITOR, "pb_x", note)
        for note in (None, "not paid: holds grant g of p")
    ]
    write_chunk(audit_engine, policy, records)
    with audit_engine.connect() as conn:
        first, second = (load_record(conn, r.evaluation_id) for r in records)
        assert first is not None and second is not None
        assert "payout_note" not in first and second["payout_note"] == "not paid: holds grant g of p"
        assert first["batch_id"] == "pb_x"
        assert render_faithful(conn, first, CATALOGUE) == result
        assert conn.execute(select(func.count()).select_from(facts_snapshot)).scalar_one() == 1  # shared
        assert verify_records(conn) == []


def test_a_written_chunk_is_one_ledger_entry_with_the_root_of_its_records(
    audit_engine: Engine, policy: LoadedPolicy
) -> None:
    records = [prepared(policy, 1_000_000 + i) for i in range(5)]
    seq = write_chunk(audit_engine, policy, records)
    with audit_engine.connect() as conn:
        entries = conn.execute(select(ledger_entry.c.kind, ledger_entry.c.payload)).all()
        places = conn.execute(
            select(
                evaluation_record.c.evaluation_id, evaluation_record.c.ledger_seq, evaluation_record.c.leaf_index
            ).order_by(evaluation_record.c.leaf_index)
        ).all()
        assert verify(conn).valid and verify_records(conn) == []
    assert [kind for kind, _ in entries] == [RECORDS_KIND]
    seal = orjson.loads(entries[0].payload)
    assert seal == {
        "count": 5,
        "merkle_root": root([bytes.fromhex(r.record_sha256) for r in records]).hex(),
        "policy_id": policy.id,
        "rule_sha256": policy.sha256,
    }
    assert [tuple(p) for p in places] == [(r.evaluation_id, seq, i) for i, r in enumerate(records)]


def test_records_of_another_rule_text_are_refused(audit_engine: Engine, policy: LoadedPolicy, tmp_path: Path) -> None:
    changed = tmp_path / "stable-jobs-refund.yaml"
    changed.write_text(POLICY.read_text(encoding="utf-8").replace("2023: 30%", "2023: 35%"), encoding="utf-8")
    other = load_policy_file(changed, CATALOGUE, require_tests=False)
    with pytest.raises(ValueError, match="not made under"):
        write_chunk(audit_engine, other, [prepared(policy)])


def test_a_recorded_evaluation_replays_identically(audit_engine: Engine, policy: LoadedPolicy) -> None:
    evaluation_id = _record(audit_engine, policy)
    result = replay(audit_engine, evaluation_id, CATALOGUE)
    assert result is not None
    assert result.identical, result.differences
    assert result.replayed.amount_fen == 37_037_015
    assert result.replayed == evaluate(policy.compiled(2025), document(), today=TODAY)
    assert replay(audit_engine, "ev_unknown", CATALOGUE) is None


def test_a_rule_file_changed_after_the_decision_still_replays_under_the_old_text(
    audit_engine: Engine, policy: LoadedPolicy, tmp_path: Path
) -> None:
    evaluation_id = _record(audit_engine, policy)
    changed = tmp_path / "stable-jobs-refund.yaml"
    changed.write_text(POLICY.read_text(encoding="utf-8").replace("2023: 30%", "2023: 35%"), encoding="utf-8")
    new_policy = load_policy_file(changed, CATALOGUE, require_tests=False)
    assert new_policy.sha256 != policy.sha256
    assert evaluate(new_policy.compiled(2025), document(), today=TODAY).amount_fen != 37_037_015
    result = replay(audit_engine, evaluation_id, CATALOGUE)
    assert result is not None and result.identical
    assert result.replayed.rule_sha256 == policy.sha256


def test_replay_reports_an_altered_snapshot(audit_engine: Engine, policy: LoadedPolicy) -> None:
    evaluation_id = _record(audit_engine, policy)
    with audit_engine.begin() as conn:  # an altered snapshot (verification flags it too)
        conn.execute(text("UPDATE facts_snapshot SET document = replace(document, '123456715', '100000000')"))
    result = replay(audit_engine, evaluation_id, CATALOGUE)
    assert result is not None and not result.identical
    assert any(d.startswith("facts snapshot: the stored text no longer has SHA-256") for d in result.differences)
    assert "amount_fen: stored 37037015, replayed 30000000" in result.differences


@pytest.mark.parametrize(("field", "value"), [("outcome", "INELIGIBLE"), ("amount_fen", 1), ("mask", "TTTT/T")])
def test_rendering_detects_a_record_that_disagrees_with_its_replay(
    audit_engine: Engine, policy: LoadedPolicy, field: str, value: object
) -> None:
    """A record whose decision is not what its facts and rule text give (written so, or edited
    with its hash recomputed) is reported, and never shown as the stored evaluation."""
    honest = prepared(policy)
    record = orjson.loads(honest.record_json)
    assert record[field] != value
    with audit_engine.connect() as conn:
        write_chunk(audit_engine, policy, [honest])
        rendering = render(conn, {**record, field: value}, CATALOGUE)
        assert rendering.differences == [f"{field}: stored {value!r}, replayed {record[field]!r}"]
        with pytest.raises(RecordMismatchError) as raised:
            render_faithful(conn, {**record, field: value}, CATALOGUE)
        assert raised.value.evaluation_id == honest.evaluation_id and field in str(raised.value)
        assert render(conn, record, CATALOGUE).differences == []


def test_rendering_refuses_a_record_whose_snapshot_is_gone(audit_engine: Engine, policy: LoadedPolicy) -> None:
    record = orjson.loads(prepared(policy).record_json)  # never written: nothing is stored
    with audit_engine.connect() as conn, pytest.raises(RecordMismatchError, match="is not stored"):
        render(conn, record, CATALOGUE)


class _RecordKey(TypedDict):
    """What find_recorded looks a decision up by."""

    rule_sha256: str
    facts_sha256: str
    evaluated_on: str
    uscc: str
    policy_id: str
    period: int


def test_a_recorded_decision_is_found_again_for_reuse(audit_engine: Engine, policy: LoadedPolicy) -> None:
    first, other = prepared(policy), prepared(policy, 1_000_000)
    again = prepared(policy)  # the same facts on the same day: the same decision
    write_chunk(audit_engine, policy, [first, other])
    write_chunk(audit_engine, policy, [again])
    key: _RecordKey = {
        "rule_sha256": policy.sha256,
        "facts_sha256": first.facts_sha256,
        "evaluated_on": TODAY.isoformat(),
        "uscc": USCC,
        "policy_id": policy.id,
        "period": 2025,
    }
    with audit_engine.connect() as conn:
        found = find_recorded(conn, **key)
        assert found is not None and found["evaluation_id"] == again.evaluation_id  # the newest
        assert Decision.from_record(found) == again.decision
        wrong_keys: list[tuple[str, _RecordKey]] = [
            ("period", {**key, "period": 2024}),
            ("evaluated_on", {**key, "evaluated_on": "2026-04-01"}),
            ("uscc", {**key, "uscc": "91420600MA4K00002K"}),
            ("rule_sha256", {**key, "rule_sha256": "0" * 64}),
            ("policy_id", {**key, "policy_id": "other"}),
        ]
        for column, wrong in wrong_keys:
            assert find_recorded(conn, **wrong) is None, column
    with audit_engine.begin() as conn:  # an altered record is never answered from
        conn.execute(
            text("UPDATE evaluation_record SET record = replace(record, 'auditor', 'forger') WHERE evaluation_id = :e"),
            {"e": again.evaluation_id},
        )
    with audit_engine.connect() as conn:
        found = find_recorded(conn, **key)
        assert found is not None and found["evaluation_id"] == first.evaluation_id


def test_the_reuse_lookup_and_an_enterprises_records_have_their_index(audit_engine: Engine) -> None:
    from sqlalchemy import inspect

    indexes = {i["name"]: i["column_names"] for i in inspect(audit_engine).get_indexes("evaluation_record")}
    assert indexes["ix_evaluation_record_enterprise"] == ["uscc", "policy_id", "period"]
    if audit_engine.dialect.name == "sqlite":  # (PostgreSQL plans an empty table as it likes)
        with audit_engine.connect() as conn:
            plan = " ".join(
                str(r[-1])
                for r in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT record FROM evaluation_record WHERE facts_sha256 = 'a' AND "
                    "rule_sha256 = 'b' AND evaluated_on = 'c' AND period = 1 AND uscc = 'd' AND policy_id = 'e'"
                )
            )
        assert "ix_evaluation_record_enterprise" in plan, plan
        with audit_engine.connect() as conn:
            plan = " ".join(
                str(r[-1])
                for r in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT record FROM evaluation_record WHERE uscc = 'd' ORDER BY ledger_seq DESC"
                )
            )
        assert "ix_evaluation_record_enterprise" in plan, plan


def test_stored_records_list_by_filter_newest_first(audit_engine: Engine, policy: LoadedPolicy) -> None:
    first = _record(audit_engine, policy)
    second = _record(audit_engine, policy, 0)
    chunk = [prepared(policy, 2_000_000), prepared(policy, 3_000_000)]
    write_chunk(audit_engine, policy, chunk)
    with audit_engine.connect() as conn:
        page, total = list_records(conn, policy_id="stable-jobs-refund", limit=3)
        assert total == 4
        assert [r["evaluation_id"] for r in page] == [chunk[1].evaluation_id, chunk[0].evaluation_id, second]
        assert list_records(conn, uscc=USCC, outcome="ELIGIBLE")[1] == 4
        assert list_records(conn, period=2024)[1] == 0
        record = load_record(conn, first)
        assert record is not None and render_faithful(conn, record, CATALOGUE).amount_fen == 37_037_015


# On SQLite only, whose plan says it plainly (PostgreSQL plans an empty table as it likes).
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_lookup_asks_for_its_recorded_decisions_through_the_enterprise_index(audit_engine: Engine) -> None:
    """The reuse query of lookups names the enterprises, so it reads their few records through
    the index; by the facts hash alone it read every record (1 call/s at 1,000,000 enterprises)."""
    from service.evaluation.lookups import _RECORDED_PAIRS

    statement = _RECORDED_PAIRS.params(usccs=["91420600MA4K00001K"], facts=["a" * 64], evaluated_on="2026-03-02")
    compiled = statement.compile(audit_engine, compile_kwargs={"literal_binds": True})
    with audit_engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    assert "ix_evaluation_record_enterprise" in plan and "SCAN evaluation_record" not in plan, plan
