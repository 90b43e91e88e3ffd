"""Independent review of enumerated values checked through definitions (rules/typecheck.py
`_check_enum` unwrapping both sides): where the error points, and a use of a definition that
the written-out expression allows but the definition does not."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_testkit import TODAY, compile_text, document, load_text, policy_yaml, position_of

from rules.errors import ExpressionTypeError
from rules.evaluator import evaluate
from rules.values import Outcome

KIND = "kind:\n  description: 状态\n  value: '\"gone\"'"


@pytest.mark.parametrize(
    ("definitions", "condition", "wrong", "where"),
    [
        # the wrong value written in a definition: its line and column there
        ({"wanted": '"actve"'}, "enterprise.status == wanted", "actve", '"actve"'),
        ({"w1": '"actve"', "w2": "w1"}, "enterprise.status == w2", "actve", '"actve"'),
        ({"wanted": "params.kind"}, "wanted == enterprise.status", "gone", "params.kind"),
        # the wrong value written in the clause: its line and column in the clause
        ({"state": "enterprise.status"}, 'state == "actve"', "actve", '"actve"'),
        ({"state": "enterprise.status", "other": "state"}, 'other in ["active", "gone"]', "gone", '"gone"]'),
    ],
)
def test_an_impossible_value_is_refused_where_it_is_written(
    tmp_path: Path, definitions: dict[str, str], condition: str, wrong: str, where: str
) -> None:
    text = policy_yaml([condition], definitions=definitions, parameters=KIND)
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, text)
    assert info.value.reason.startswith(f"{wrong!r} is not a value of enterprise.status")
    assert (info.value.line, info.value.column) == position_of(text, where)


def test_a_possible_value_through_two_definitions_decides(tmp_path: Path) -> None:
    text = policy_yaml(
        ["other == wanted"], definitions={"state": "enterprise.status", "other": "state", "wanted": '"active"'}
    )
    compiled = compile_text(tmp_path, text)
    result = evaluate(compiled, document({"enterprise.status": "active"}), today=TODAY)
    assert result.outcome is Outcome.ELIGIBLE


def test_a_definition_naming_a_fact_can_be_tested_for_presence(tmp_path: Path) -> None:
    text = policy_yaml(["state is present"], definitions={"state": "enterprise.status"})
    compiled = compile_text(tmp_path, text)
    assert evaluate(compiled, document({"enterprise.status": "active"}), today=TODAY).outcome is Outcome.ELIGIBLE


def test_the_written_out_presence_test_loads(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, policy_yaml(["enterprise.status is present"]))
    assert evaluate(compiled, document({"enterprise.status": "active"}), today=TODAY).outcome is Outcome.ELIGIBLE
