"""Domain results to benefits.v1 messages (service/api/convert.py): each field of a message is the
domain value it stands for, including the empty and missing cases (the enums: test_api_enums.py)."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from benefits.v1 import evaluation_pb2, payout_service_pb2
from testkit.paths import POLICIES_DIR

from rules.evaluator import AmountTrace, ClauseResult, Evaluation, FactRead
from rules.evaluator import CollectionRead as DomainCollectionRead
from rules.loader import LoadedPolicy, load_policy_text
from rules.values import Outcome, Truth
from service.api import convert, enums
from service.catalogue import CATALOGUE
from service.payouts.batches import Batch
from service.payouts.states import BatchState, LineState

STABLE_JOBS = (POLICIES_DIR / "stable-jobs-refund.yaml").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Line states a bank reports.
def test_a_bank_reports_paid_or_returned_and_nothing_else() -> None:
    assert convert.BANK_RESULT_STATES == {
        payout_service_pb2.LINE_STATE_PAID: LineState.PAID,
        payout_service_pb2.LINE_STATE_RETURNED: LineState.RETURNED,
    }
    for number, state in convert.BANK_RESULT_STATES.items():
        assert enums.LINE_STATES.to_proto[state] == number  # the inverse of the line-state table


# ---------------------------------------------------------------------------------------------
# Evaluations.
READ = FactRead(
    name="si.ui_months_paid", label="失业保险连续缴费月数", value=12, source="human_resources", as_of="2024-12-31"
)
TEXT_READ = FactRead(
    name="enterprise.name",
    label="单位名称",
    value="襄阳示例汽车零部件有限公司",
    source="market_regulation",
    as_of="2025-01-02",
)
MISSING_READ = FactRead(
    name="si.ui_arrears",
    label="失业保险欠缴",
    value=None,
    source=None,
    as_of=None,
    missing="no social-insurance record for 2024",
)


def clause(result: Truth, *reads: FactRead) -> ClauseResult:
    return ClauseResult(
        id=f"clause-{result}",
        text=f"条件 {result}",
        citation="第一条",
        result=result,
        reads=list(reads),
        collections=[DomainCollectionRead(name="credit_listings", label="失信名单", records=2, matched=["ref-1"])],
        notes=["a note"],
    )


def an_evaluation(**changes: Any) -> Evaluation:
    fields: dict[str, Any] = {
        "policy_id": "stable-jobs-refund",
        "policy_version": "2025.1",
        "rule_sha256": "ab" * 32,
        "period": 2025,
        "fact_year": 2024,
        "uscc": "91420600MA4K00001M",
        "evaluated_on": "2025-06-01",
        "outcome": Outcome.ELIGIBLE,
        "amount_fen": 37037015,
        "conditions": [clause(Truth.TRUE, READ, TEXT_READ), clause(Truth.UNKNOWN, MISSING_READ)],
        "payable": [clause(Truth.FALSE)],
        "missing": ["si.ui_arrears"],
        "held": ["has-bank-account"],
        "amount": AmountTrace(
            formula="premiums * rate",
            text="按上年度实缴失业保险费的30%返还",
            exact="37037014.5",
            rounding="half_up",
            cap_fen=None,
            reads=[READ],
            notes=["rounded"],
        ),
        "conflict_group": None,
    }
    return Evaluation(**(fields | changes))


def test_an_evaluation_carries_every_field_of_the_domain_result() -> None:
    domain = an_evaluation()
    message = convert.evaluation(domain, evaluation_id="ev-1")
    assert (
        message.evaluation_id,
        message.uscc,
        message.policy_id,
        message.policy_version,
        message.rule_sha256,
        message.period,
        message.fact_year,
        message.amount_fen,
        message.evaluation_date,
        message.engine_version,
    ) == (
        "ev-1",
        domain.uscc,
        domain.policy_id,
        domain.policy_version,
        domain.rule_sha256,
        2025,
        2024,
        37037015,
        "2025-06-01",
        domain.engine,
    )
    assert message.outcome == evaluation_pb2.OUTCOME_ELIGIBLE
    assert [c.id for c in message.conditions] == ["clause-true", "clause-unknown"]
    assert [c.result for c in message.conditions] == [
        evaluation_pb2.CONDITION_RESULT_TRUE,
        evaluation_pb2.CONDITION_RESULT_UNKNOWN,
    ]
    assert [c.result for c in message.payable_conditions] == [evaluation_pb2.CONDITION_RESULT_FALSE]
    assert (list(message.missing_facts), list(message.held_conditions)) == (["si.ui_arrears"], ["has-bank-account"])
    assert message.conflict_group == "", "no group: the empty string, not 'None'"
    assert message.evaluate_time.seconds > 0


def test_a_clause_carries_its_text_reads_collections_and_notes() -> None:
    (first, _) = convert.evaluation(an_evaluation()).conditions
    assert (first.text, first.citation, list(first.notes)) == ("条件 true", "第一条", ["a note"])
    (collection,) = first.collections
    assert (collection.name, collection.label, collection.record_count, list(collection.matched_refs)) == (
        "credit_listings",
        "失信名单",
        2,
        ["ref-1"],
    )
    number, text = first.reads
    assert (number.name, number.label, number.source, number.as_of, number.missing_reason) == (
        "si.ui_months_paid",
        "失业保险连续缴费月数",
        "human_resources",
        "2024-12-31",
        "",
    )
    assert json.loads(number.value_json) == 12
    assert text.value_json == '"襄阳示例汽车零部件有限公司"', "Chinese text stays readable in the JSON"


def test_a_missing_fact_has_a_reason_and_no_value() -> None:
    (read,) = convert.evaluation(an_evaluation()).conditions[1].reads
    assert (read.value_json, read.source, read.as_of, read.missing_reason) == (
        "",
        "",
        "",
        "no social-insurance record for 2024",
    )


def test_a_fact_read_as_false_or_zero_is_a_value_not_a_missing_one() -> None:
    reads = [FactRead(name="x", label="x", value=value, source="tax", as_of="2024-12-31") for value in (False, 0, "")]
    message = convert.evaluation(an_evaluation(conditions=[clause(Truth.TRUE, *reads)]))
    assert [r.value_json for r in message.conditions[0].reads] == ["false", "0", '""']


def test_the_amount_is_carried_when_there_is_one_and_absent_when_not() -> None:
    amount = convert.evaluation(an_evaluation()).amount
    assert (amount.text, amount.formula, amount.exact_fen, amount.rounding, amount.cap_fen, list(amount.notes)) == (
        "按上年度实缴失业保险费的30%返还",
        "premiums * rate",
        "37037014.5",
        "half_up",
        0,
        ["rounded"],
    )
    assert [r.name for r in amount.reads] == ["si.ui_months_paid"]
    capped = AmountTrace(formula="f", text="t", exact=None, rounding="down", cap_fen=500000, reads=[], notes=[])
    message = convert.evaluation(an_evaluation(amount=capped))
    assert (message.amount.cap_fen, message.amount.exact_fen) == (500000, "")
    none = convert.evaluation(an_evaluation(outcome=Outcome.INELIGIBLE, amount_fen=0, amount=None))
    assert not none.HasField("amount")
    assert none.outcome == evaluation_pb2.OUTCOME_INELIGIBLE


def test_a_conflict_group_is_carried() -> None:
    message = convert.evaluation(an_evaluation(conflict_group="national-manufacturing-titles"))
    assert message.conflict_group == "national-manufacturing-titles"


@pytest.mark.parametrize(
    "change",
    [
        {"outcome": "MAYBE"},
        {"outcome": "eligible"},
        # words that are no Truth, as a corrupted value would be
        {"conditions": [clause(cast(Truth, "yes"))]},
        {"payable": [clause(cast(Truth, "True"))]},
    ],
    ids=["unknown-outcome", "outcome-in-lower-case", "unknown-result", "result-capitalised"],
)
def test_a_word_the_evaluator_never_gives_is_an_error_not_unspecified(change: dict[str, Any]) -> None:
    with pytest.raises(KeyError):
        convert.evaluation(an_evaluation(**change))


# ---------------------------------------------------------------------------------------------
# Policies.
def policy_of(text: str) -> LoadedPolicy:
    return load_policy_text(text.encode(), CATALOGUE, origin="stable-jobs-refund.yaml")


def test_a_reference_policy_carries_its_description_periods_and_conditions() -> None:
    loaded = policy_of(STABLE_JOBS)
    message = convert.policy(loaded, frozenset({"job-expansion-subsidy", "high-tech-reward"}))
    assert (message.policy_id, message.version, message.title, message.rule_sha256) == (
        "stable-jobs-refund",
        "2025.2",
        "失业保险稳岗返还",
        loaded.sha256,
    )
    assert loaded.model.description is not None
    assert message.description == loaded.model.description.strip() and not message.description.endswith("\n")
    assert (message.apply_free, message.application_reason) == (True, "")
    assert (list(message.periods), message.open_ended) == ([2022, 2023, 2024, 2025], False)
    assert message.legal_basis[0].document == "人社部发〔2025〕18号"
    assert list(message.legal_basis[0].periods) == [2025]
    assert (message.legal_basis[0].article, message.legal_basis[0].url) == ("", "")
    assert list(message.excludes) == ["high-tech-reward", "job-expansion-subsidy"], "sorted"
    conditions = [(c.id, c.payable) for c in message.conditions]
    assert conditions == [(c.id, False) for c in loaded.model.conditions] + [(c.id, True) for c in loaded.model.payable]
    assert all(c.expression == c.expression.strip() for c in message.conditions)
    assert (message.conflict_group, message.budget_fen) == ("", 0)
    assert message.funding == "unemployment_insurance_fund"


def test_a_policy_needing_an_application_says_why_and_is_not_apply_free() -> None:
    text = STABLE_JOBS.replace("apply_free: true", "apply_free: 须由单位提出申请")
    message = convert.policy(policy_of(text))
    assert (message.apply_free, message.application_reason) == (False, "须由单位提出申请")


def test_an_open_ended_policy_lists_its_first_period_and_says_it_is_open() -> None:
    text = STABLE_JOBS.replace("  last_period: 2025\n", "")
    assert text != STABLE_JOBS
    message = convert.policy(policy_of(text))
    assert (list(message.periods), message.open_ended) == ([2022], True)


def test_a_budget_and_a_missing_description_are_carried() -> None:
    text = STABLE_JOBS.replace(
        "funding: unemployment_insurance_fund\n", "funding: unemployment_insurance_fund\nbudget: 100万元\n"
    )
    text = text[: text.index("description:")] + text[text.index("legal_basis:") :]
    message = convert.policy(policy_of(text))
    assert (message.budget_fen, message.description) == (100_000_000, "")


# ---------------------------------------------------------------------------------------------
# Payout batches and lines.
def a_batch(**changes: Any) -> Batch:
    fields: dict[str, Any] = {
        "batch_id": "b-1",
        "request_id": "r-1",
        "policy_id": "stable-jobs-refund",
        "period": 2025,
        "state": BatchState.APPROVED,
        "line_count": 3,
        "total_fen": 1500,
        "merkle_root": "cd" * 32,
        "created_by": "operator",
        "approved_by": "approver",
        "policy_version": "2025.1",
        "created_at": "2025-06-01T08:30:00.250Z",
    }
    return Batch(**(fields | changes))


def test_a_batch_carries_its_fields_state_and_creation_time() -> None:
    message = convert.payout_batch(a_batch())
    assert (
        message.batch_id,
        message.request_id,
        message.policy_id,
        message.policy_version,
        message.period,
        message.line_count,
        message.total_fen,
        message.merkle_root,
        message.created_by,
        message.approved_by,
    ) == ("b-1", "r-1", "stable-jobs-refund", "2025.1", 2025, 3, 1500, "cd" * 32, "operator", "approver")
    assert message.state == payout_service_pb2.BATCH_STATE_APPROVED
    assert message.create_time.ToJsonString() == "2025-06-01T08:30:00.250Z"
    assert (message.cancelled_by, message.cancel_reason) == ("", "")


def test_a_batch_not_yet_approved_or_cancelled_has_empty_names_not_none() -> None:
    draft = convert.payout_batch(a_batch(state=BatchState.DRAFT, approved_by=None))
    assert (draft.state, draft.approved_by) == (payout_service_pb2.BATCH_STATE_DRAFT, "")
    cancelled = convert.payout_batch(
        a_batch(state=BatchState.CANCELLED, cancelled_by="approver", cancel_reason="预算调整")
    )
    assert (cancelled.state, cancelled.cancelled_by, cancelled.cancel_reason) == (
        payout_service_pb2.BATCH_STATE_CANCELLED,
        "approver",
        "预算调整",
    )


@pytest.mark.parametrize("created_at", ["", "2025-06-01", "yesterday", "2025-13-01T00:00:00Z"])
def test_a_batch_whose_creation_time_is_not_a_timestamp_is_an_error(created_at: str) -> None:
    with pytest.raises(ValueError):
        convert.payout_batch(a_batch(created_at=created_at))


def a_line(**changes: Any) -> dict[str, Any]:
    return {
        "grant_id": "g-1",
        "uscc": "91420600MA4K00001M",
        "amount_fen": 800,
        "full_fen": 1000,
        "evaluation_id": "ev-1",
        "tops_up": None,
        "state": "PENDING",
        "return_reason": None,
        "payee_name": "襄阳示例汽车零部件有限公司",
        "payee_account_no": "1804000109200012345",
        "payee_bank": "中国工商银行襄阳分行",
        "withdraw_reason": None,
        "result_by": None,
        "confirmed_by": None,
    } | changes


def test_a_line_carries_its_amounts_and_a_masked_payee() -> None:
    message = convert.payout_line(a_line(), payee_changed=False)
    assert (message.line_id, message.uscc, message.amount_fen, message.full_amount_fen, message.evaluation_id) == (
        "g-1",
        "91420600MA4K00001M",
        800,
        1000,
        "ev-1",
    )
    assert message.state == payout_service_pb2.LINE_STATE_PENDING
    assert (message.payee.account_name, message.payee.account_number_masked, message.payee.bank_name) == (
        "襄阳示例汽车零部件有限公司",
        "*" * 15 + "2345",
        "中国工商银行襄阳分行",
    )
    assert "1804000109200012345" not in str(message), "the full account number never leaves the service"
    assert (
        message.supersedes_line_id,
        message.return_reason,
        message.withdraw_reason,
        message.result_recorded_by,
        message.return_confirmed_by,
        message.payee_changed,
    ) == ("", "", "", "", "", False)


def test_a_returned_top_up_line_carries_who_recorded_and_confirmed_it() -> None:
    message = convert.payout_line(
        a_line(
            state="RETURNED",
            tops_up="g-0",
            return_reason="AC04 账户已销户",
            result_by="operator",
            confirmed_by="approver",
        ),
        payee_changed=True,
    )
    assert (
        message.state,
        message.supersedes_line_id,
        message.return_reason,
        message.result_recorded_by,
        message.return_confirmed_by,
        message.payee_changed,
    ) == (payout_service_pb2.LINE_STATE_RETURNED, "g-0", "AC04 账户已销户", "operator", "approver", True)


@pytest.mark.parametrize("state", list(LineState))
def test_a_line_in_any_state_gets_the_proto_state_of_its_name(state: LineState) -> None:
    message = convert.payout_line(a_line(state=state.value), payee_changed=False)
    assert payout_service_pb2.LineState.Name(message.state) == f"LINE_STATE_{state.value}"


@pytest.mark.parametrize("state", ["", "paid", "SETTLED", "UNSPECIFIED"])
def test_a_line_in_a_state_the_service_does_not_have_is_an_error(state: str) -> None:
    with pytest.raises(ValueError):
        convert.payout_line(a_line(state=state), payee_changed=False)


def test_a_short_account_number_is_masked_all_but_its_last_four() -> None:
    message = convert.payout_line(a_line(payee_account_no="123"), payee_changed=False)
    assert message.payee.account_number_masked == "123"
