"""The decision an evaluation record stores, and its clause mask."""

from __future__ import annotations

import orjson
import pytest
from records_testkit import TODAY, document, policy

from rules.evaluator import ClauseResult, evaluate
from rules.loader import LoadedPolicy
from service.audit.decision import DECISION_FIELDS, MASK_CODES, Decision, is_mask, mask_of

__all__ = ["policy"]  # fixture


def _clauses(results: str) -> list[ClauseResult]:
    by_code = {code: result for result, code in MASK_CODES.items()}
    return [ClauseResult(f"c{i}", "", "", by_code[code], []) for i, code in enumerate(results)]


@pytest.mark.parametrize(("conditions", "payable"), [("TTFU", "T"), ("", ""), ("F", "UU"), ("TTTTTTT", "")])
def test_the_mask_is_one_letter_per_condition_then_per_payable_clause(conditions: str, payable: str) -> None:
    mask = mask_of(_clauses(conditions), _clauses(payable))
    assert mask == f"{conditions}/{payable}" and is_mask(mask)


@pytest.mark.parametrize("text", ["TTX/T", "TT", "T/T/T", "t/T", " T/T", None, 7])
def test_anything_else_is_no_mask(text: object) -> None:
    assert not is_mask(text)


def _decision(**changes: object) -> Decision:
    fields = {
        "policy_id": "p",
        "policy_version": "1",
        "rule_sha256": "0" * 64,
        "period": 2025,
        "fact_year": 2024,
        "uscc": "91420600MA4K00001M",
        "evaluated_on": "2026-03-31",
        "outcome": "ELIGIBLE",
        "amount_fen": 100,
        "mask": "TT/T",
        **changes,
    }
    return Decision(**fields)  # type: ignore[arg-type]  # wrong types on purpose: __post_init__ refuses them


def test_a_decision_refuses_a_malformed_mask_and_a_float_amount() -> None:
    with pytest.raises(ValueError, match="mask"):
        _decision(mask="TT")
    with pytest.raises(TypeError, match="amount_fen"):
        _decision(amount_fen=100.0)


def test_a_decision_round_trips_through_its_record_fields() -> None:
    decision = _decision()
    record = orjson.loads(orjson.dumps({name: getattr(decision, name) for name in DECISION_FIELDS}))
    assert Decision.from_record({**record, "anything": "else"}) == decision


def test_an_ineligible_evaluation_marks_its_failed_condition(policy: LoadedPolicy) -> None:
    facts = document()
    failed = dict(facts.facts)
    del failed["si.ui_months_paid"]  # unknown
    failed["si.ui_arrears"] = failed["si.ui_arrears"].__class__(True, "human_resources", None)  # false
    result = evaluate(
        policy.compiled(2025),
        facts.__class__(facts.uscc, facts.fact_year, failed, facts.collections, facts.missing),
        today=TODAY,
    )
    decision = Decision.of(result)
    assert decision.outcome == "INELIGIBLE"
    assert decision.mask == mask_of(result.conditions, result.payable)
    assert "F" in decision.mask.split("/")[0]
    assert [c.result for c in result.conditions] == [
        {v: k for k, v in MASK_CODES.items()}[code] for code in decision.mask.split("/")[0]
    ]


def test_a_decision_and_a_prepared_record_cross_process_boundaries(policy: LoadedPolicy) -> None:
    """Batch partitions run in worker processes: what they prepare is pickled back."""
    import pickle

    from records_testkit import prepared

    record = prepared(policy)
    again = pickle.loads(pickle.dumps(record))
    assert again == record and again.decision == record.decision and again is not record
