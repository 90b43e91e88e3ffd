"""rules.loader / schema / yaml_source: strict policy files, errors naming file and line, reloads."""

from __future__ import annotations

import hashlib
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from rules_testkit import (
    POLICIES_DIR,
    STABLE_JOBS_FILE,
    TODAY,
    document,
    load_text,
    policy_yaml,
    position_of,
    shipped_policies,
    stable_document,
    stable_jobs,
    write_policy,
)

from rules.errors import (
    ExpressionSyntaxError,
    ExpressionTypeError,
    MissingPolicyTestsError,
    PeriodNotCoveredError,
    PolicyFileError,
    PolicyNotFoundError,
    PolicySchemaError,
    PolicySyntaxError,
)
from rules.evaluator import evaluate
from rules.loader import PolicyStore, load_policy_dir, load_policy_file, policy_files
from rules.values import Outcome
from service.catalogue import CATALOGUE

BASE = policy_yaml(["si.layoffs > 1"])


def refused(tmp_path: Path, text: str, kind: type[PolicyFileError] = PolicyFileError) -> PolicyFileError:
    with pytest.raises(kind) as info:
        load_text(tmp_path, text)
    assert info.value.file == str(tmp_path / "demo.yaml")
    return info.value


def insert_after(text: str, anchor: str, addition: str) -> str:
    assert text.count(anchor) == 1, anchor
    return text.replace(anchor, anchor + addition)


def test_minimal_policy_loads(tmp_path: Path) -> None:
    policy = load_text(tmp_path, BASE)
    assert policy.id == "demo"
    assert [c.id for c in policy.conditions] == ["c0"]
    assert policy.test_file is None


# --- unknown, missing and duplicate keys ---------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "addition", "key", "field"),
    [
        ("fact_year: previous\n", "foo: 1\n", "foo:", "foo"),
        ("    citation: 第0条\n", "    bogus: x\n", "bogus:", "conditions.0.bogus"),
        ("  last_period: 2025\n", "  lastperiod: 2026\n", "lastperiod:", "effective.lastperiod"),
        ("    title: 演示文件\n", "    url2: x\n", "url2:", "legal_basis.0.url2"),
        ("  text: 金额\n", "  roundng: down\n", "roundng:", "amount.roundng"),
    ],
)
def test_unknown_key_is_refused_on_its_line(tmp_path: Path, anchor: str, addition: str, key: str, field: str) -> None:
    text = insert_after(BASE, anchor, addition)
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.line == position_of(text, key)[0]
    assert error.field == field
    assert "unknown key" in error.reason
    assert f"demo.yaml:{error.line}:" in str(error)


def test_unknown_key_at_the_end_of_amount(tmp_path: Path) -> None:
    text = BASE + "  bogus: 1\n"
    error = refused(tmp_path, text, PolicySchemaError)
    assert (error.field, error.line) == ("amount.bogus", position_of(text, "bogus:")[0])


def test_unknown_key_in_a_parameter_and_in_payable(tmp_path: Path) -> None:
    text = policy_yaml(
        ["si.layoffs > params.n"],
        payable=["enterprise.has_bank_account"],
        parameters="n:\n  description: 人数\n  value: 5\n  unit: 人\n",
    )
    error = refused(tmp_path, text, PolicySchemaError)
    assert (error.field, error.line) == ("parameters.n.unit", position_of(text, "unit:")[0])
    text = insert_after(
        policy_yaml(["si.layoffs > 1"], payable=["enterprise.has_bank_account"]),
        "    expr: |\n      enterprise.has_bank_account\n",
        "    note: x\n",
    )
    error = refused(tmp_path, text, PolicySchemaError)
    assert (error.field, error.line) == ("payable.0.note", position_of(text, "note:")[0])


def test_unknown_key_holding_a_block_is_refused_on_the_key_line(tmp_path: Path) -> None:
    text = insert_after(BASE, "fact_year: previous\n", "extras:\n  a: 1\n  b: 2\n")
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.line == position_of(text, "extras:")[0]


@pytest.mark.parametrize(
    ("remove", "field", "line_anchor"),
    [
        ("title: 演示政策\n", "title", "id: demo"),
        ("    text: 条件0\n", "conditions.0.text", "id: c0"),
        ("  text: 金额\n", "amount.text", "amount:\n"),
        ("fact_year: previous\n", "fact_year", "id: demo"),
    ],
)
def test_missing_required_key(tmp_path: Path, remove: str, field: str, line_anchor: str) -> None:
    text = BASE.replace(remove, "")
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.field == field
    assert "required key is missing" in error.reason
    assert error.line == position_of(text, line_anchor)[0]


def test_missing_formula(tmp_path: Path) -> None:
    text = BASE.replace("  formula: |\n    1000元\n", "")
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.field == "amount.formula"


@pytest.mark.parametrize(
    ("anchor", "duplicate"),
    [
        ("fact_year: previous\n", "fact_year: period\n"),
        ("    text: 条件0\n", "    text: again\n"),
        ("  first_period: 2025\n", "  first_period: 2024\n"),
    ],
)
def test_duplicate_yaml_key_is_refused_on_the_second_occurrence(tmp_path: Path, anchor: str, duplicate: str) -> None:
    text = insert_after(BASE, anchor, duplicate)
    error = refused(tmp_path, text, PolicySchemaError)
    key = duplicate.split(":")[0].strip()
    assert f"duplicate key {key!r}" in error.reason
    assert error.line == position_of(text, duplicate.rstrip("\n"))[0]


def test_duplicate_clause_id_is_refused(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > 1", "si.layoffs > 2"]).replace("id: c1", "id: c0")
    error = refused(tmp_path, text, PolicySchemaError)
    assert "clause id 'c0' is already used on line" in error.reason


def test_duplicate_clause_id_across_conditions_and_payable(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > 1"], payable=["enterprise.has_bank_account"])
    text = text.replace("id: p0", "id: c0")
    assert "already used on line" in refused(tmp_path, text, PolicySchemaError).reason


def test_duplicate_clause_id_names_the_line_of_the_second_clause(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > 1", "si.layoffs > 2"]).replace("id: c1", "id: c0")
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.line == position_of(text, "id: c0", occurrence=2)[0]


@pytest.mark.parametrize(
    ("bad", "good"),
    [
        ("title: 演示: 政策\n", "title: 演示政策\n"),
        ("\tfirst_period: 2025\n", "  first_period: 2025\n"),
    ],
)
def test_bad_yaml_syntax_names_line_and_column(tmp_path: Path, bad: str, good: str) -> None:
    text = BASE.replace(good, bad)
    error = refused(tmp_path, text, PolicySyntaxError)
    assert error.line == position_of(text, bad.rstrip("\n"))[0]
    assert error.column is not None
    assert "YAML" in error.reason


def test_unclosed_flow_list_is_a_syntax_error(tmp_path: Path) -> None:
    text = BASE.replace("fact_year: previous\n", "fact_year: [previous\n")
    error = refused(tmp_path, text, PolicySyntaxError)
    assert error.line is not None and error.line >= position_of(text, "[previous")[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a mapping of keys"),
        ("- a\n- b\n", "expected a mapping of keys"),
    ],
)
def test_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    assert message in refused(tmp_path, text, PolicySchemaError).reason


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('version: "1"\n', "version: 1\n", "version"),
        ("apply_free: true\n", "apply_free: false\n", "apply_free"),
        ("funding: treasury\n", "funding: lottery\n", "funding"),
        ("  first_period: 2025\n", '  first_period: "2025"\n', "effective.first_period"),
        ("id: demo\n", "id: Demo\n", "id"),
        ("id: c0\n", "id: C_0\n", "conditions.0.id"),
    ],
)
def test_wrong_kind_of_value(tmp_path: Path, old: str, new: str, field: str) -> None:
    text = BASE.replace(old, new)
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.field == field
    assert error.line == position_of(text, new.strip())[0]


def test_last_period_before_first(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > 1"], first_period=2025, last_period=2024)
    assert "last_period is before first_period" in refused(tmp_path, text, PolicySchemaError).reason


def test_id_must_match_the_file_name(tmp_path: Path) -> None:
    with pytest.raises(PolicySchemaError, match="does not match the file name"):
        load_policy_file(write_policy(tmp_path, BASE, policy_id="other"), CATALOGUE, require_tests=False)


# --- expression errors point into the YAML file -----------------------------------------------


def expr_block(expr_lines: str) -> str:
    """BASE with the one condition's block scalar replaced by `expr_lines` (already indented)."""
    return BASE.replace("    expr: |\n      si.layoffs > 1\n", expr_lines)


@pytest.mark.parametrize(
    ("expr_lines", "needle"),
    [
        ('    expr: |\n      si.layoffs > 1 and enterprise.statuz == "active"\n', "enterprise.statuz"),
        ("    expr: si.layoffs > 1 and enterprise.statuz == 1\n", "enterprise.statuz"),
        ("    expr: 'si.layoffs > 1 and enterprise.statuz == 1'\n", "enterprise.statuz"),
        ('    expr: "si.layoffs > 1 and enterprise.statuz == 1"\n', "enterprise.statuz"),
        ('    expr: |\n      enterprise.status == "activ"\n', '"activ"'),
    ],
)
def test_type_error_points_at_line_and_column(tmp_path: Path, expr_lines: str, needle: str) -> None:
    text = expr_block(expr_lines)
    error = refused(tmp_path, text, ExpressionTypeError)
    assert (error.line, error.column) == position_of(text, needle)


def test_syntax_error_points_at_line_and_column(tmp_path: Path) -> None:
    text = expr_block("    expr: |\n      si.layoffs > 1 and $\n")
    error = refused(tmp_path, text, ExpressionSyntaxError)
    assert (error.line, error.column) == position_of(text, "$")


def test_block_scalar_error_on_a_continuation_line_names_that_line(tmp_path: Path) -> None:
    text = expr_block('    expr: |\n      si.layoffs > 1\n        and enterprise.statuz == "active"\n')
    error = refused(tmp_path, text, ExpressionTypeError)
    assert error.line == position_of(text, "enterprise.statuz")[0]


BLOCK_CONTINUATION_CASES = [
    (
        '    expr: |\n      si.layoffs > 1\n        and enterprise.statuz == "active"\n',
        "enterprise.statuz",
        ExpressionTypeError,
    ),
    ('    expr: |\n      si.layoffs > 1 and\n      enterprise.status == "activ"\n', '"activ"', ExpressionTypeError),
    ('    expr: |\n      si.layoffs > 1 and\n      enterprise.status $ "active"\n', "$", ExpressionSyntaxError),
]


@pytest.mark.parametrize(("expr_lines", "needle", "kind"), BLOCK_CONTINUATION_CASES)
def test_block_scalar_error_on_a_continuation_line_has_the_right_column(
    tmp_path: Path, expr_lines: str, needle: str, kind: type[PolicyFileError]
) -> None:
    text = expr_block(expr_lines)
    error = refused(tmp_path, text, kind)
    assert (error.line, error.column) == position_of(text, needle)


def test_amount_formula_error_on_a_continuation_line(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > 1"], amount="1000元 +\n  si.layofs")
    error = refused(tmp_path, text, ExpressionTypeError)
    assert (error.line, error.column) == position_of(text, "si.layofs")


def test_amount_formula_error_names_its_line(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > 1"], amount="1000元 +\n  si.layofs")
    error = refused(tmp_path, text, ExpressionTypeError)
    assert error.line == position_of(text, "si.layofs")[0]
    assert "did you mean 'si.layoffs'" in error.reason


def test_condition_must_be_boolean(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs + 1"])
    error = refused(tmp_path, text, ExpressionTypeError)
    assert "a condition must be true/false, got int" in error.reason
    assert (error.line, error.column) == position_of(text, "si.layoffs + 1")


def test_amount_must_be_a_number(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > 1"], amount='"much"')
    assert "the amount formula must give a number" in refused(tmp_path, text, ExpressionTypeError).reason


# --- parameters, caps, tiers ----------------------------------------------------------------

PARAM_BY_YEAR = "n:\n  description: 人数\n  values:\n    2026: 5\n"


def test_parameter_without_a_value_for_a_period(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > params.n"], parameters=PARAM_BY_YEAR)
    error = refused(tmp_path, text, PolicySchemaError)
    assert "parameter 'n' has no value for period 2025" in error.reason


def test_parameter_without_a_value_names_its_line(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > params.n"], parameters=PARAM_BY_YEAR)
    error = refused(tmp_path, text, PolicySchemaError)
    assert error.line is not None
    assert position_of(text, "n:")[0] <= error.line <= position_of(text, "2026: 5")[0]


def test_parameter_values_apply_from_their_year_on(tmp_path: Path) -> None:
    params = "n:\n  description: 人数\n  values:\n    2022: 5\n    2024: 7\n"
    policy = load_text(
        tmp_path, policy_yaml(["si.layoffs > params.n"], parameters=params, first_period=2022, last_period=2025)
    )
    assert [policy.params_for(y)["n"] for y in (2022, 2023, 2024, 2025)] == [5, 5, 7, 7]


def test_parameter_changing_type_between_periods(tmp_path: Path) -> None:
    params = "n:\n  description: 人数\n  values:\n    2025: 5\n    2026: '\"x\"'\n"
    text = policy_yaml(["si.layoffs > 1"], parameters=params, last_period=2026)
    assert "changes type between periods" in refused(tmp_path, text, PolicySchemaError).reason


def test_parameter_needs_exactly_one_of_value_or_values(tmp_path: Path) -> None:
    params = "n:\n  description: 人数\n  value: 5\n  values:\n    2025: 5\n"
    text = policy_yaml(["si.layoffs > params.n"], parameters=params)
    assert "exactly one of" in refused(tmp_path, text, PolicySchemaError).reason


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            (
                "    - up_to: 100万元\n      value: 10万元\n    - up_to: 50万元\n      value: 20万元\n"
                "    - up_to: null\n      value: 30万元\n"
            ),
            "ascending",
        ),
        (
            "    - up_to: null\n      value: 10万元\n    - up_to: 50万元\n      value: 20万元\n",
            "only the last tier may be unbounded",
        ),
        ("    - up_to: 100万元\n      value: 10万元\n", "the last tier must be unbounded"),
    ],
)
def test_tier_tables_are_validated(tmp_path: Path, steps: str, message: str) -> None:
    params = f"table:\n  description: 档次\n  value:\n{steps}"
    text = policy_yaml(["si.layoffs > 1"], parameters=params, amount="tier(tax.revenue_fen, params.table)")
    assert message in refused(tmp_path, text, PolicySchemaError).reason


def test_tier_table_picks_by_inclusive_upper_bound(tmp_path: Path) -> None:
    params = (
        "table:\n  description: 档次\n  value:\n    - up_to: 100万元\n      value: 10万元\n"
        "    - up_to: 500万元\n      value: 20万元\n    - up_to: null\n      value: 30万元\n"
    )
    compiled = load_text(
        tmp_path, policy_yaml(["si.layoffs >= 0"], parameters=params, amount="tier(tax.revenue_fen, params.table)")
    ).compiled(2025)
    amounts = {}
    for revenue in (0, 100_000_000, 100_000_001, 500_000_000, 500_000_001):
        result = evaluate(compiled, document({"si.layoffs": 0, "tax.revenue_fen": revenue}), today=TODAY)
        assert result.outcome == Outcome.ELIGIBLE
        amounts[revenue] = result.amount_fen
    assert amounts == {
        0: 10_000_000,
        100_000_000: 10_000_000,
        100_000_001: 20_000_000,
        500_000_000: 20_000_000,
        500_000_001: 30_000_000,
    }


@pytest.mark.parametrize("cap", ["5%", "-5元", "1.234元"])
def test_cap_must_be_an_amount(tmp_path: Path, cap: str) -> None:
    refused(tmp_path, policy_yaml(["si.layoffs > 1"], cap=cap), PolicyFileError)


def test_cap_and_budget_are_fen(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > 1"], cap="50万元").replace(
        "fact_year: previous\n", "fact_year: previous\nbudget: 3000万元\n"
    )
    policy = load_text(tmp_path, text)
    assert (policy.cap_fen, policy.budget_fen) == (50_000_000, 3_000_000_000)


# --- test files, periods, hashes ------------------------------------------------------------

MINIMAL_CASE = """\
- name: 最小用例
  period: {period}
  as_of: 2025-03-31
  facts: []
  expect:
    outcome: UNDETERMINED
"""


def test_missing_test_file_is_refused_when_required(tmp_path: Path) -> None:
    path = write_policy(tmp_path, BASE)
    with pytest.raises(MissingPolicyTestsError) as info:
        load_policy_file(path, CATALOGUE, require_tests=True)
    assert "demo.test.yaml" in info.value.reason
    assert info.value.file == str(path)
    (tmp_path / "demo.test.yaml").write_text(MINIMAL_CASE.format(period=2025), encoding="utf-8")
    policy = load_policy_file(path, CATALOGUE, require_tests=True)
    assert policy.test_file == str(tmp_path / "demo.test.yaml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]\n", "non-empty list of cases"),
        ("name: x\n", "non-empty list of cases"),
        (MINIMAL_CASE.format(period=2025) + "  surprise: 1\n", "unknown key"),
    ],
)
def test_invalid_test_file_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = write_policy(tmp_path, BASE)
    (tmp_path / "demo.test.yaml").write_text(content, encoding="utf-8")
    with pytest.raises(PolicySchemaError) as info:
        load_policy_file(path, CATALOGUE, require_tests=True)
    assert message in info.value.reason
    assert info.value.file == str(tmp_path / "demo.test.yaml")


def test_period_outside_the_policy_is_refused(tmp_path: Path) -> None:
    policy = load_text(tmp_path, BASE)
    with pytest.raises(PeriodNotCoveredError, match="not in force for period 2024"):
        policy.compiled(2024)
    with pytest.raises(PeriodNotCoveredError):
        stable_jobs().compiled(2026)


def test_compiled_policy_is_cached_and_named_by_content(tmp_path: Path) -> None:
    policy = load_text(tmp_path, BASE)
    assert policy.compiled(2025) is policy.compiled(2025)
    raw = (tmp_path / "demo.yaml").read_bytes()
    assert policy.sha256 == hashlib.sha256(raw).hexdigest()
    assert policy.compiled(2025).ruleset_name == f"demo@1#{policy.sha256[:16]}/2025"
    changed = load_text(tmp_path, BASE.replace("si.layoffs > 1", "si.layoffs > 2"))
    assert changed.compiled(2025).ruleset_name != policy.compiled(2025).ruleset_name


def test_stable_jobs_parameters_by_period() -> None:
    policy = stable_jobs()
    expected = {
        2022: (Fraction(1, 2), Fraction(9, 10)),
        2023: (Fraction(3, 10), Fraction(3, 5)),
        2024: (Fraction(3, 10), Fraction(3, 5)),
        2025: (Fraction(3, 10), Fraction(3, 5)),
    }
    for period, (large, sme) in expected.items():
        params = policy.params_for(period)
        assert (params["large_rate"], params["sme_rate"]) == (large, sme)
        assert params["max_layoff_rate"] == Fraction(11, 200)
        assert params["small_employer_max_layoff_rate"] == Fraction(1, 5)


def test_every_shipped_policy_loads_and_evaluates_for_every_listed_period() -> None:
    policies = shipped_policies()
    assert len(policies) == len(policy_files(POLICIES_DIR)) >= 6
    for policy in policies:
        for period in policy.check_periods():
            result = evaluate(policy.compiled(period), document({}), today=TODAY)
            assert result.outcome != Outcome.ELIGIBLE, (policy.id, period)
            assert result.policy_id == policy.id


def test_directory_load_refuses_a_policy_id_defined_twice(tmp_path: Path) -> None:
    write_policy(tmp_path, BASE)
    (tmp_path / "demo.v2.yaml").write_text(BASE, encoding="utf-8")
    with pytest.raises(PolicySchemaError, match="also defined in"):
        load_policy_dir(tmp_path, CATALOGUE, require_tests=False)


def test_directory_without_policies_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicySchemaError, match="no policy files"):
        load_policy_dir(tmp_path, CATALOGUE, require_tests=False)


def test_policy_set_lookup(tmp_path: Path) -> None:
    write_policy(tmp_path, BASE)
    policies = load_policy_dir(tmp_path, CATALOGUE, require_tests=False)
    assert policies.get("demo").id == "demo"
    with pytest.raises(PolicyNotFoundError):
        policies.get("nope")


# --- PolicyStore.reload keeps serving on a refused file ---------------------------------------


def copy_policies(target: Path) -> Path:
    """The shipped policies, each with a test file (PolicyStore requires them)."""
    shutil.copytree(POLICIES_DIR, target)
    for path in policy_files(target):
        policy = load_policy_file(path, CATALOGUE, require_tests=False)
        test_path = path.with_name(path.name.removesuffix(".yaml") + ".test.yaml")
        if not test_path.exists():
            test_path.write_text(MINIMAL_CASE.format(period=policy.check_periods()[0]), encoding="utf-8")
    return target


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        ('expr: enterprise.status == "active"', 'expr: enterprise.status == "activ"', ExpressionTypeError),
        ("\nfact_year: previous", "\nfact_year: [previous", PolicySyntaxError),
        ("apply_free: true", "apply_free: true\nsurprise: 1", PolicySchemaError),
    ],
)
def test_reload_with_a_broken_file_keeps_the_running_set(
    tmp_path: Path, old: str, new: str, kind: type[PolicyFileError]
) -> None:
    root = copy_policies(tmp_path / "policies")
    store = PolicyStore(root, CATALOGUE)
    before = store.current
    assert len(before) == len(policy_files(root))

    target = root / "stable-jobs-refund.yaml"
    original = target.read_text(encoding="utf-8")
    assert old in original
    target.write_text(original.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(kind) as info:
        store.reload()
    assert info.value.file == str(target)
    assert info.value.line is not None
    assert store.current is before
    running = store.current.get("stable-jobs-refund")
    assert evaluate(running.compiled(2025), stable_document(), today=TODAY).outcome == Outcome.ELIGIBLE

    target.write_text(original.replace('version: "2025.1"', 'version: "2025.2"'), encoding="utf-8")
    fresh = store.reload()
    assert store.current is fresh is not before
    assert fresh.get("stable-jobs-refund").version == "2025.2"


def test_store_refuses_to_start_on_a_broken_directory(tmp_path: Path) -> None:
    root = copy_policies(tmp_path / "policies")
    (root / "stable-jobs-refund.test.yaml").unlink()
    with pytest.raises(MissingPolicyTestsError):
        PolicyStore(root, CATALOGUE)


def test_real_stable_jobs_file_is_the_one_tested() -> None:
    assert stable_jobs().file == str(STABLE_JOBS_FILE)
    assert [c.id for c in stable_jobs().conditions] == [
        "registered-active",
        "not-credit-listed",
        "employer-type",
        "not-labor-dispatch",
        "premiums-paid-in-full",
        "layoff-rate",
    ]
    assert [c.id for c in stable_jobs().payable] == ["bank-account", "size-class-known"]
