"""rules.compiler: the guards that keep durable-rules from crashing or silently misleading."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rules_testkit import (
    POLICIES_DIR,
    TODAY,
    compile_text,
    document,
    load_text,
    policy_yaml,
    position_of,
    shipped_policies,
)

from rules.compiler import INT64_MAX, MAX_RULES
from rules.errors import EngineDisagreementError, EngineError, EngineLimitError, PolicyFileError
from rules.evaluator import evaluate
from rules.values import Outcome

RATE = "rate:\n  description: 比例\n  value: 5.5%\n"


def limit(tmp_path: Path, conditions: list[str], **kwargs: Any) -> EngineLimitError:
    with pytest.raises(EngineLimitError) as info:
        load_text(tmp_path, policy_yaml(conditions, **kwargs))
    return info.value


def keys(node: object) -> Iterator[str]:
    """Every dictionary key in a JSON-like tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from keys(item)


def test_rules_of_a_compiled_policy(tmp_path: Path) -> None:
    compiled = compile_text(
        tmp_path, policy_yaml(["si.layoffs > 1", "si.insured_start > 1"], payable=["enterprise.has_bank_account"])
    )
    assert set(compiled.definition) == {"c0", "c1", "p0", "all", "seen", "decided"}
    json.dumps(compiled.definition)  # the engine receives it as JSON


# --- division ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "si.layoffs / 2 > 1",
        "si.layoffs / si.insured_start <= 1",
        "1 < si.layoffs / si.insured_start",
        "si.layoffs * 100 / si.insured_start <= 5",
    ],
)
def test_division_in_a_condition_is_refused(tmp_path: Path, expr: str) -> None:
    error = limit(tmp_path, [expr])
    assert "division is not allowed" in error.reason
    assert "ratio(" in error.reason  # it says what to write instead
    assert error.line == position_of(policy_yaml([expr]), expr)[0]


def test_division_in_the_amount_formula_is_allowed(tmp_path: Path) -> None:
    compiled = compile_text(
        tmp_path, policy_yaml(["si.layoffs >= 0"], amount="si.ui_premium_paid_fen / si.insured_start")
    )
    result = evaluate(
        compiled, document({"si.layoffs": 0, "si.ui_premium_paid_fen": 10, "si.insured_start": 4}), today=TODAY
    )
    assert (result.outcome, result.amount_fen) == (Outcome.ELIGIBLE, 3)  # 2.5 fen, half up


@pytest.mark.parametrize(
    "policy_id",
    [p.name.removesuffix(".yaml") for p in sorted(POLICIES_DIR.glob("*.yaml")) if not p.name.endswith(".test.yaml")],
)
def test_no_shipped_policy_sends_a_division_to_the_engine(policy_id: str) -> None:
    policy = shipped_policies().get(policy_id)
    for period in policy.check_periods():
        assert "$div" not in set(keys(policy.compiled(period).definition))


# --- decimals and percentages --------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "si.layoffs > 5.5%",
        "si.layoffs * 5.5% > 3",
        "si.layoffs == 2.5",
        "si.layoffs > params.rate",
        "0.5 < si.layoffs",
        "si.layoffs in [1, 2.5]",
    ],
)
def test_rate_compared_directly_in_a_condition_is_refused(tmp_path: Path, expr: str) -> None:
    error = limit(tmp_path, [expr], parameters=RATE)
    assert "no exact fractions" in error.reason


def test_whole_decimals_and_ratios_are_fine(tmp_path: Path) -> None:
    compiled = compile_text(
        tmp_path,
        policy_yaml(["si.layoffs >= 2.0", "ratio(si.layoffs, si.insured_start) <= params.rate"], parameters=RATE),
    )
    facts = {"si.layoffs": 11, "si.insured_start": 200}
    assert evaluate(compiled, document(facts), today=TODAY).outcome == Outcome.ELIGIBLE
    facts["si.layoffs"] = 12
    assert evaluate(compiled, document(facts), today=TODAY).outcome == Outcome.INELIGIBLE


@pytest.mark.parametrize(
    "expr",
    ["min(si.layoffs, 1.5) > 1", "(if enterprise.labor_dispatch then 1.5 else 2) > 1", "max(si.layoffs, 0.5) >= 1"],
)
def test_rate_compared_through_a_term_is_refused_at_load(tmp_path: Path, expr: str) -> None:
    limit(tmp_path, [expr])


@pytest.mark.parametrize("expr", ["min(si.layoffs, 1.5) > 1", "max(si.layoffs, 0.5) >= 1"])
def test_rate_compared_through_a_term_never_gives_a_silent_answer(tmp_path: Path, expr: str) -> None:
    try:
        compiled = compile_text(tmp_path, policy_yaml([expr]))
    except EngineLimitError:
        return  # refused at load: the better behaviour
    with pytest.raises(EngineError, match="fraction"):
        evaluate(compiled, document({"si.layoffs": 0 if "max" in expr else 5}), today=TODAY)


# --- number of clauses ---------------------------------------------------------------------


def test_fifty_seven_clauses_are_accepted_and_evaluate(tmp_path: Path) -> None:
    assert MAX_RULES - 3 == 57  # the clause rules plus `seen`, `all` and `decided`
    compiled = compile_text(tmp_path, policy_yaml([f"si.layoffs >= {i}" for i in range(57)]))
    assert evaluate(compiled, document({"si.layoffs": 56}), today=TODAY).outcome == Outcome.ELIGIBLE
    result = evaluate(compiled, document({"si.layoffs": 30}), today=TODAY)
    assert result.outcome == Outcome.INELIGIBLE
    assert len(result.failed) == 26


def test_fifty_eight_clauses_are_refused(tmp_path: Path) -> None:
    error = limit(tmp_path, [f"si.layoffs >= {i}" for i in range(58)])
    assert "58 clauses" in error.reason
    assert "at most 57" in error.reason


def test_payable_clauses_count_towards_the_limit(tmp_path: Path) -> None:
    error = limit(
        tmp_path,
        [f"si.layoffs >= {i}" for i in range(57)],
        payable=["enterprise.has_bank_account", "derived.size_class is present"],
    )
    assert "59 clauses" in error.reason


def test_too_many_distinct_values_for_one_engine_fact(tmp_path: Path) -> None:
    # joined by `or`, which stays one level deep (a chain of 200 `+` is beyond rules.definitions.MAX_DEPTH)
    terms = " or ".join(f"count(h in hires where h.age > {i}) > 0" for i in range(200))
    error = limit(tmp_path, [terms])
    assert "too many facts" in error.reason


# --- 64-bit integers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "si.ui_premium_paid_fen * si.ui_late_fee_fen * 1000000 > 1",
        "si.ui_premium_paid_fen * si.ui_late_fee_fen > 1",
        "si.ui_premium_paid_fen * 10000 > tax.revenue_fen",
        "tax.revenue_fen * 100 < si.ui_premium_paid_fen * 100000",
        "ratio(si.ui_premium_paid_fen, tax.revenue_fen) <= 0.001%",
    ],
)
def test_arithmetic_that_can_exceed_int64_is_refused(tmp_path: Path, expr: str) -> None:
    error = limit(tmp_path, [expr])
    assert "64-bit" in error.reason
    assert error.line == position_of(policy_yaml([expr]), expr)[0]


def test_constant_beyond_int64_is_refused(tmp_path: Path) -> None:
    assert "64-bit" in limit(tmp_path, [f"si.layoffs < {INT64_MAX + 1}"]).reason


@pytest.mark.parametrize(
    "expr",
    [
        "si.layoffs * si.insured_start > 1",  # 10**7 * 10**7
        "si.ui_premium_paid_fen * 1000 > 1",  # 10**18 < 2**63
        "ratio(si.ui_benefit_claimants, si.insured_avg_monthly) <= 5.5%",
        "ratio(tax.rd_expense_fen, tax.revenue_fen) >= 3%",
    ],
)
def test_arithmetic_within_int64_is_accepted(tmp_path: Path, expr: str) -> None:
    load_text(tmp_path, policy_yaml([expr]))


def test_product_of_money_facts_wrapping_in_the_engine_is_caught(tmp_path: Path) -> None:
    """Data beyond the catalogue's ranges cannot silently wrap: the cross-check fails it."""
    compiled = compile_text(tmp_path, policy_yaml(["si.layoffs * si.insured_start < 5"]))
    for layoffs, insured in ((2**40, 2**40), (2**32, 2**32), (2**62, 4)):
        with pytest.raises((EngineError, EngineDisagreementError)):
            evaluate(compiled, document({"si.layoffs": layoffs, "si.insured_start": insured}), today=TODAY)


# --- other refusals -------------------------------------------------------------------------


def test_long_string_constant_is_refused(tmp_path: Path) -> None:
    error = limit(tmp_path, [f'enterprise.name == "{"x" * 1001}"'])
    assert "string constant too long" in error.reason


def test_parameter_presence_is_refused(tmp_path: Path) -> None:
    error = limit(tmp_path, ["params.n is missing"], parameters="n:\n  description: 人数\n  value: 5\n")
    assert "parameter is a constant" in error.reason


def test_tier_table_as_a_value_is_refused(tmp_path: Path) -> None:
    params = (
        "table:\n  description: 档次\n  value:\n    - up_to: 100\n      value: 1\n    - up_to: null\n      value: 2\n"
    )
    load_text(tmp_path, policy_yaml(["tier(si.layoffs, params.table) > 1"], parameters=params))
    with pytest.raises(PolicyFileError, match="tier"):
        load_text(tmp_path, policy_yaml(["params.table == 1"], parameters=params))


# --- constructs the engine evaluates wrongly ------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "facts"),
    [
        ("si.layoffs > -3", {"si.layoffs": 4}),
        ("-si.layoffs <= -4", {"si.layoffs": 4}),
        ("si.layoffs >= 1 + 1", {"si.layoffs": 5}),
        ("today - enterprise.established_on >= 365 * 3", {"enterprise.established_on": TODAY.replace(year=2020)}),
    ],
)
def test_constant_arithmetic_in_a_condition(tmp_path: Path, expr: str, facts: dict[str, Any]) -> None:
    compiled = compile_text(tmp_path, policy_yaml([expr]))
    assert evaluate(compiled, document(facts), today=TODAY).outcome == Outcome.ELIGIBLE


def test_expression_limit_is_refused_at_load_or_works(tmp_path: Path) -> None:
    conditions = [f"si.layoffs == {i} or si.insured_start == {i}" for i in range(14)]
    try:
        compiled = compile_text(tmp_path, policy_yaml(conditions))
    except EngineLimitError:
        return
    result = evaluate(compiled, document({"si.layoffs": 0, "si.insured_start": 1}), today=TODAY)
    assert result.outcome == Outcome.INELIGIBLE


def test_thirteen_or_clauses_still_work(tmp_path: Path) -> None:
    conditions = [f"si.layoffs == {i} or si.insured_start == {i}" for i in range(13)]
    compiled = compile_text(tmp_path, policy_yaml(conditions))
    assert (
        evaluate(compiled, document({"si.layoffs": 0, "si.insured_start": 1}), today=TODAY).outcome
        == Outcome.INELIGIBLE
    )
