"""Named definitions (`definitions:`, rules.definitions): errors naming file and line, the same
decisions as the expressions written out, each term's value in the trace, and the reference
pack's new versions deciding as the stored texts they replace."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from rules_testkit import (
    POLICIES_DIR,
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
)

from rules import ast
from rules.columns import from_documents
from rules.errors import ExpressionSyntaxError, ExpressionTypeError, PolicyFileError, PolicySchemaError
from rules.evaluator import evaluate
from rules.facts import FactValue, Record
from rules.interpreter import Interpreter, Reads
from rules.loader import load_policy_text
from service.audit.decision import mask_of
from service.catalogue import CATALOGUE
from service.explain import as_text
from service.policy_tests import load_cases, run_case

STORED = Path(__file__).with_name("stored_policies")


def refused(tmp_path: Path, text: str, error: type[PolicyFileError]) -> PolicyFileError:
    with pytest.raises(error) as info:
        load_text(tmp_path, text)
    assert info.value.file.endswith("demo.yaml")
    return info.value


# --- errors, with file and line ------------------------------------------------------------------
def test_an_unknown_name_in_a_condition_is_refused_where_it_is_written(tmp_path: Path) -> None:
    text = policy_yaml(["layoff_count >= 1", "layof_count >= 2"], definitions={"layoff_count": "si.layoffs"})
    error = refused(tmp_path, text, ExpressionTypeError)
    assert (error.line, error.column) == position_of(text, "layof_count >= 2")
    assert "unknown name 'layof_count'" in error.reason
    assert "did you mean 'layoff_count'?" in error.reason


def test_an_unknown_name_inside_a_definition_is_refused_on_its_line(tmp_path: Path) -> None:
    text = policy_yaml(["big"], definitions={"big": "si.layoffs > 1\nand hugeness"})
    error = refused(tmp_path, text, ExpressionTypeError)
    assert (error.line, error.column) == position_of(text, "hugeness")
    assert "unknown name 'hugeness'" in error.reason


@pytest.mark.parametrize(
    ("definitions", "closing", "cycle"),
    [
        ({"a": "b + 1", "b": "c * 2", "c": "a - 1"}, "a - 1", "a -> b -> c -> a"),
        ({"a": "a + 1"}, "a + 1", "a -> a"),
        ({"x": "si.layoffs", "a": "b + x", "b": "a"}, "a\n", "a -> b -> a"),
    ],
)
def test_a_cycle_is_refused_at_the_use_that_closes_it(
    tmp_path: Path, definitions: dict[str, str], closing: str, cycle: str
) -> None:
    text = policy_yaml(["a > 1"], definitions=definitions)
    error = refused(tmp_path, text, ExpressionTypeError)
    # each definition's expression starts its own line, indented by 6
    assert (error.line, error.column) == (position_of(text, "      " + closing)[0], 7)
    assert cycle in error.reason


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("si", "the group of facts"),
        ("enterprise", "the group of facts"),
        ("hires", "a collection"),
        ("period", "a value of the evaluation"),
        ("today", "a value of the evaluation"),
        ("ratio", "a function"),
        ("tier", "a function"),
        ("count", "a word of the expression language"),
        ("missing", "a word of the expression language"),
        ("params", "the prefix of parameters"),
    ],
)
def test_a_name_the_language_already_gives_a_meaning_is_refused_on_its_line(
    tmp_path: Path, name: str, what: str
) -> None:
    text = policy_yaml(["si.layoffs >= 0"], definitions={"fine": "1", name: "si.layoffs"})
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.line == position_of(text, f"  {name}:")[0]
    assert (error.field, what in error.reason) == (f"definitions.{name}", True), error.reason


@pytest.mark.parametrize("name", ["Hires2", "2nd", "with-dash"])
def test_a_definition_name_is_lower_case_letters_digits_and_underscores(tmp_path: Path, name: str) -> None:
    text = policy_yaml(["si.layoffs >= 0"], definitions={name: "si.layoffs"})
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.line == position_of(text, f"  {name}:")[0]


def test_a_type_error_inside_a_definition_is_refused_on_its_line(tmp_path: Path) -> None:
    text = policy_yaml(["mixed > 1"], definitions={"ok": "si.layoffs", "mixed": "ok\n+ enterprise.status"})
    error = refused(tmp_path, text, ExpressionTypeError)
    assert (error.line, error.column) == position_of(text, "ok\n      +")
    assert "'+' needs numbers, got int and str" in error.reason


def test_a_definition_of_the_wrong_type_for_its_use_is_refused_at_the_use(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs >= 0", "staff and true"], definitions={"staff": "si.insured_start"})
    error = refused(tmp_path, text, ExpressionTypeError)
    assert (error.line, error.column) == position_of(text, "staff and true")
    assert "'and' needs true/false values, got int" in error.reason


def test_a_condition_that_is_a_number_definition_is_refused(tmp_path: Path) -> None:
    text = policy_yaml(["staff"], definitions={"staff": "si.insured_start"})
    error = refused(tmp_path, text, ExpressionTypeError)
    assert "a condition must be true/false, got int" in error.reason


def test_a_tier_table_cannot_be_named(tmp_path: Path) -> None:
    parameters = (
        "awards:\n  description: 奖励\n  value:\n    - up_to: 500万元\n      value: 10万元\n"
        "    - up_to: null\n      value: 20万元\n"
    )
    text = policy_yaml(
        ["tier(tax.revenue_fen, table) > 1"], parameters=parameters, definitions={"table": "params.awards"}
    )
    error = refused(tmp_path, text, ExpressionTypeError)
    assert (error.line, error.column) == position_of(text, "params.awards")
    assert "tier table is used only as tier(amount, params.<table>)" in error.reason


def test_a_syntax_error_inside_a_definition_names_its_line(tmp_path: Path) -> None:
    text = policy_yaml(["x > 1"], definitions={"x": "si.layoffs\n+ * 2"})
    error = refused(tmp_path, text, ExpressionSyntaxError)
    assert error.line == position_of(text, "+ * 2")[0]


def test_a_count_variable_with_a_definition_s_name_is_refused(tmp_path: Path) -> None:
    text = policy_yaml(["count(h in hires where h.age > 30) >= h"], definitions={"h": "2"})
    error = refused(tmp_path, text, ExpressionTypeError)
    assert (error.line, error.column) == position_of(text, "count(h")
    assert "count variable 'h' is also the name of a definition" in error.reason


def test_an_unknown_key_in_a_definition_is_refused(tmp_path: Path) -> None:
    text = policy_yaml(["x > 1"], definitions={"x": "si.layoffs"}).replace(
        "    text: 名称x\n", "    text: 名称x\n    label: 多余\n"
    )
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.line == position_of(text, "label:")[0]


# --- resolution and types -----------------------------------------------------------------------
def test_definitions_may_use_later_definitions_and_every_use_has_the_definition_s_type(tmp_path: Path) -> None:
    text = policy_yaml(
        ["share > 5% and young >= 1"],
        amount="young * rate_of_pay",
        definitions={
            "share": "ratio(young, si.insured_start)",
            "young": "count(h in hires where h.age <= 24)",
            "rate_of_pay": "1500元 * 10%",
        },
    )
    policy = load_text(tmp_path, text)
    assert list(policy.definitions) == ["share", "young", "rate_of_pay"]  # file order
    assert {n: d.kind for n, d in policy.definitions.items()} == {
        "share": "ratio",
        "young": "int",
        "rate_of_pay": "decimal",
    }
    share = policy.definitions["share"].expr
    assert isinstance(share, ast.Call) and isinstance(share.args[0], ast.Ref)
    assert share.args[0].expr == policy.definitions["young"].expr
    refs = [n for n in ast.walk(policy.conditions[0].expr) if isinstance(n, ast.Ref)]
    assert [r.name for r in refs] == ["share", "young", "young"]  # `share` holds its own use of young


def test_inline_writes_every_definition_out() -> None:
    young = ast.Count("h", "hires", None, ast.Pos(1, 1))
    share = ast.Call("ratio", (ast.Ref("young", young, ast.Pos(2, 1)), ast.Literal(3, ast.Pos(2, 9))), ast.Pos(2, 1))
    tree = ast.Binary(">", ast.Ref("share", share, ast.Pos(3, 1)), ast.Literal(1, ast.Pos(3, 9)), ast.Pos(3, 1))
    inlined = ast.inline(tree)
    assert not any(isinstance(n, ast.Ref) for n in ast.walk(inlined))
    assert inlined == ast.Binary(
        ">",
        ast.Call("ratio", (young, ast.Literal(3, ast.Pos(0, 0))), ast.Pos(0, 0)),
        ast.Literal(1, ast.Pos(0, 0)),
        ast.Pos(0, 0),
    )


# --- the same decisions as written out ----------------------------------------------------------
NAMED: PolicyArgs = dict(
    conditions=[
        "young >= 1 and staff > 0",
        "share <= 20% or staff <= 10",
        "count(h in hires where h.age >= min_age) >= 1",
    ],
    payable=["not arrears"],
    amount="young * 1500元 + (if arrears then 0 else staff * 10%)",
    definitions={
        "young": "count(h in hires where h.age <= 24 and h.age >= min_age)",
        "min_age": "16",
        "staff": "si.insured_start",
        "arrears": "si.ui_arrears",
        "share": "ratio(young, staff)",
    },
)
WRITTEN_OUT: PolicyArgs = dict(
    conditions=[
        "count(h in hires where h.age <= 24 and h.age >= 16) >= 1 and si.insured_start > 0",
        "ratio(count(h in hires where h.age <= 24 and h.age >= 16), si.insured_start) <= 20% or si.insured_start <= 10",
        "count(h in hires where h.age >= 16) >= 1",
    ],
    payable=["not si.ui_arrears"],
    amount="count(h in hires where h.age <= 24 and h.age >= 16) * 1500元\n"
    "+ (if si.ui_arrears then 0 else si.insured_start * 10%)",
)


def hires(*ages: int | None) -> list[Record]:
    return [record(f"hire:{i}", "human_resources", age=age) for i, age in enumerate(ages)]


CASES: list[dict[str, FactValue | None]] = [
    {"si.insured_start": 8, "si.ui_arrears": False},
    {"si.insured_start": 40, "si.ui_arrears": False},
    {"si.insured_start": 40, "si.ui_arrears": True},
    {"si.insured_start": None, "si.ui_arrears": None},
    {"si.insured_start": 0, "si.ui_arrears": False},
]
AGES = [(), (20,), (20, 22, 30), (15, 20), (None, 20), (20,) * 9]


def test_a_policy_with_definitions_decides_and_compiles_as_the_one_written_out(tmp_path: Path) -> None:
    (tmp_path / "named").mkdir()
    (tmp_path / "written").mkdir()
    named = compile_text(tmp_path / "named", policy_yaml(**NAMED))
    written = compile_text(tmp_path / "written", policy_yaml(**WRITTEN_OUT))
    # The engine sees the same ruleset: definitions are inlined before lowering.
    assert named.definition == written.definition
    assert named.layout.fields == written.layout.fields
    outcomes = set()
    for values in CASES:
        for ages in AGES:
            doc = document(values, collections={"hires": hires(*ages)})
            a, b = evaluate(named, doc, today=TODAY), evaluate(written, doc, today=TODAY)
            outcomes.add(a.outcome)
            assert (a.outcome, a.amount_fen, mask_of(a.conditions, a.payable), a.missing, a.held) == (
                b.outcome,
                b.amount_fen,
                mask_of(b.conditions, b.payable),
                b.missing,
                b.held,
            ), (values, ages)
            for x, y in zip([*a.conditions, *a.payable], [*b.conditions, *b.payable]):
                assert (x.reads, x.collections) == (y.reads, y.collections)
    assert outcomes == {"ELIGIBLE", "INELIGIBLE", "UNDETERMINED", "HELD"}


# --- the trace ----------------------------------------------------------------------------------
def test_the_trace_shows_each_named_term_a_clause_used_with_its_value(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, policy_yaml(**NAMED))
    doc = document({"si.insured_start": 40, "si.ui_arrears": False}, collections={"hires": hires(20, 22, 30)})
    result = evaluate(compiled, doc, today=TODAY)
    terms = [[(t.name, t.text, t.value) for t in c.terms] for c in [*result.conditions, *result.payable]]
    assert terms == [
        [("min_age", "名称min_age", 16), ("young", "名称young", 2), ("staff", "名称staff", 40)],
        [
            ("min_age", "名称min_age", 16),
            ("young", "名称young", 2),
            ("staff", "名称staff", 40),
            ("share", "名称share", "0.05"),
        ],  # what a term uses comes before it
        [("min_age", "名称min_age", 16)],
        [("arrears", "名称arrears", False)],
    ]
    # What a definition read is read by the clause using it.
    assert [r.name for r in result.conditions[0].reads] == ["si.insured_start"]
    assert [(c.name, c.records, len(c.matched)) for c in result.conditions[0].collections] == [("hires", 3, 2)]
    assert result.amount is not None
    assert [(t.name, t.value) for t in result.amount.terms] == [
        ("min_age", 16),
        ("young", 2),
        ("arrears", False),
        ("staff", 40),
    ]
    assert result.amount_fen == 2 * 150_000 + 4
    text = as_text(result, "演示政策")
    assert "名称young（young）= 2" in text and "名称share（share）= 0.05" in text


def test_a_term_that_cannot_be_known_shows_no_value(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, policy_yaml(**NAMED))
    doc = document({"si.insured_start": 5, "si.ui_arrears": None}, collections={"hires": hires(None, 20)})
    result = evaluate(compiled, doc, today=TODAY)
    by_name = {t.name: t.value for c in result.conditions for t in c.terms}
    assert by_name["young"] is None and by_name["share"] is None and by_name["staff"] == 5
    assert result.outcome == "UNDETERMINED"
    assert "名称young（young）= 无法确定" in as_text(result, "演示政策")


def test_a_definition_is_evaluated_once_per_evaluation(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, policy_yaml(**NAMED))
    interp = Interpreter(
        document({"si.insured_start": 40}, collections={"hires": hires(20)}), compiled.params, period=2025, today=TODAY
    )
    young = next(n for n in ast.walk(compiled.policy.conditions[0].expr) if isinstance(n, ast.Ref))
    first = interp.term(young)
    interp.evaluate(compiled.policy.conditions[1].expr, Reads())
    assert interp.term(young) is first  # the cached value and reads, not a second count


# --- the reference pack -------------------------------------------------------------------------
def test_the_reference_pack_uses_definitions_where_it_wrote_an_expression_twice() -> None:
    policies = shipped_policies()
    assert set(policies.get("job-expansion-subsidy").definitions) == {"qualifying_hires"}
    assert set(policies.get("stable-jobs-refund").definitions) == {"layoff_rate", "refunded_at_sme_rate"}
    for policy in policies:
        for name in policy.definitions:
            uses = [
                n
                for expr in [*(c.expr for c in [*policy.conditions, *policy.payable]), policy.amount]
                for n in ast.walk(expr)
                if isinstance(n, ast.Ref) and n.name == name
            ]
            assert len(uses) >= 2, (policy.id, name)


@pytest.mark.parametrize("policy_id", ["job-expansion-subsidy", "stable-jobs-refund"])
def test_the_new_version_decides_every_case_as_the_stored_text_it_replaces(policy_id: str) -> None:
    new = shipped_policies().get(policy_id)
    stored = STORED / f"{policy_id}@2025.1.yaml"
    old = load_policy_text(stored.read_bytes(), CATALOGUE, origin=str(stored))  # as replay loads it
    assert (old.version, new.version) == ("2025.1", "2025.2")
    assert old.definitions == {} and old.sha256 != new.sha256
    old.test_file = new.test_file = str(POLICIES_DIR / f"{policy_id}.test.yaml")
    cases = load_cases(new)
    assert cases
    for case in cases:
        a, b = run_case(old, case), run_case(new, case)
        assert a.passed and b.passed, (case.name, a.problems, b.problems)
        assert a.evaluation is not None and b.evaluation is not None
        assert (
            a.evaluation.outcome,
            a.evaluation.amount_fen,
            mask_of(a.evaluation.conditions, a.evaluation.payable),
            a.evaluation.missing,
            a.evaluation.held,
        ) == (
            b.evaluation.outcome,
            b.evaluation.amount_fen,
            mask_of(b.evaluation.conditions, b.evaluation.payable),
            b.evaluation.missing,
            b.evaluation.held,
        ), case.name


def test_stable_jobs_shows_its_layoff_rate() -> None:
    compiled = shipped_policies().get("stable-jobs-refund").compiled(2025)
    result = evaluate(
        compiled, stable_document({"si.ui_benefit_claimants": 11, "si.insured_avg_monthly": 200}), today=TODAY
    )
    layoff = next(c for c in result.conditions if c.id == "layoff-rate")
    assert [(t.name, t.value) for t in layoff.terms] == [("layoff_rate", "0.055")]
    assert layoff.result == "true"


def test_the_vectorised_trace_computes_a_definition_once_per_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = compile_text(
        tmp_path,
        policy_yaml(
            ["young >= 1", "young <= 5 or young == 9"],
            amount="young * 1元",
            definitions={"young": "count(h in hires where h.age <= 24)"},
        ),
    )
    assert compiled.vectorised is not None
    docs = [document({}, collections={"hires": hires(*ages)}) for ages in AGES]
    bincount = mock.Mock(wraps=np.bincount)  # counts the calls, computes as np.bincount
    monkeypatch.setattr(np, "bincount", bincount)
    trace = compiled.vectorised.run(from_documents(docs, CATALOGUE), today=TODAY)
    # one count with a filter: records per owner, matched, unsure - for the whole chunk, once,
    # though four clauses/formulas and the engine fact's term use it
    assert bincount.call_count == 3
    assert list(trace.amount_fen) == [evaluate(compiled, doc, today=TODAY).amount_fen for doc in docs]
