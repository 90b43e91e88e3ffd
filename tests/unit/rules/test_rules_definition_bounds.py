"""What a review of named definitions found, kept fixed: enumerated values checked through
definitions on either side, names matched whole, chains and written-out sizes bounded at load
(with file and line, never a RecursionError or a hang), and a ratio-valued term refused at load
instead of failing at evaluation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rules_testkit import TODAY, compile_text, document, load_text, policy_yaml, position_of
from test_vectorised import assert_agrees

from rules.definitions import MAX_DEPTH, MAX_SIZE
from rules.errors import EngineLimitError, ExpressionTypeError, PolicySchemaError
from rules.evaluator import evaluate


# --- enumerated values through definitions --------------------------------------------------------
@pytest.mark.parametrize(
    ("definitions", "condition", "wrong"),
    [
        ({"state": "enterprise.status"}, 'state == "actve"', '"actve"'),
        ({"state": "enterprise.status"}, 'state in ["active", "gone"]', '"gone"'),
        ({"wanted": '"actve"'}, "enterprise.status == wanted", "wanted"),
        ({"wanted": '"actve"'}, "wanted == enterprise.status", "wanted"),
        ({"state": "enterprise.status", "wanted": '"actve"'}, "state != wanted", "wanted"),
    ],
)
def test_an_impossible_value_of_an_enumerated_fact_is_refused_through_definitions(
    tmp_path: Path, definitions: dict[str, str], condition: str, wrong: str
) -> None:
    text = policy_yaml([condition], definitions=definitions)
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, text)
    assert "is not a value of enterprise.status" in info.value.reason
    assert "active" in info.value.reason


def test_a_possible_value_through_a_definition_loads(tmp_path: Path) -> None:
    text = policy_yaml(["enterprise.status == wanted"], definitions={"wanted": '"active"'})
    assert load_text(tmp_path, text).definitions["wanted"].kind == "str"


# --- names are matched whole ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ab\n", "si\n", "a-b", "Ab", "1a"])
def test_a_definition_name_that_is_not_a_whole_name_is_refused(tmp_path: Path, name: str) -> None:
    yaml_name = name.replace("\n", "\\n")
    text = policy_yaml(["x >= 1"], definitions={"x": "si.layoffs"}).replace(
        "definitions:\n  x:\n", f'definitions:\n  x:\n    text: x\n    expr: si.layoffs\n  "{yaml_name}":\n', 1
    )
    with pytest.raises(PolicySchemaError) as info:
        load_text(tmp_path, text)
    assert "definition name" in info.value.reason or "definitions" in (info.value.field or "")


def test_a_policy_id_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs >= 1"]).replace("id: demo\n", 'id: "demo\\n"\n', 1)
    with pytest.raises(PolicySchemaError):
        load_text(tmp_path, text)


# --- bounds ---------------------------------------------------------------------------------------
def chain(links: int) -> dict[str, str]:
    """d0 = si.layoffs, d<i> = d<i-1> + 1: each link one level deeper."""
    return {"d0": "si.layoffs", **{f"d{i}": f"d{i - 1} + 1" for i in range(1, links)}}


def test_a_chain_within_the_bound_loads_and_decides(tmp_path: Path) -> None:
    links = MAX_DEPTH // 2 - 2  # each link adds a Ref and a '+' level
    text = policy_yaml([f"d{links - 1} >= {links}"], definitions=chain(links))
    result = evaluate(compile_text(tmp_path, text), document({"si.layoffs": 1}), today=TODAY)
    assert result.outcome == "ELIGIBLE"


def test_an_expression_at_the_depth_bound_is_decided_alike_by_all_three_in_a_worker_thread(tmp_path: Path) -> None:
    # gRPC serves on worker threads, whose stack is the one the bound is chosen against
    links = (MAX_DEPTH - 2) // 2
    text = policy_yaml([f"d{links - 1} >= {links}"], definitions=chain(links), amount=f"d{links - 1} * 100")
    compiled = compile_text(tmp_path, text)
    documents = [document({"si.layoffs": n}) for n in (0, 1, 5)] + [document({})]
    with ThreadPoolExecutor(1) as pool:
        trace = pool.submit(assert_agrees, compiled, documents).result()
    assert [trace.outcome_name(row) for row in range(len(documents))] == [
        "INELIGIBLE",
        "ELIGIBLE",
        "ELIGIBLE",
        "UNDETERMINED",
    ]


@pytest.mark.parametrize("links", [MAX_DEPTH, 170, 300, 2_000])
def test_a_chain_beyond_the_bound_is_refused_at_load_with_its_line(tmp_path: Path, links: int) -> None:
    text = policy_yaml([f"d{links - 1} >= 1"], definitions=chain(links))
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, text)
    assert info.value.file.endswith("demo.yaml") and info.value.line is not None
    assert str(MAX_DEPTH) in info.value.reason


def test_a_doubling_chain_is_refused_by_its_written_out_size_without_writing_it_out(tmp_path: Path) -> None:
    # d<i> = d<i-1> + d<i-1>: 2**40 terms written out; the engine compiler would inline them all
    definitions = {"d0": "si.layoffs", **{f"d{i}": f"d{i - 1} + d{i - 1}" for i in range(1, 40)}}
    text = policy_yaml(["d39 >= 1"], definitions=definitions)
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, text)
    assert str(MAX_SIZE) in info.value.reason
    # the first definition beyond the bound is the one named
    first_too_big = next(i for i in range(40) if 2 ** (i + 1) - 1 > MAX_SIZE)
    assert info.value.line == position_of(text, f"      d{first_too_big - 1} + d{first_too_big - 1}")[0]


def test_a_deep_expression_in_a_condition_is_refused_where_it_is_written(tmp_path: Path) -> None:
    deep = "(" * MAX_DEPTH + "si.layoffs + 1" + " + 1)" * MAX_DEPTH
    text = policy_yaml(["si.insured_start >= 1", f"{deep} >= 1"])
    with pytest.raises(ExpressionTypeError) as info:
        load_text(tmp_path, text)
    assert info.value.line == position_of(text, deep)[0]


# --- a ratio-valued term --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "condition",
    [
        "(if si.layoffs > 0 then ratio(si.layoffs, si.insured_start) else ratio(0, 1)) <= 5.5%",
        "(if si.layoffs > 0 then ratio(si.layoffs, si.insured_start) else ratio(0, 1)) >= 1",
        "share >= 1",
    ],
)
def test_a_ratio_valued_term_is_refused_at_load(tmp_path: Path, condition: str) -> None:
    text = policy_yaml(
        [condition],
        definitions={"share": "if si.layoffs > 0 then ratio(si.layoffs, si.insured_start) else ratio(0, 1)"},
    )
    with pytest.raises(EngineLimitError) as info:
        load_text(tmp_path, text)
    assert "ratio" in info.value.reason


def test_a_ratio_definition_compared_where_it_is_used_still_loads(tmp_path: Path) -> None:
    text = policy_yaml(["share <= 5.5%"], definitions={"share": "ratio(si.layoffs, si.insured_start)"})
    result = evaluate(compile_text(tmp_path, text), document({"si.layoffs": 1, "si.insured_start": 100}), today=TODAY)
    assert result.outcome == "ELIGIBLE"
