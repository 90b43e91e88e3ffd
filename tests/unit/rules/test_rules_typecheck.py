"""rules.typecheck: every name known, every operator on the right types, errors at the right place."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_testkit import load_text, policy_yaml

from rules.errors import ExpressionTypeError, PolicyFileError
from rules.parser import parse_expression
from rules.typecheck import Scope, check
from service.catalogue import CATALOGUE

PARAMS = {"rate": "decimal", "n": "int", "table": "tiers[int]", "label": "str"}
SCOPE = Scope(CATALOGUE, PARAMS, "p.yaml")
LINE, COLUMN = 7, 11  # where the expressions "start" in the pretend policy file


def type_of(text: str) -> str:
    return check(parse_expression(text, file="p.yaml", line=LINE, column=COLUMN), SCOPE)


def refused(text: str) -> ExpressionTypeError:
    with pytest.raises(ExpressionTypeError) as info:
        type_of(text)
    assert info.value.file == "p.yaml"
    return info.value


def at(text: str, needle: str) -> tuple[int, int]:
    """Where `needle` sits in the file, for a one-line expression starting at LINE:COLUMN."""
    return LINE, COLUMN + text.index(needle)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("si.layoffs + 1", "int"),
        ("si.layoffs * params.rate", "decimal"),
        ("si.layoffs / 2", "decimal"),
        ("si.layoffs * 2.5", "decimal"),
        ("-si.layoffs", "int"),
        ("ratio(si.layoffs, si.insured_start)", "ratio"),
        ("ratio(si.layoffs, si.insured_start) <= 5.5%", "bool"),
        ("ratio(si.layoffs, si.insured_start) > params.rate", "bool"),
        ("5.5% >= ratio(si.layoffs, si.insured_start)", "bool"),
        ("today - enterprise.established_on", "int"),
        ("enterprise.established_on + 30", "date"),
        ("enterprise.established_on - 30", "date"),
        ('enterprise.established_on < date("2020-01-01")', "bool"),
        ("year(today)", "int"),
        ("min(1, 2)", "int"),
        ("max(1, 2.5)", "decimal"),
        ("tier(tax.revenue_fen, params.table)", "int"),
        ("count(h in hires)", "int"),
        ('count(h in hires where h.age < 35 and h.category == "graduate")', "int"),
        ("if enterprise.labor_dispatch then 1 else 2", "int"),
        ("if enterprise.labor_dispatch then 1 else 2.5", "decimal"),
        ('enterprise.status in ["active", "suspended"]', "bool"),
        ('enterprise.org_type not in ["government"]', "bool"),
        ("si.layoffs in [1, 2]", "bool"),
        ("si.layoffs is missing", "bool"),
        ("derived.size_class is present", "bool"),
        ("period + 1", "int"),
        ("fact_year", "int"),
        ("today", "date"),
        ("enterprise.name == params.label", "bool"),
        ('enterprise.status == "active" and not enterprise.labor_dispatch', "bool"),
        ("si.layoffs == 2.0", "bool"),
    ],
)
def test_well_typed_expressions(text: str, kind: str) -> None:
    assert type_of(text) == kind


def test_unknown_fact_suggests_the_close_name_and_points_at_it() -> None:
    text = 'si.layoffs > 1 and enterprise.statu == "active"'
    error = refused(text)
    assert "unknown fact 'enterprise.statu'" in error.reason
    assert "did you mean 'enterprise.status'?" in error.reason
    assert (error.line, error.column) == at(text, "enterprise.statu")


def test_unknown_fact_without_a_close_name_has_no_suggestion() -> None:
    error = refused("zzz.qqq == 1")
    assert "unknown fact 'zzz.qqq'" in error.reason
    assert "did you mean" not in error.reason


def test_bare_group_name_is_not_a_fact() -> None:
    assert "unknown name 'si'" in refused("si > 1").reason


def test_unknown_parameter() -> None:
    text = "si.layoffs > params.rat"
    error = refused(text)
    assert "unknown parameter 'params.rat'" in error.reason
    assert "did you mean 'rate'?" in error.reason
    assert (error.line, error.column) == at(text, "params.rat")


@pytest.mark.parametrize("text", ["params", "params.rate.x"])
def test_malformed_parameter_reference(text: str) -> None:
    assert "unknown parameter" in refused(text).reason


def test_unknown_collection_field() -> None:
    text = "count(h in hires where h.agee > 30) > 0"
    error = refused(text)
    assert "hires records have no field 'agee'" in error.reason
    assert "did you mean 'age'?" in error.reason
    assert (error.line, error.column) == at(text, "h.agee")


def test_unknown_collection() -> None:
    error = refused("count(h in hirez) > 0")
    assert "unknown collection 'hirez'" in error.reason
    assert "did you mean 'hires'?" in error.reason


def test_collection_used_as_a_value() -> None:
    assert "is a collection" in refused("hires > 0").reason


def test_record_variable_does_not_leak_out_of_count() -> None:
    assert "unknown fact 'h.age'" in refused("count(h in hires) > 0 and h.age > 3").reason


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("enterprise.name == 1", "cannot compare str with int"),
        ('si.layoffs == "1"', "cannot compare int with str"),
        ("si.layoffs == true", "cannot compare int with bool"),
        ("enterprise.established_on > 5", "cannot compare date with int"),
        ('si.layoffs in ["a"]', "list holds str, but the value tested is int"),
    ],
)
def test_mixed_type_comparison_refused(text: str, message: str) -> None:
    assert message in refused(text).reason


@pytest.mark.parametrize(
    "text",
    [
        'enterprise.name < "b"',
        'derived.size_class >= "large"',
        'enterprise.industry_code > "C3484"',
        "enterprise.name <= params.label",
        "enterprise.labor_dispatch < true",
    ],
)
def test_ordering_strings_and_booleans_refused(text: str) -> None:
    error = refused(text)
    assert "does not order" in error.reason
    assert "==" in error.reason  # it says what to do instead


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("si.layoffs and si.insured_start", "'and' needs true/false values, got int"),
        ("enterprise.labor_dispatch or si.layoffs", "'or' needs true/false values, got int"),
        ("not si.layoffs", "'not' needs a true/false value, got int"),
        ("-enterprise.name", "'-' needs a number, got str"),
        ('enterprise.name + "x"', "'+' needs numbers, got str and str"),
        ("today + today", "'+' needs numbers, got date and date"),
        ("enterprise.labor_dispatch * 2", "'*' needs numbers, got bool and int"),
    ],
)
def test_operators_on_wrong_types_refused(text: str, message: str) -> None:
    assert message in refused(text).reason


def test_and_error_points_at_the_offending_operand() -> None:
    text = "enterprise.labor_dispatch and si.layoffs"
    assert (refused(text).line, refused(text).column) == at(text, "si.layoffs")


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ('enterprise.status == "activ"', '"activ"'),
        ('"activ" == enterprise.status', '"activ"'),
        ('enterprise.status != "revokd"', '"revokd"'),
        ('enterprise.status in ["active", "activ"]', '"activ"'),
        ('enterprise.org_type not in ["goverment"]', '"goverment"'),
        ('derived.size_class == "Large"', '"Large"'),
        ('count(c in credit_listings where c.list == "zombi") == 0', '"zombi"'),
        ('count(h in hires where h.category in ["graduate", "unemployed"]) > 0', '"unemployed"'),
    ],
)
def test_enumeration_typos_refused_at_the_literal(text: str, bad: str) -> None:
    error = refused(text)
    assert f"{bad[1:-1]!r} is not a value of" in error.reason
    assert "one of" in error.reason
    assert (error.line, error.column) == at(text, bad)


def test_enumeration_error_lists_the_allowed_values() -> None:
    reason = refused('enterprise.status == "activ"').reason
    for value in ("active", "suspended", "liquidating", "deregistered", "revoked"):
        assert value in reason


@pytest.mark.parametrize(
    "text",
    [
        "ratio(si.layoffs, si.insured_start) == 5%",
        "ratio(si.layoffs, si.insured_start) != 5%",
        "5% == ratio(si.layoffs, si.insured_start)",
        'ratio(si.layoffs, si.insured_start) <= "a"',
        "ratio(si.layoffs, si.insured_start) < ratio(si.insured_end, si.insured_start)",
    ],
)
def test_ratio_only_ordered_against_a_rate(text: str) -> None:
    assert "ratio(...) can only be compared" in refused(text).reason


@pytest.mark.parametrize(
    "text",
    [
        "ratio(si.layoffs, si.insured_start) * 2 > 1",
        "ratio(si.layoffs, si.insured_start) in [1]",
        "ratio(si.layoffs, si.insured_start)  + 1 > 0",
    ],
)
def test_ratio_is_not_a_number(text: str) -> None:
    refused(text)


@pytest.mark.parametrize(
    ("text", "usage"),
    [
        ("year()", "year(date)"),
        ("year(today, 1)", "year(date)"),
        ("year(si.layoffs)", "year(date)"),
        ("ratio(si.layoffs)", "ratio(count, count)"),
        ("ratio(si.layoffs, 2.5)", "ratio(count, count)"),
        ("ratio(si.layoffs, si.insured_start, 1)", "ratio(count, count)"),
        ("min(1)", "min(number, number)"),
        ("max(1, 2, 3)", "max(number, number)"),
        ('min(1, "a")', "min(number, number)"),
        ("tier(1)", "tier(amount, params.<tier table>)"),
        ("tier(si.layoffs, params.n)", "tier(amount, params.<tier table>)"),
    ],
)
def test_function_arity_and_argument_types(text: str, usage: str) -> None:
    error = refused(text)
    assert usage in error.reason
    assert (error.line, error.column) == (LINE, COLUMN)


def test_unknown_function() -> None:
    assert "unknown function 'sum'" in refused("sum(1, 2)").reason


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("if si.layoffs then 1 else 2", "the condition of 'if' must be true/false"),
        ('if enterprise.labor_dispatch then 1 else "a"', "'then' gives int but 'else' gives str"),
        ("(1 + 2) is missing", "applies to a fact name"),
        ("si.layoffs in []", "an empty list"),
        ("count(h in hires where h.age) > 0", "the 'where' filter must be true/false"),
    ],
)
def test_other_misuses(text: str, message: str) -> None:
    assert message in refused(text).reason


def test_enumeration_typo_through_a_parameter_is_refused(tmp_path: Path) -> None:
    text = policy_yaml(
        ["enterprise.status == params.wanted"], parameters="wanted:\n  description: 状态\n  value: '\"activ\"'\n"
    )
    with pytest.raises(PolicyFileError, match="activ"):
        load_text(tmp_path, text)
