"""Independent review of the written-out bounds of an expression (rules/definitions.py): where a
policy can get past MAX_DEPTH/MAX_SIZE, and where the bound holds, with the line it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rules_testkit import TODAY, compile_text, document, load_text, policy_yaml, position_of

from rules.compiler import MAX_CLAUSE_TESTS, Clause, compile_ruleset
from rules.definitions import MAX_DEPTH, MAX_SIZE
from rules.errors import EngineLimitError, ExpressionTypeError, PolicyFileError
from rules.evaluator import evaluate
from rules.parser import parse_expression
from rules.values import Outcome
from service.catalogue import CATALOGUE

# Far beyond MAX_DEPTH, far below what a text editor or a YAML file would mind.
LONG_CHAIN = 600


# --- bounds that a policy gets past ---------------------------------------------------------------
@pytest.mark.parametrize(
    "condition",
    [
        "si.layoffs" + " + 1" * LONG_CHAIN + " >= 1",
        "not " * LONG_CHAIN + "si.layoffs >= 1",
        "- " * LONG_CHAIN + "si.layoffs >= 1",
    ],
    ids=["sum", "not", "negation"],
)
def test_a_long_operator_chain_is_refused_with_its_line_not_a_recursion_error(tmp_path: Path, condition: str) -> None:
    text = policy_yaml(["si.insured_start >= 1", condition])
    with pytest.raises(PolicyFileError) as info:
        load_text(tmp_path, text)
    assert info.value.line == position_of(text, condition[:20])[0]


def test_a_long_operator_chain_in_a_definition_is_refused_with_its_line(tmp_path: Path) -> None:
    chain = "si.layoffs" + " + 1" * LONG_CHAIN
    text = policy_yaml(["total >= 1"], definitions={"total": chain})
    with pytest.raises(PolicyFileError) as info:
        load_text(tmp_path, text)
    assert info.value.line == position_of(text, chain[:20])[0]


def nested_conditionals(levels: int) -> str:
    """`if c1 then (if c2 then (... x >= 0 ...) else false) else false`: 5 terms a level."""
    expr = "si.layoffs >= 0"
    for i in range(levels):
        expr = f"(if si.layoffs > {i} then {expr} else false)"
    return expr


def engine_json_size(condition: str) -> int:
    bounds = {name: fact.max_abs for name, fact in CATALOGUE.facts.items()}
    clause = Clause("c0", "条件", "第1条", parse_expression(condition), "c0")
    definition, _ = compile_ruleset([clause], [], {}, bounds, "demo.yaml", lambda node: "int")
    return len(json.dumps(definition))


def test_nested_conditionals_are_refused_at_load_before_the_engine_form_grows(tmp_path: Path) -> None:
    # each level doubles the engine form ((c and a) or (not c and b) or (a and b)): refused as it
    # grows, with the line, instead of emitting megabytes and hanging durable-rules
    assert engine_json_size(nested_conditionals(5)) < 100_000
    text = policy_yaml(["si.insured_start >= 1", nested_conditionals(18)])
    with pytest.raises(EngineLimitError) as info:
        load_text(tmp_path, text)
    assert f"more than {MAX_CLAUSE_TESTS} tests" in info.value.reason
    assert info.value.line is not None and info.value.line >= position_of(text, "(if si.layoffs")[0]


def test_nested_conditionals_are_within_the_written_out_bounds() -> None:
    """The nested conditionals above are small by the bounds' own measure: the engine form is what grows."""
    text = nested_conditionals(18)
    assert text.count("if ") == 18 and len(text) < 1000


# --- bounds that hold -----------------------------------------------------------------------------
def test_parentheses_are_no_level(tmp_path: Path) -> None:
    """Redundant parentheses leave the tree as it is: a legitimate policy is not refused for them."""
    condition = "(" * 400 + "si.layoffs" + ")" * 400 + " >= 1"
    result = evaluate(compile_text(tmp_path, policy_yaml([condition])), document({"si.layoffs": 1}), today=TODAY)
    assert result.outcome is Outcome.ELIGIBLE


def deep(levels: int) -> str:
    return "(" * levels + "si.layoffs + 1" + " + 1)" * levels


def test_a_deep_amount_is_refused_at_the_amount_line(tmp_path: Path) -> None:
    amount = deep(MAX_DEPTH)
    text = policy_yaml(["si.layoffs >= 1"], amount=amount)
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, text)
    assert info.value.line == position_of(text, amount)[0]
    assert str(MAX_DEPTH) in info.value.reason


def test_a_deep_payable_clause_is_refused_at_its_line(tmp_path: Path) -> None:
    clause = f"{deep(MAX_DEPTH)} >= 1"
    text = policy_yaml(["si.layoffs >= 1"], payable=["enterprise.has_bank_account", clause])
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, text)
    assert info.value.line == position_of(text, clause)[0]


def test_a_deep_count_filter_is_refused_at_its_line(tmp_path: Path) -> None:
    where = " and ".join(['h.category == "graduate"'] * (MAX_SIZE // 3 + 1))  # 3 terms each
    condition = f"count(h in hires where {where}) >= 1"
    text = policy_yaml(["si.layoffs >= 1", condition])
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, text)
    assert info.value.line == position_of(text, condition)[0]
    assert str(MAX_SIZE) in info.value.reason


def test_a_definition_used_many_times_counts_once_per_use(tmp_path: Path) -> None:
    """Each use of a definition is written out where it is used: uses multiply its size."""
    big = " and ".join(["si.layoffs >= 1"] * 100)  # 301 terms, 3 levels
    fine = policy_yaml([" and ".join(["big"] * 4)], definitions={"big": big})
    assert load_text(tmp_path, fine).definitions["big"].size == 301
    too_big = policy_yaml([" and ".join(["big"] * 7)], definitions={"big": big})  # 2,108 terms
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, too_big)
    assert str(MAX_SIZE) in info.value.reason


def test_a_sum_of_a_hundred_terms_counts_as_a_hundred_levels(tmp_path: Path) -> None:
    """Pinned as it is: `+` is left-associative, so a flat sum is as deep as it is long, and a
    sum of more than ~100 facts is refused as too deep (where `and`/`or` lists are one level)."""
    total = " + ".join(["si.layoffs"] * 101)
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, policy_yaml([f"{total} >= 1"]))
    assert "102 levels deep" in info.value.reason  # 100 additions, the comparison, its root


def test_a_shipped_sized_expression_with_a_chain_of_definitions_loads(tmp_path: Path) -> None:
    """Legitimate policies are not refused: a definition used in a definition used in the amount."""
    text = policy_yaml(
        ["hired >= 1"],
        definitions={"hired": "count(h in hires where h.counts_for_enterprise)", "award": "hired * 1500元"},
        amount="award",
    )
    assert load_text(tmp_path, text).definitions["award"].depth <= 5
