"""rules.evaluator: outcomes, exact amounts, traces, three-valued logic and the engine cross-check."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from rules_testkit import (
    AS_OF,
    REPO_ROOT,
    TODAY,
    USCC,
    compile_text,
    document,
    policy_yaml,
    record,
    stable_document,
    stable_jobs,
)

from rules.engine import DurableRuleset
from rules.errors import EngineDisagreementError, EngineError
from rules.evaluator import (
    ClauseResult,
    CollectionRead,
    Evaluation,
    FactRead,
    evaluate,
)
from rules.facts import Fact, FactsDocument, FactValue, Record
from rules.values import Outcome

SI_CONDITION_READS = [
    "si.ui_months_paid",
    "si.ui_arrears",
    "si.ui_benefit_claimants",
    "si.insured_avg_monthly",
    "si.insured_start",
]


def stable(
    overrides: dict[str, FactValue | None] | None = None,
    period: int = 2025,
    *,
    credit_listings: Sequence[Record] = (),
    missing: Mapping[str, str] | None = None,
) -> Evaluation:
    document = stable_document(overrides, credit_listings=credit_listings, missing=missing)
    return evaluate(stable_jobs().compiled(period), document, today=TODAY)


def clause(result: Evaluation, clause_id: str) -> ClauseResult:
    return next(c for c in [*result.conditions, *result.payable] if c.id == clause_id)


# --- stable-jobs-refund: outcomes and exact amounts ------------------------------------------


def test_eligible_large_enterprise_gets_30_percent_rounded_half_up() -> None:
    result = stable()
    assert result.outcome == Outcome.ELIGIBLE
    assert result.amount_fen == 37_037_015  # 1,234,567.15 元 x 30% = 370,370.145 元
    assert result.amount is not None
    assert result.amount.exact == "37037014.5"
    assert result.amount.rounding == "half_up"
    assert (result.failed, result.missing, result.held) == ([], [], [])
    assert all(c.result == "true" for c in [*result.conditions, *result.payable])
    assert (result.policy_id, result.policy_version, result.period, result.fact_year) == (
        "stable-jobs-refund",
        "2025.2",
        2025,
        2024,
    )
    assert result.rule_sha256 == stable_jobs().sha256
    assert result.evaluated_on == "2025-06-01"
    assert result.engine == "durable-rules 2.0.28"


@pytest.mark.parametrize(
    ("overrides", "period", "fen", "exact"),
    [
        ({"si.ui_premium_paid_fen": 123_456_718}, 2025, 37_037_015, "37037015.4"),  # .xx4 down
        ({"si.ui_premium_paid_fen": 123_456_719}, 2025, 37_037_016, "37037015.7"),
        ({"si.ui_premium_paid_fen": 15}, 2025, 5, "4.5"),  # not 4 (half-even)
        ({"enterprise.org_type": "law_firm", "derived.size_class": None}, 2025, 74_074_029, "74074029"),
        ({"derived.size_class": "small"}, 2025, 74_074_029, "74074029"),
        ({"derived.size_class": "micro", "si.ui_premium_paid_fen": 25}, 2025, 15, "15"),
        ({}, 2022, 61_728_358, "61728357.5"),  # large 50% in 2022
        ({"derived.size_class": "medium"}, 2022, 111_111_044, "111111043.5"),  # sme 90% in 2022
        (
            {"si.ui_premium_paid_fen": 100_000, "si.ui_back_payment_fen": 10_000, "si.ui_late_fee_fen": 5},
            2025,
            26_999,
            "26998.5",
        ),
    ],
)
def test_amounts(overrides: dict[str, FactValue | None], period: int, fen: int, exact: str) -> None:
    result = stable(overrides, period)
    assert result.outcome == Outcome.ELIGIBLE
    assert result.amount_fen == fen
    assert result.amount is not None and result.amount.exact == exact


def test_negative_net_premium_pays_nothing_and_says_so() -> None:
    result = stable({"si.ui_premium_paid_fen": 100, "si.ui_back_payment_fen": 200})
    assert result.amount_fen == 0
    assert result.amount is not None
    assert any("below zero" in note for note in result.amount.notes)


def test_amount_trace_reads_the_premium_facts_with_sources() -> None:
    result = stable()
    assert result.amount is not None
    reads = {r.name: r for r in result.amount.reads}
    assert set(reads) >= {
        "si.ui_premium_paid_fen",
        "si.ui_back_payment_fen",
        "si.ui_late_fee_fen",
        "enterprise.org_type",
        "derived.size_class",
    }
    assert reads["si.ui_premium_paid_fen"] == FactRead(
        "si.ui_premium_paid_fen", "上年度实际缴纳失业保险费（分）", 123_456_715, "human_resources", "2025-03-31"
    )


# --- layoff-rate boundaries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claimants", "average", "start", "outcome"),
    [
        (55, 1000, 1000, Outcome.ELIGIBLE),  # exactly 5.5%
        (56, 1000, 1000, Outcome.INELIGIBLE),
        (11, 200, 200, Outcome.ELIGIBLE),  # exactly 5.5% again
        (12, 200, 200, Outcome.INELIGIBLE),
        (0, 1000, 1000, Outcome.ELIGIBLE),
        (6, 30, 30, Outcome.ELIGIBLE),  # exactly 20%, small employer (30 insured at the start)
        (7, 30, 30, Outcome.INELIGIBLE),  # above 20%
        (6, 30, 31, Outcome.INELIGIBLE),  # 20% but 31 insured at the start: the 5.5% limit applies
        (56, 1000, 30, Outcome.ELIGIBLE),  # 5.6% is fine for a small employer
        (200, 1000, 30, Outcome.ELIGIBLE),  # exactly 20%
        (201, 1000, 30, Outcome.INELIGIBLE),
    ],
)
def test_layoff_rate_boundaries(claimants: int, average: int, start: int, outcome: str) -> None:
    result = stable(
        {"si.ui_benefit_claimants": claimants, "si.insured_avg_monthly": average, "si.insured_start": start}
    )
    assert result.outcome == outcome
    assert clause(result, "layoff-rate").result == ("true" if outcome == Outcome.ELIGIBLE else "false")
    if outcome == Outcome.INELIGIBLE:
        assert [c.id for c in result.failed] == ["layoff-rate"]
        assert result.amount_fen == 0


@pytest.mark.parametrize("claimants", [0, 3])
def test_zero_divisor_in_the_data_is_undetermined(claimants: int) -> None:
    result = stable({"si.insured_avg_monthly": 0, "si.ui_benefit_claimants": claimants})
    assert result.outcome == Outcome.UNDETERMINED
    assert result.amount_fen == 0
    layoff = clause(result, "layoff-rate")
    assert layoff.result == "unknown"
    assert any("si.insured_avg_monthly is 0" in note for note in layoff.notes)
    assert any("si.insured_avg_monthly is 0" in name for name in result.missing)


def test_zero_divisor_does_not_kill_the_process() -> None:
    """An integer division by zero inside durable-rules is SIGFPE: run it where a crash shows."""
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from rules.evaluator import evaluate\n"
        "from rules_testkit import TODAY, stable_document, stable_jobs\n"
        "compiled = stable_jobs().compiled(2025)\n"
        "for claimants in (0, 1, 56):\n"
        "    doc = stable_document({'si.insured_avg_monthly': 0,"
        " 'si.ui_benefit_claimants': claimants, 'si.insured_start': 0})\n"
        "    print(evaluate(compiled, doc, today=TODAY).outcome)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [Outcome.UNDETERMINED] * 3


# --- missing facts, HELD, credit listings -----------------------------------------------------


def test_missing_fact_is_listed_by_name() -> None:
    result = stable({"si.ui_months_paid": None})
    assert result.outcome == Outcome.UNDETERMINED
    assert result.missing == ["si.ui_months_paid"]
    assert result.amount_fen == 0
    read = next(r for r in clause(result, "premiums-paid-in-full").reads if r.name == "si.ui_months_paid")
    assert read == FactRead(
        "si.ui_months_paid", "截至上年末连续足额缴纳失业保险月数", None, None, None, "no value on record"
    )


def test_missing_group_is_listed_with_its_reason() -> None:
    overrides: dict[str, FactValue | None] = {name: None for name in (*SI_CONDITION_READS, "si.ui_premium_paid_fen")}
    reason = "no 2024 social-insurance record"
    result = stable(overrides, missing={"si": reason})
    assert result.outcome == Outcome.UNDETERMINED
    # the conditions' missing facts first, then what the amount will need as well
    assert result.missing == [*SI_CONDITION_READS, "si.ui_premium_paid_fen"]
    reads = [r for c in result.conditions for r in c.reads if r.name.startswith("si.")]
    assert reads and all(r.missing == reason and r.value is None for r in reads)


def test_a_false_condition_wins_over_unknown_ones() -> None:
    overrides: dict[str, FactValue | None] = {name: None for name in SI_CONDITION_READS}
    result = stable({**overrides, "enterprise.status": "revoked"})
    assert result.outcome == Outcome.INELIGIBLE
    assert [c.id for c in result.failed] == ["registered-active"]
    assert clause(result, "premiums-paid-in-full").result == "unknown"


def test_missing_amount_fact_is_undetermined() -> None:
    result = stable({"si.ui_premium_paid_fen": None})
    assert result.outcome == Outcome.UNDETERMINED
    assert result.missing == ["si.ui_premium_paid_fen"]


@pytest.mark.parametrize(
    ("overrides", "held"),
    [
        ({"enterprise.has_bank_account": False}, ["bank-account"]),
        ({"enterprise.has_bank_account": None}, ["bank-account"]),
    ],
)
def test_held_without_a_bank_account_keeps_the_amount(overrides: dict[str, FactValue | None], held: list[str]) -> None:
    result = stable(overrides)
    assert result.outcome == Outcome.HELD
    assert result.held == held
    assert result.amount_fen == 37_037_015


def test_held_without_a_size_class() -> None:
    result = stable({"derived.size_class": None})
    assert result.outcome == Outcome.HELD
    assert result.held == ["size-class-known"]
    assert clause(result, "size-class-known").result == "false"


@pytest.mark.parametrize(
    ("listing", "outcome"),
    [
        ({"list": "zombie", "listed_on": date(2023, 1, 1), "removed_on": None}, Outcome.INELIGIBLE),
        ({"list": "zombie", "listed_on": date(2023, 1, 1), "removed_on": date(2025, 1, 1)}, Outcome.ELIGIBLE),
        ({"list": "zombie", "listed_on": date(2023, 1, 1), "removed_on": date(2025, 12, 31)}, Outcome.INELIGIBLE),
        ({"list": "serious_dishonesty", "listed_on": date(2024, 5, 1), "removed_on": None}, Outcome.INELIGIBLE),
        ({"list": "abnormal_operation", "listed_on": date(2024, 5, 1), "removed_on": None}, Outcome.ELIGIBLE),
        ({"list": "zombie", "listed_on": date(2025, 6, 2), "removed_on": None}, Outcome.ELIGIBLE),  # not yet
        ({"list": "zombie", "listed_on": date(2025, 6, 1), "removed_on": None}, Outcome.INELIGIBLE),
    ],
)
def test_credit_listings(listing: dict[str, FactValue | None], outcome: str) -> None:
    result = stable(credit_listings=[record("credit:1", **listing)])
    assert result.outcome == outcome
    trace = clause(result, "not-credit-listed")
    matched = ["credit:1"] if outcome == Outcome.INELIGIBLE else []
    assert trace.collections == [CollectionRead("credit_listings", "信用名单", 1, matched)]


@pytest.mark.parametrize(
    "fields",
    [
        {"list": None, "listed_on": date(2023, 1, 1), "removed_on": None},
        {"list": "zombie", "listed_on": None, "removed_on": None},
    ],
)
def test_credit_listing_with_an_unknown_field_is_not_eligible(fields: dict[str, FactValue | None]) -> None:
    listing = record("credit:1", **fields)
    result = stable(credit_listings=[listing])
    assert clause(result, "not-credit-listed").result == "unknown"
    assert result.outcome == Outcome.UNDETERMINED
    assert result.missing


def test_unknown_record_field_makes_the_clause_unknown() -> None:
    listing = record("credit:1", list="zombie", listed_on=None, removed_on=None)
    result = stable(credit_listings=[listing])
    trace = clause(result, "not-credit-listed")
    assert trace.result == "unknown"
    assert trace.collections == [CollectionRead("credit_listings", "信用名单", 1, [])]
    assert result.outcome != Outcome.INELIGIBLE


# --- the trace ------------------------------------------------------------------------------


def test_trace_lists_every_value_read_with_source_and_as_of() -> None:
    result = stable()
    status = clause(result, "registered-active")
    assert status.reads == [FactRead("enterprise.status", "登记状态", "active", "market_regulation", "2025-03-31")]
    assert (status.text, status.citation) == ("单位登记状态为存续（在营）", "免申即享通用条件")
    layoff = clause(result, "layoff-rate")
    assert [(r.name, r.value, r.source, r.as_of) for r in layoff.reads] == [
        ("si.ui_benefit_claimants", 10, "human_resources", "2025-03-31"),
        ("si.insured_avg_monthly", 1000, "human_resources", "2025-03-31"),
        ("si.insured_start", 1000, "human_resources", "2025-03-31"),
    ]


def test_trace_is_json_ready(tmp_path: Path) -> None:
    text = policy_yaml(['enterprise.established_on < date("2024-01-01")'])
    compiled = compile_text(tmp_path, text)
    doc = document({"enterprise.established_on": date(2020, 1, 2)})
    result = evaluate(compiled, doc, today=TODAY)
    assert result.conditions[0].reads[0].value == "2020-01-02"
    assert result.conditions[0].reads[0].as_of == AS_OF.isoformat()
    payload = json.loads(json.dumps(result.to_dict(), ensure_ascii=False))
    assert payload["outcome"] == Outcome.ELIGIBLE
    assert json.dumps(stable().to_dict(), ensure_ascii=False)


def test_fact_without_as_of_is_traced_as_such(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, policy_yaml(["si.layoffs >= 0"]))
    doc = FactsDocument(USCC, 2024, {"si.layoffs": Fact(3, "human_resources", None)}, {})
    read = evaluate(compiled, doc, today=TODAY).conditions[0].reads[0]
    assert (read.value, read.source, read.as_of) == (3, "human_resources", None)


# --- three-valued logic ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "a", "b", "result", "outcome"),
    [
        ("si.ui_arrears or enterprise.labor_dispatch", None, True, "true", Outcome.ELIGIBLE),
        ("si.ui_arrears or enterprise.labor_dispatch", None, False, "unknown", Outcome.UNDETERMINED),
        ("si.ui_arrears or enterprise.labor_dispatch", True, None, "true", Outcome.ELIGIBLE),
        ("si.ui_arrears or enterprise.labor_dispatch", False, None, "unknown", Outcome.UNDETERMINED),
        ("si.ui_arrears or enterprise.labor_dispatch", None, None, "unknown", Outcome.UNDETERMINED),
        ("si.ui_arrears or enterprise.labor_dispatch", False, False, "false", Outcome.INELIGIBLE),
        ("si.ui_arrears and enterprise.labor_dispatch", None, False, "false", Outcome.INELIGIBLE),
        ("si.ui_arrears and enterprise.labor_dispatch", None, True, "unknown", Outcome.UNDETERMINED),
        ("si.ui_arrears and enterprise.labor_dispatch", True, True, "true", Outcome.ELIGIBLE),
        ("not (si.ui_arrears and enterprise.labor_dispatch)", None, False, "true", Outcome.ELIGIBLE),
        ("not (si.ui_arrears or enterprise.labor_dispatch)", None, True, "false", Outcome.INELIGIBLE),
        ("not (si.ui_arrears or enterprise.labor_dispatch)", None, False, "unknown", Outcome.UNDETERMINED),
        ("not si.ui_arrears or enterprise.labor_dispatch", None, False, "unknown", Outcome.UNDETERMINED),
        ("si.ui_arrears is missing or enterprise.labor_dispatch", None, False, "true", Outcome.ELIGIBLE),
        ("si.ui_arrears is present and enterprise.labor_dispatch", None, True, "false", Outcome.INELIGIBLE),
        ("si.ui_arrears != enterprise.labor_dispatch", None, True, "unknown", Outcome.UNDETERMINED),
    ],
)
def test_three_valued_logic(
    tmp_path: Path, expr: str, a: bool | None, b: bool | None, result: str, outcome: str
) -> None:
    compiled = compile_text(tmp_path, policy_yaml([expr]))
    evaluation = evaluate(
        compiled, document({"si.ui_arrears": a, "enterprise.labor_dispatch": b}), today=TODAY
    )  # the engine agrees, or this raises
    assert evaluation.conditions[0].result == result
    assert evaluation.outcome == outcome
    assert [r.name for r in evaluation.conditions[0].reads] == ["si.ui_arrears", "enterprise.labor_dispatch"]
    if outcome == Outcome.UNDETERMINED:
        assert evaluation.missing == [
            n for n, v in (("si.ui_arrears", a), ("enterprise.labor_dispatch", b)) if v is None
        ]


@pytest.mark.parametrize(("value", "result"), [("enterprise", "true"), ("government", "false"), (None, "unknown")])
def test_membership_is_three_valued(tmp_path: Path, value: str | None, result: str) -> None:
    compiled = compile_text(
        tmp_path,
        policy_yaml(['enterprise.org_type in ["enterprise", "law_firm"]', 'enterprise.org_type not in ["government"]']),
    )
    evaluation = evaluate(compiled, document({"enterprise.org_type": value}), today=TODAY)
    assert [c.result for c in evaluation.conditions] == [result, result]


# --- other evaluation details ---------------------------------------------------------------


def test_cap_limits_the_amount(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, policy_yaml(["si.layoffs >= 0"], amount="si.ui_premium_paid_fen", cap="1000元"))
    capped = evaluate(compiled, document({"si.layoffs": 0, "si.ui_premium_paid_fen": 200_000}), today=TODAY)
    assert capped.amount_fen == 100_000
    assert capped.amount is not None and any("capped" in n for n in capped.amount.notes)
    under = evaluate(compiled, document({"si.layoffs": 0, "si.ui_premium_paid_fen": 99_999}), today=TODAY)
    assert under.amount_fen == 99_999


def test_division_by_zero_in_the_amount_is_undetermined(tmp_path: Path) -> None:
    compiled = compile_text(
        tmp_path, policy_yaml(["si.layoffs >= 0"], amount="si.ui_premium_paid_fen / si.insured_start")
    )
    result = evaluate(
        compiled, document({"si.layoffs": 0, "si.ui_premium_paid_fen": 5, "si.insured_start": 0}), today=TODAY
    )
    assert result.outcome == Outcome.UNDETERMINED
    assert result.missing == ["division by zero"]


def test_rounding_down_when_the_policy_says_so(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs >= 0"], amount="si.ui_premium_paid_fen * 30%")
    text = text.replace("  text: 金额\n", "  text: 金额\n  rounding: down\n")
    compiled = compile_text(tmp_path, text)
    result = evaluate(compiled, document({"si.layoffs": 0, "si.ui_premium_paid_fen": 123_456_719}), today=TODAY)
    assert result.amount_fen == 37_037_015  # 37,037,015.7 down


def test_dates_and_context_values(tmp_path: Path) -> None:
    compiled = compile_text(
        tmp_path,
        policy_yaml(
            [
                "today - enterprise.established_on >= 365",
                "year(enterprise.established_on) < period",
                "fact_year == 2024",
                "enterprise.established_on + 30 <= today",
            ]
        ),
    )
    assert (
        evaluate(compiled, document({"enterprise.established_on": date(2024, 6, 1)}), today=TODAY).outcome
        == Outcome.ELIGIBLE
    )
    later = evaluate(compiled, document({"enterprise.established_on": date(2024, 6, 2)}), today=TODAY)
    assert [c.result for c in later.conditions] == ["false", "true", "true", "true"]


def test_chinese_strings_compare_exactly_in_the_engine(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, policy_yaml(['enterprise.name == "襄阳测试有限公司"']))
    for name, outcome in (
        ("襄阳测试有限公司", Outcome.ELIGIBLE),
        ("襄阳测试有限公司2", Outcome.INELIGIBLE),
        ("襄阳测试有限", Outcome.INELIGIBLE),
        ("襄阳测试有限公句", Outcome.INELIGIBLE),
    ):
        assert evaluate(compiled, document({"enterprise.name": name}), today=TODAY).outcome == outcome


def test_overlong_string_fact_is_an_error_not_an_answer(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, policy_yaml(['enterprise.name == "x"']))
    with pytest.raises(EngineError, match="too long"):
        evaluate(compiled, document({"enterprise.name": "x" * 1001}), today=TODAY)


def test_counts_over_records(tmp_path: Path) -> None:
    compiled = compile_text(
        tmp_path,
        policy_yaml(
            ['count(h in hires where h.age < 35 and h.category == "graduate") >= 2'],
            amount="count(h in hires where h.age < 35) * 1000元",
        ),
    )
    hires = [
        record(f"hire:{i}", "human_resources", age=age, category=category)
        for i, (age, category) in enumerate([(22, "graduate"), (34, "graduate"), (35, "graduate"), (23, "other")])
    ]
    result = evaluate(compiled, document({}, collections={"hires": hires}), today=TODAY)
    assert result.outcome == Outcome.ELIGIBLE
    assert result.amount_fen == 3 * 100_000
    assert result.conditions[0].collections == [CollectionRead("hires", "招用人员", 4, ["hire:0", "hire:1"])]


# --- bugs in how missing facts reach the engine --------------------------------------------------


def test_stable_jobs_without_claimants_and_insured_start_is_undetermined() -> None:
    outcomes = []
    for claimants in (10, 100, 0, 10):
        stable({"si.ui_benefit_claimants": claimants})  # the engine's state before
        result = stable({"si.insured_start": None, "si.ui_benefit_claimants": None})
        outcomes.append((result.outcome, result.missing))
    assert outcomes == [(Outcome.UNDETERMINED, ["si.ui_benefit_claimants", "si.insured_start"])] * 4


@pytest.mark.parametrize(
    ("expr", "name", "present"),
    [
        ("si.layoffs * 2 > 3", "si.layoffs", [5, 1]),
        ("si.layoffs + 1 > 3", "si.layoffs", [5, 1]),
        ("enterprise.established_on + 30 <= today", "enterprise.established_on", [date(2020, 1, 1), date(2025, 5, 30)]),
    ],
)
def test_missing_fact_inside_arithmetic_is_undetermined(
    tmp_path: Path, expr: str, name: str, present: list[FactValue]
) -> None:
    compiled = compile_text(tmp_path, policy_yaml([expr]))
    outcomes = []
    for _ in range(5):
        for value in present:
            evaluate(compiled, document({name: value}), today=TODAY)
        outcomes.append(evaluate(compiled, document({}), today=TODAY).outcome)
    assert outcomes == [Outcome.UNDETERMINED] * 5


def test_negated_conditional_with_unknown_condition(tmp_path: Path) -> None:
    compiled = compile_text(
        tmp_path, policy_yaml(["not (if enterprise.labor_dispatch then si.layoffs > 2 else si.layoffs > 5)"])
    )
    result = evaluate(compiled, document({"si.layoffs": 1}), today=TODAY)
    assert result.outcome in (Outcome.ELIGIBLE, Outcome.UNDETERMINED)


# --- the cross-check: a disagreeing engine is an error, never an answer -----------------------------


def patch_fire(
    monkeypatch: pytest.MonkeyPatch, drop: AbstractSet[str] = frozenset(), add: AbstractSet[str] = frozenset()
) -> None:
    """Make every ruleset's fire() drop or add rule names, as a misbehaving engine would."""
    original = DurableRuleset.fire

    def fire(self: DurableRuleset, properties: dict[str, Any], decide_on: Sequence[str] = ()) -> frozenset[str]:
        return frozenset((original(self, properties, decide_on) - drop) | add)

    monkeypatch.setattr(DurableRuleset, "fire", fire)


@pytest.mark.parametrize(
    ("drop", "detail"),
    [
        ({"c0"}, "clause registered-active: engine failed, trace true"),
        ({"c5"}, "clause layoff-rate: engine failed, trace true"),
        ({"p0"}, "clause bank-account: engine failed, trace true"),
        ({"all"}, "decision: engine not eligible, trace eligible"),
        ({"seen"}, "the engine did not see the evaluation (catch-all rule did not fire)"),
    ],
)
def test_engine_dropping_a_rule_is_a_disagreement(monkeypatch: pytest.MonkeyPatch, drop: set[str], detail: str) -> None:
    compiled = stable_jobs().compiled(2025)
    assert compiled.ruleset is not None  # registered before the patch
    patch_fire(monkeypatch, drop=drop)
    with pytest.raises(EngineDisagreementError) as info:
        evaluate(compiled, stable_document(), today=TODAY)
    assert detail in info.value.details
    assert (info.value.policy_id, info.value.uscc) == ("stable-jobs-refund", "91420600MA4K00001X")
    assert detail in str(info.value)


@pytest.mark.parametrize(
    ("add", "detail"),
    [
        ({"c1"}, "clause not-credit-listed: engine held, trace false"),
        ({"all"}, "decision: engine eligible, trace not eligible"),
    ],
)
def test_engine_firing_an_extra_rule_is_a_disagreement(
    monkeypatch: pytest.MonkeyPatch, add: set[str], detail: str
) -> None:
    compiled = stable_jobs().compiled(2025)
    patch_fire(monkeypatch, add=add)
    listing = record("credit:9", list="zombie", listed_on=date(2023, 1, 1), removed_on=None)
    with pytest.raises(EngineDisagreementError) as info:
        evaluate(compiled, stable_document(credit_listings=[listing]), today=TODAY)
    assert detail in info.value.details


def test_patched_instance_fire_is_caught_too(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = stable_jobs().compiled(2025)
    engine = compiled.ruleset
    original = engine.fire
    monkeypatch.setattr(engine, "fire", lambda properties, decide_on=(): original(properties, decide_on) - {"c3"})
    with pytest.raises(EngineDisagreementError, match="not-labor-dispatch"):
        evaluate(compiled, stable_document(), today=TODAY)
    monkeypatch.undo()
    assert evaluate(compiled, stable_document(), today=TODAY).outcome == Outcome.ELIGIBLE


def test_engine_failure_is_an_engine_error(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = stable_jobs().compiled(2025)

    def broken(self: DurableRuleset, properties: dict[str, Any], decide_on: Sequence[str] = ()) -> frozenset[str]:
        raise EngineError("simulated")

    monkeypatch.setattr(DurableRuleset, "fire", broken)
    with pytest.raises(EngineError, match="simulated"):
        evaluate(compiled, stable_document(), today=TODAY)


# --- the engine and the trace agree on many random conditions ----------------------------------

# Atoms avoid the constructs with known bugs above: facts used inside arithmetic are always
# present, no negative literals, `if` only on a fact that is always present.
ATOMS = [
    "si.layoffs > 3",
    "si.layoffs <= si.insured_start",
    'enterprise.status == "active"',
    "enterprise.labor_dispatch",
    "si.ui_arrears",
    'enterprise.org_type in ["enterprise", "law_firm"]',
    'enterprise.org_type not in ["government"]',
    "si.ui_arrears is missing",
    "enterprise.status is present",
    "ratio(si.layoffs, si.insured_start) <= 20%",
    "ratio(si.layoffs, si.insured_start) > 5.5%",
    "count(h in hires where h.age < 35) >= 1",
    'count(h in hires where h.category == "graduate" or h.labor_contract) < 2',
    "today - enterprise.established_on > 365",
    "year(enterprise.established_on) >= 2020",
    "si.layoffs + si.insured_start * 2 > 100",
    "enterprise.established_on + 30 <= today",
    "(if enterprise.labor_dispatch then si.layoffs > 2 else si.layoffs > 5)",
    'enterprise.established_on < date("2021-06-30")',
    "min(si.layoffs, si.insured_start) >= 2",
    'enterprise.status != "revoked"',
    "si.layoffs == si.insured_start",
    "true",
    "false",
    'enterprise.name == "襄阳测试有限公司"',
    "tax.employees >= 20",
    "tax.employees != 300",
]


def random_condition(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.35:
        return rng.choice(ATOMS)
    pick = rng.random()
    if pick < 0.2:
        return f"not ({random_condition(rng, depth - 1)})"
    joiner = " and " if pick < 0.6 else " or "
    return "(" + joiner.join(random_condition(rng, depth - 1) for _ in range(2)) + ")"


def random_document(rng: random.Random) -> FactsDocument:
    values: dict[str, FactValue | None] = {
        "si.layoffs": rng.choice([0, 1, 2, 3, 4, 5, 6, 10, 50, 100]),
        "si.insured_start": rng.choice([0, 1, 3, 5, 10, 30, 31, 100]),
        "enterprise.established_on": date(2019, 1, 1) + timedelta(days=rng.randint(0, 2300)),
        "enterprise.labor_dispatch": rng.random() < 0.5,
    }
    optional: dict[str, FactValue] = {
        "enterprise.status": rng.choice(["active", "revoked", "suspended"]),
        "si.ui_arrears": rng.random() < 0.5,
        "enterprise.org_type": rng.choice(["enterprise", "law_firm", "government"]),
        "enterprise.name": rng.choice(["襄阳测试有限公司", "襄阳测试有限公司2", "abc"]),
        "tax.employees": rng.choice([0, 19, 20, 300, 301]),
    }
    values.update({k: v for k, v in optional.items() if rng.random() < 0.75})
    hires = [
        record(
            f"hire:{j}",
            "human_resources",
            age=rng.choice([20, 34, 35, 50, None]),
            category=rng.choice(["graduate", "other", None]),
            labor_contract=rng.choice([True, False, None]),
        )
        for j in range(rng.randint(0, 3))
    ]
    return document(values, collections={"hires": hires})


def test_engine_agrees_with_the_trace_on_random_conditions(tmp_path: Path) -> None:
    rng = random.Random(20250601)
    outcomes: dict[str, int] = {}
    for policy_number in range(25):
        conditions = [random_condition(rng, 2) for _ in range(rng.randint(1, 4))]
        directory = tmp_path / str(policy_number)
        directory.mkdir()
        compiled = compile_text(directory, policy_yaml(conditions))
        for _ in range(40):
            result = evaluate(compiled, random_document(rng), today=TODAY)  # raises on disagreement
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    assert set(outcomes) == {Outcome.ELIGIBLE, Outcome.INELIGIBLE, Outcome.UNDETERMINED}


@pytest.mark.parametrize(
    "overrides", [{}, {"si.layoffs": 500}, {"si.ui_premium_paid_fen": None}, {"enterprise.has_bank_account": False}]
)
def test_to_dict_is_what_dataclasses_asdict_gives(overrides: dict[str, FactValue | None]) -> None:
    from dataclasses import asdict

    result = stable(overrides)
    assert result.to_dict() == asdict(result)
    assert json.dumps(result.to_dict(), sort_keys=True, default=str) == json.dumps(
        asdict(result), sort_keys=True, default=str
    )
