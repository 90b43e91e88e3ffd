"""The vectorised trace (`rules.vectorised`) against the interpreter and `evaluate`, row by row.

Documents are generated at the edges - facts and groups missing, values at the catalogue's bounds,
ties at exactly half a fen, empty and large collections, records with missing fields - for every
reference policy and period, and for hand-written policies using what the reference pack does not.
Every row is compared on each clause, the outcome, the amount and the engine fact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rules_testkit import (
    TODAY,
    PolicyArgs,
    compile_text,
    document,
    load_text,
    policy_yaml,
    position_of,
    record,
    shipped_policies,
    stable_document,
    write_policy,
)

from rules import ast
from rules.columns import from_documents
from rules.compiler import INT64_MAX
from rules.errors import EngineDisagreementError, EngineError, EngineLimitError, VectorisedLimitError
from rules.evaluator import _engine_fact, evaluate
from rules.facts import FactsDocument, FactType, FactValue, Record
from rules.interpreter import Interpreter, ParamValue, Tiers, truth
from rules.loader import CompiledPolicy, load_policy_file
from rules.values import OUTCOME_OF_CODE
from rules.vectorised import FALSE, TRUE, UNKNOWN, ChunkTrace
from service.catalogue import CATALOGUE

CODES = {"false": FALSE, "true": TRUE, "unknown": UNKNOWN}
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG_TEXT = "长" * 1001  # over the engine's string limit


# --- the comparison -------------------------------------------------------------------------
def assert_agrees(
    compiled: CompiledPolicy, documents: Sequence[FactsDocument], today: date = TODAY, *, engine_may_wrap: bool = False
) -> ChunkTrace:
    """Run the chunk vectorised and check every row against the interpreter and `evaluate`.
    `engine_may_wrap`: values beyond the catalogue's bounds, on which durable-rules' 64-bit
    arithmetic can wrap; where `evaluate` then reports a disagreement, the interpreter alone
    is the reference (its clauses are compared all the same)."""
    assert compiled.vectorised is not None
    trace = compiled.vectorised.run(from_documents(documents, CATALOGUE), today=today)
    policy = compiled.policy
    assert trace.conditions.shape == (len(documents), len(policy.conditions))
    assert trace.payable.shape == (len(documents), len(policy.payable))
    for row, doc in enumerate(documents):
        interp = Interpreter(doc, compiled.params, period=compiled.period, today=today)
        if trace.failed[row]:  # the trace itself raises for this row (a date beyond the calendar)
            with pytest.raises((OverflowError, ValueError)):
                evaluate(compiled, doc, today=today)
            continue
        clauses = [CODES[truth(interp.evaluate(c.expr))] for c in policy.conditions]
        payable = [CODES[truth(interp.evaluate(c.expr))] for c in policy.payable]
        assert list(trace.conditions[row]) == clauses, (row, doc)
        assert list(trace.payable[row]) == payable, (row, doc)
        try:
            properties = _engine_fact(compiled, interp)
        except EngineError as exc:
            assert trace.engine_error[row], (row, doc)
            assert trace.messages[row] == str(exc)
            with pytest.raises(EngineError):
                evaluate(compiled, doc, today=today)
            continue
        assert not trace.engine_error[row], (row, trace.messages.get(row))
        for prop, column in trace.engine.items():
            assert column.python(row) == properties.get(prop), (row, prop)
        assert set(properties) <= set(trace.engine)
        try:
            result = evaluate(compiled, doc, today=today)
        except EngineDisagreementError:
            if not engine_may_wrap:
                raise
            continue
        assert (trace.outcome_name(row), int(trace.amount_fen[row])) == (result.outcome, result.amount_fen), (row, doc)
    return trace


# --- generated documents --------------------------------------------------------------------
def interesting_ints(compiled: CompiledPolicy) -> list[int]:
    """The integers a policy's clauses turn on: its constants and parameters, the period and
    the years around it (so that generated facts hit the comparisons' edges)."""
    found = {0, 1, 2, 11, 12, 16, 24, 30, 200, 1000}
    values: list[ParamValue | Decimal] = list(compiled.params.values())  # Decimal: a literal's rate
    for clause in [*compiled.policy.conditions, *compiled.policy.payable]:
        values += [n.value for n in ast.walk(clause.expr) if isinstance(n, ast.Literal)]
    for value in values:
        if isinstance(value, Tiers):
            values += [up for up, _ in value.steps if up is not None]
        elif isinstance(value, int) and not isinstance(value, bool):
            found |= {value - 1, value, value + 1}
    found |= {compiled.period + k for k in range(-3, 2)}
    return sorted(found)


def value_of(fact: FactType, ints: Sequence[int], period: int, beyond: bool) -> st.SearchStrategy[FactValue]:
    """Values of one fact type at the edges; `beyond` adds values past the catalogue's bound."""
    if fact.kind == "bool":
        return st.booleans()
    if fact.kind == "str":
        texts: list[str] = list(fact.values or ("", "x", "某某有限公司"))
        return st.one_of(st.sampled_from(texts), st.sampled_from(["", "other", LONG_TEXT]))
    if fact.kind == "date":
        edges = [
            date.min,
            date.max,
            TODAY,
            TODAY - timedelta(1),
            TODAY + timedelta(1),
            date(period, 1, 1),
            date(period, 12, 31),
            date(period - 1, 12, 31),
            date(period + 1, 1, 1),
        ]
        return st.one_of(st.sampled_from(edges), st.dates(date(period - 4, 1, 1), date(period + 2, 12, 31)))
    bound = fact.max_abs
    choices = [
        st.sampled_from([v for v in ints if abs(v) <= bound] + [bound, -bound, bound - 1]),
        st.integers(-bound, bound),
        st.integers(0, 300),
        st.integers(0, 10**6).map(lambda k: 10 * k + 5),
    ]  # x * 30% etc. end in half a fen
    if beyond:
        choices.append(st.sampled_from([bound + 1, -bound - 1, INT64_MAX, -INT64_MAX - 1]))
    return st.one_of(*choices)


def read_by(compiled: CompiledPolicy) -> tuple[list[str], list[str]]:
    """The catalogue facts and collections a policy's expressions name (what is worth generating)."""
    policy = compiled.policy
    nodes = [
        n for expr in [*(c.expr for c in [*policy.conditions, *policy.payable]), policy.amount] for n in ast.walk(expr)
    ]
    facts = sorted({n.dotted for n in nodes if isinstance(n, ast.Name) and n.dotted in CATALOGUE.facts})
    collections = sorted({n.collection for n in nodes if isinstance(n, ast.Count)})
    return facts, collections


def documents(
    compiled: CompiledPolicy, *, beyond: bool = False, max_docs: int = 6
) -> st.SearchStrategy[list[FactsDocument]]:
    """Chunks of facts documents for the policy's fact year."""
    ints = interesting_ints(compiled)
    period = compiled.period
    fact_year = compiled.policy.fact_year(period)
    fact_names, collection_names = read_by(compiled)

    def maybe(fact: FactType) -> st.SearchStrategy[FactValue | None]:
        return st.one_of(st.none(), value_of(fact, ints, period, beyond))

    def records(name: str) -> st.SearchStrategy[list[Record]]:
        fields = CATALOGUE.collections[name]
        one = st.fixed_dictionaries({field: maybe(t) for field, t in fields.items()})
        # A large collection repeats a few drawn records (cheap to generate, same edges).
        drawn = st.tuples(st.lists(one, max_size=4), st.sampled_from([1, 1, 1, 15]))
        return drawn.map(lambda d: [record(f"{name}:{i}", **fields) for i, fields in enumerate(d[0] * d[1])])

    facts = st.fixed_dictionaries({name: maybe(CATALOGUE.facts[name]) for name in fact_names})
    groups = st.sets(st.sampled_from(["enterprise", "si", "tax", "derived"]), max_size=2)  # whole groups missing
    collections = st.fixed_dictionaries({name: records(name) for name in collection_names})

    def build(parts: tuple[dict[str, FactValue | None], set[str], dict[str, list[Record]]], i: int) -> FactsDocument:
        values, missing, lists = parts
        kept = {k: v for k, v in values.items() if k.split(".", 1)[0] not in missing}
        return document(kept, collections=lists, uscc=f"E{i:05d}", fact_year=fact_year)

    one_doc = st.tuples(facts, groups, collections)
    return st.lists(one_doc, min_size=1, max_size=max_docs).map(
        lambda items: [build(parts, i) for i, parts in enumerate(items)]
    )


def reference_cases() -> list[tuple[str, int]]:
    out = []
    for policy in shipped_policies():
        years = set(policy.model.effective.listed()) | {2022, 2023, 2024, 2025, 2026}
        out += [(policy.id, year) for year in sorted(years) if policy.covers(year)]
    return out


# --- the reference pack ---------------------------------------------------------------------
@pytest.mark.parametrize(("policy_id", "period"), reference_cases())
def test_reference_policies_agree_on_generated_documents(policy_id: str, period: int) -> None:
    compiled = shipped_policies().get(policy_id).compiled(period)
    seen: list[set[int]] = [set() for _ in compiled.policy.conditions]

    @SETTINGS
    @given(documents(compiled))
    def check(docs: list[FactsDocument]) -> None:
        trace = assert_agrees(compiled, docs)
        for i, codes in enumerate(seen):
            codes.update(int(code) for code in trace.conditions[:, i])

    check()
    # The generator reaches more than one side of every condition, and the unknown side somewhere.
    assert all(len(codes) >= 2 for codes in seen), seen
    assert any(int(UNKNOWN) in codes for codes in seen)


@pytest.mark.parametrize(
    ("policy_id", "period"), [("stable-jobs-refund", 2025), ("job-expansion-subsidy", 2025), ("high-tech-reward", 2025)]
)
def test_values_beyond_the_catalogue_bounds_are_decided_by_the_interpreter(policy_id: str, period: int) -> None:
    compiled = shipped_policies().get(policy_id).compiled(period)
    assert compiled.vectorised is not None
    referred = 0

    vectorised = compiled.vectorised

    @SETTINGS
    @given(documents(compiled, beyond=True))
    def check(docs: list[FactsDocument]) -> None:
        nonlocal referred
        trace = vectorised.run(from_documents(docs, CATALOGUE), today=TODAY)
        referred += len(trace.reference_rows)
        assert_agrees(compiled, docs, engine_may_wrap=True)

    check()
    assert referred > 0


def test_an_amount_beyond_int64_fails_its_row_in_the_trace_and_in_evaluate_alike() -> None:
    # only facts beyond the catalogue's bounds reach it: (INT64_MAX - INT64_MIN) * 60 %
    compiled = shipped_policies().get("stable-jobs-refund").compiled(2025)
    doc = stable_document(
        {
            "si.ui_premium_paid_fen": INT64_MAX,
            "si.ui_back_payment_fen": 0,
            "si.ui_late_fee_fen": -INT64_MAX - 1,
            "enterprise.org_type": "law_firm",
        }
    )
    trace = assert_agrees(compiled, [doc], engine_may_wrap=True)
    assert trace.failed[0] and "beyond int64" in trace.messages[0]
    with pytest.raises(OverflowError, match="beyond int64"):
        evaluate(compiled, doc, today=TODAY)


def test_a_count_beyond_its_bound_is_decided_by_the_interpreter_where_the_engine_wraps() -> None:
    # ratio(claimants, avg) <= 5.5% is claimants * 200 <= avg * 11 in the engine: INT64_MAX * 200
    # wraps there; the trace (and the interpreter) keep it exact.
    compiled = shipped_policies().get("stable-jobs-refund").compiled(2025)
    doc = document({"si.insured_avg_monthly": 1, "si.ui_benefit_claimants": INT64_MAX}, fact_year=2024)
    trace = assert_agrees(compiled, [doc], engine_may_wrap=True)
    layoff = [c.id for c in compiled.policy.conditions].index("layoff-rate")
    assert trace.conditions[0, layoff] == FALSE
    assert list(trace.reference_rows) == [0]


def test_a_stable_jobs_tie_at_half_a_fen_rounds_up() -> None:
    compiled = shipped_policies().get("stable-jobs-refund").compiled(2025)
    base: dict[str, FactValue] = {
        "enterprise.status": "active",
        "enterprise.org_type": "enterprise",
        "enterprise.labor_dispatch": False,
        "enterprise.has_bank_account": True,
        "si.ui_months_paid": 12,
        "si.ui_arrears": False,
        "si.ui_benefit_claimants": 11,
        "si.insured_avg_monthly": 200,
        "si.insured_start": 200,
        "derived.size_class": "large",
        "si.ui_back_payment_fen": 0,
        "si.ui_late_fee_fen": 0,
    }
    premiums = [123_456_715, 5, 15, 10**15]
    docs = [document({**base, "si.ui_premium_paid_fen": p}, fact_year=2024) for p in premiums]
    trace = assert_agrees(compiled, docs)
    rate = compiled.params["large_rate"]
    assert isinstance(rate, Fraction)
    exact = [p * rate for p in premiums]
    assert any(x - int(x) == Fraction(1, 2) for x in exact)  # the ties are there
    assert [trace.outcome_name(r) for r in range(len(docs))] == ["ELIGIBLE"] * len(docs)
    assert list(trace.amount_fen) == [int(x) + (x - int(x) >= Fraction(1, 2)) for x in exact]


# --- hand-written policies for what the reference pack does not use ---------------------------
# Conditions go through the engine compiler too, which keeps fractions and division out of them:
# decimal arithmetic is exercised in the amount formulas (the trace alone computes those).
HAND_WRITTEN: dict[str, PolicyArgs] = {
    "min-max": dict(
        conditions=["min(si.layoffs, si.insured_start) <= 10", "max(si.ui_benefit_claimants, si.layoffs) > 2"],
        amount="max(si.ui_premium_paid_fen * 30% - si.ui_late_fee_fen, min(si.ui_back_payment_fen, 10元))\n"
        "+ min(si.layoffs * 2.5, max(si.insured_start, 0.5))",
    ),
    "division": dict(
        conditions=["si.ui_premium_paid_fen >= 0"],
        amount="si.ui_premium_paid_fen / si.insured_avg_monthly\n"
        "+ (if si.layoffs / (si.insured_start - si.insured_end) < 3 then 1 else 0)",
    ),
    "dates": dict(
        conditions=[
            "today - enterprise.established_on >= 365",
            "enterprise.established_on + si.ui_months_paid <= today",
            'enterprise.established_on - 30 > date("2020-01-01")',
            "year(enterprise.established_on + 400) <= fact_year",
        ],
        amount="(today - enterprise.established_on) * 100",
    ),
    "conditional": dict(
        conditions=[
            "(if si.ui_arrears then si.layoffs else si.insured_start) >= 3",
            "if enterprise.labor_dispatch then si.layoffs == 0 else si.layoffs < 5",
            "(if si.ui_arrears then 2 else 2) == 2",
            "(if si.ui_arrears then si.layoffs else 2) > 1",
        ],
        amount="si.ui_premium_paid_fen * (if si.ui_arrears then 20% else 0.2)\n"
        "+ (if enterprise.labor_dispatch then 1.5 else si.layoffs)",
    ),
    "membership": dict(
        conditions=[
            "si.layoffs in [si.insured_start, si.insured_end, 3]",
            'enterprise.status not in ["revoked", enterprise.name]',
        ],
        amount="if si.ui_benefit_claimants * 50% in [1, 1.5, si.layoffs] then 1元 else 2元",
    ),
    "presence": dict(
        conditions=[
            "si.layoffs is missing or tax.credit_rating is present",
            "count(h in hires where h.graduation_year is missing) <= 2",
            "not (derived.size_class is missing)",
        ],
        amount="count(h in hires where h.age is present and h.age < 35) * 1000元",
    ),
    "tiers": dict(
        conditions=["tier(tax.revenue_fen, params.awards) > 5万元", 'tax.credit_rating != "D"'],
        parameters=(
            "rates:\n  description: 费率\n  value:\n    - up_to: 100万元\n      value: 5%\n"
            "    - up_to: 1000万元\n      value: 3.5%\n    - up_to: null\n      value: 1%\n"
            "awards:\n  description: 奖励\n  value:\n    - up_to: 0元\n      value: 1元\n"
            "    - up_to: 500万元\n      value: 10万元\n    - up_to: null\n      value: 20万元\n"
        ),
        amount="tax.revenue_fen * tier(tax.revenue_fen, params.rates)\n+ tier(tax.rd_expense_fen, params.awards)",
    ),
    "round-down": dict(conditions=["si.layoffs >= 0"], amount="si.ui_premium_paid_fen * 33.5%", rounding="down"),
    "negative": dict(
        conditions=["si.layoffs >= 0"],
        amount="si.ui_premium_paid_fen * 30% - si.ui_back_payment_fen - si.ui_late_fee_fen / 3",
    ),
    "cap": dict(
        conditions=["si.layoffs >= 0"],
        payable=["enterprise.has_bank_account"],
        amount="si.ui_premium_paid_fen * 1.5 - 0.5",
        cap="500万元",
    ),
    "nested-count": dict(
        conditions=[
            "count(h in hires where count(q in qualifications where q.first_time) > h.age - 30) >= 1",
            "count(c in credit_listings) == 0",
        ],
        amount="count(h in hires where h.year == period and count(h in hires) > 2) * 1元",
    ),
    "definitions": dict(
        conditions=[
            "young >= 1 or staff > 30",
            "count(h in hires where h.age >= min_age) >= 1",
            "share <= 20%",
            "(if arrears then staff else young) < 3",
        ],
        payable=["not arrears"],
        amount="young * 1500元 + staff * rate",
        definitions={
            "young": "count(h in hires where h.age <= 24 and h.age >= min_age)",
            "min_age": "16",
            "staff": "si.insured_start",
            "arrears": "si.ui_arrears",
            "share": "ratio(young, staff)",
            "rate": "if arrears then 5% else 12.5%",
        },
    ),
    "logic": dict(
        conditions=[
            "not (si.ui_arrears and enterprise.labor_dispatch) or si.layoffs > 1",
            "true",
            "enterprise.has_bank_account or false",
        ],
        amount="if si.ui_arrears or si.layoffs > 3 then 1元 else 2元",
    ),
}


def hand_written_text(name: str) -> str:
    args: PolicyArgs = {**HAND_WRITTEN[name], "policy_id": "demo"}
    return policy_yaml(**args)


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_hand_written_policies_agree_on_generated_documents(name: str, tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, hand_written_text(name))

    @SETTINGS
    @given(documents(compiled))
    def check(docs: list[FactsDocument]) -> None:
        assert_agrees(compiled, docs)

    check()


def stable_like(values: Mapping[str, FactValue]) -> FactsDocument:
    return document(values, fact_year=2024)


def test_division_by_zero_is_unknown(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, hand_written_text("division"))
    values = {"si.ui_premium_paid_fen": 100, "si.layoffs": 1}
    docs = [
        stable_like({**values, "si.insured_avg_monthly": 0, "si.insured_start": 3, "si.insured_end": 1}),
        stable_like({**values, "si.insured_avg_monthly": 3, "si.insured_start": 1, "si.insured_end": 1}),
        stable_like({**values, "si.insured_avg_monthly": 3, "si.insured_start": 3, "si.insured_end": 1}),
    ]
    trace = assert_agrees(compiled, docs)
    # 100 / 0 and a zero divisor in the condition both leave the amount unknown
    assert [trace.outcome_name(r) for r in range(3)] == ["UNDETERMINED", "UNDETERMINED", "ELIGIBLE"]
    assert trace.amount_fen[2] == 34  # 100 / 3 + 1, half up


def test_conditional_with_unknown_condition_needs_agreeing_branches(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, hand_written_text("conditional"))
    agree = stable_like({"si.layoffs": 4, "si.insured_start": 4})  # si.ui_arrears missing
    differ = stable_like({"si.layoffs": 4, "si.insured_start": 1})
    trace = assert_agrees(compiled, [agree, differ])
    assert trace.conditions[0, 0] == TRUE and trace.conditions[1, 0] == UNKNOWN
    assert trace.conditions[0, 2] == TRUE  # 2 either way


def test_membership_with_unknown_options(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, hand_written_text("membership"))
    found = stable_like({"si.layoffs": 3, "enterprise.status": "active", "si.ui_benefit_claimants": 3})
    unsure = stable_like({"si.layoffs": 4, "si.insured_end": 5, "enterprise.status": "active"})
    trace = assert_agrees(compiled, [found, unsure])
    assert list(trace.conditions[0]) == [TRUE, UNKNOWN]  # name missing: "active" may be it
    assert trace.conditions[1, 0] == UNKNOWN  # insured_start missing and 4 is not 3


def test_rounding_down_and_half_up_differ_on_the_same_amount(tmp_path: Path) -> None:
    up = compile_text(tmp_path, policy_yaml(["si.layoffs >= 0"], amount="si.ui_premium_paid_fen * 33.5%"))
    folder = tmp_path / "down"
    folder.mkdir()
    down = compile_text(folder, hand_written_text("round-down"))
    docs = [stable_like({"si.layoffs": 0, "si.ui_premium_paid_fen": p}) for p in (2, 10, 1, -7)]
    up_trace, down_trace = assert_agrees(up, docs), assert_agrees(down, docs)
    exact = [p * Fraction(335, 1000) for p in (2, 10, 1, -7)]
    assert list(down_trace.amount_fen) == [max(0, int(x)) for x in exact]
    assert list(up_trace.amount_fen) == [max(0, int(x) + (x - int(x) >= Fraction(1, 2))) for x in exact]
    assert list(up_trace.amount_fen) != list(down_trace.amount_fen)


def test_negative_amount_pays_nothing_and_cap_applies(tmp_path: Path) -> None:
    negative = compile_text(tmp_path, hand_written_text("negative"))
    trace = assert_agrees(
        negative,
        [
            stable_like(
                {"si.layoffs": 0, "si.ui_premium_paid_fen": 10, "si.ui_back_payment_fen": 10, "si.ui_late_fee_fen": 0}
            )
        ],
    )
    assert trace.outcome_name(0) == "ELIGIBLE" and trace.amount_fen[0] == 0
    folder = tmp_path / "cap"
    folder.mkdir()
    capped = compile_text(folder, hand_written_text("cap"))
    docs = [
        stable_like({"si.layoffs": 0, "si.ui_premium_paid_fen": p, "enterprise.has_bank_account": bank})
        for p, bank in ((10**15, True), (10**15, False), (100, True))
    ]
    trace = assert_agrees(capped, docs)
    assert capped.policy.cap_fen is not None
    assert list(trace.amount_fen) == [capped.policy.cap_fen, capped.policy.cap_fen, 150]
    assert [trace.outcome_name(r) for r in range(3)] == ["ELIGIBLE", "HELD", "ELIGIBLE"]


def test_engine_errors_are_flagged_per_row_with_the_engine_message() -> None:
    compiled = shipped_policies().get("high-tech-reward").compiled(2025)
    docs = [
        document({"tax.credit_rating": LONG_TEXT}, fact_year=2024),
        document({"tax.credit_rating": "A"}, fact_year=2024),
    ]
    trace = assert_agrees(compiled, docs)
    assert list(trace.engine_error) == [True, False]
    assert "string too long" in trace.messages[0]


def test_a_term_beyond_int64_is_an_engine_error_of_that_row(tmp_path: Path) -> None:
    # Only values beyond the catalogue's bounds get there: such rows are decided by the interpreter.
    compiled = compile_text(
        tmp_path, policy_yaml(["(if si.ui_arrears then si.ui_premium_paid_fen + si.ui_back_payment_fen else 0) > 5"])
    )
    huge = {"si.ui_arrears": True, "si.ui_premium_paid_fen": INT64_MAX, "si.ui_back_payment_fen": INT64_MAX}
    docs = [stable_like(huge), stable_like({**huge, "si.ui_back_payment_fen": -5})]
    trace = assert_agrees(compiled, docs)
    assert list(trace.engine_error) == [True, False]
    assert "64-bit" in trace.messages[0]
    assert sorted(trace.reference_rows) == [0, 1]


def test_a_date_beyond_the_calendar_fails_that_row_only(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, hand_written_text("dates"))
    docs = [
        stable_like({"enterprise.established_on": date(9999, 12, 1), "si.ui_months_paid": 600}),
        stable_like({"enterprise.established_on": date(2020, 5, 1), "si.ui_months_paid": 12}),
    ]
    trace = assert_agrees(compiled, docs)
    assert list(trace.failed) == [True, False]
    assert trace.outcome_name(1) == "ELIGIBLE"


def test_records_with_missing_fields_make_a_count_unknown(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, hand_written_text("presence"))
    hires = [record("h1", "human_resources", age=20), record("h2", "human_resources", age=None)]
    docs = [
        document({"si.layoffs": 1, "derived.size_class": "small"}, collections={"hires": hires}, fact_year=2024),
        document({}, collections={"hires": []}, fact_year=2024),
    ]
    trace = assert_agrees(compiled, docs)
    assert trace.conditions[0, 1] == TRUE and trace.conditions[1, 2] == FALSE


def test_an_empty_chunk() -> None:
    compiled = shipped_policies().get("stable-jobs-refund").compiled(2025)
    assert compiled.vectorised is not None
    trace = compiled.vectorised.run(from_documents([], CATALOGUE), today=TODAY)
    assert trace.outcome.shape == (0,) and trace.conditions.shape == (0, len(compiled.policy.conditions))


def test_outcome_codes_index_the_evaluator_outcomes() -> None:
    assert OUTCOME_OF_CODE == ("ELIGIBLE", "INELIGIBLE", "UNDETERMINED", "HELD")
    assert (int(FALSE), int(TRUE), int(UNKNOWN)) == (0, 1, 2)
    trace = assert_agrees(shipped_policies().get("stable-jobs-refund").compiled(2025), [document({}, fact_year=2024)])
    assert trace.outcome.dtype == np.int8 and trace.amount_fen.dtype == np.int64


# --- refused at load ------------------------------------------------------------------------
def test_arithmetic_that_could_pass_int64_is_refused_at_load_naming_its_line(tmp_path: Path) -> None:
    formula = "si.ui_premium_paid_fen * si.ui_back_payment_fen * 30%"
    text = policy_yaml(["si.layoffs >= 0"], amount=formula)
    path = write_policy(tmp_path, text)
    with pytest.raises(VectorisedLimitError) as caught:
        load_policy_file(path, CATALOGUE, require_tests=False)
    line, _ = position_of(text, formula)
    assert caught.value.file == str(path) and caught.value.line == line
    assert isinstance(caught.value, EngineLimitError)
    assert f"{path}:{line}" in str(caught.value)


def test_a_count_reading_the_enclosing_record_is_refused_at_load(tmp_path: Path) -> None:
    expr = "count(h in hires where count(q in qualifications where year(q.granted_on) == h.year) > 0) >= 1"
    text = policy_yaml([expr])
    with pytest.raises(VectorisedLimitError) as caught:
        load_text(tmp_path, text)
    line, column = position_of(text, "count(q in")
    assert (caught.value.line, caught.value.column) == (line, column)
    assert "enclosing record" in caught.value.reason


def test_every_loaded_period_carries_its_vectorised_trace() -> None:
    for policy in shipped_policies():
        for period in policy.model.effective.listed():
            assert policy.compiled(period).vectorised is not None
