"""Hostile policy text: whatever the expression parser, the type checker or the policy loader is
given, the answer is a tree, a loaded policy, or a PolicyFileError subclass with file and line;
never RecursionError, another exception, or a hang. Deep nesting is refused before any recursion
over the tree (rules/parser.py, MAX_NESTING), at the line and column where it goes too deep."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rules_testkit import load_text, policy_yaml, position_of

from rules.errors import ExpressionSyntaxError, PolicyFileError
from rules.loader import load_policy_text
from rules.parser import MAX_EXPRESSION_LENGTH, MAX_NESTING, parse_expression
from rules.typecheck import Scope, check
from rules.yaml_source import MAX_DEPTH as YAML_DEPTH
from rules.yaml_source import load
from service.catalogue import CATALOGUE

SCOPE = Scope(CATALOGUE, {"rate": "decimal", "count": "int"}, "p.yaml")
FUZZ = settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Each under MAX_EXPRESSION_LENGTH, so that the nesting bound is what refuses it.
DEEP = {
    "open-parens": "(" * 19_000,
    "not": "not " * 4_000 + "si.layoffs > 1",
    "minus": "-" * 19_000 + "1",
    "nested-parens": "(not " * 3_000 + "si.layoffs > 1" + ")" * 3_000,
    "sum": " + ".join(["si.layoffs"] * 1_500) + " > 1",
    "if": "if si.layoffs > 1 then " * 500 + "true" + " else false" * 500,
    "list": "si.layoffs in [" * 1_000 + "1" + "]" * 1_000,
    "call": "max(" * 4_000 + "1" + ")" * 4_000,
}
# What the hardening issue names, far past the length bound: refused before parsing.
HUGE = {
    "open-parens": "(" * 100_000,
    "not": "not " * 100_000 + "si.layoffs > 1",
    "minus": "-" * 100_000 + "1",
    "or": " or ".join(["si.layoffs > 1"] * 100_000),
}


@pytest.mark.parametrize("text", DEEP.values(), ids=DEEP.keys())
def test_deep_nesting_is_a_syntax_error_with_line_and_column(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError) as raised:
        parse_expression(text, file="p.yaml", line=7)
    assert (raised.value.file, raised.value.line) == ("p.yaml", 7)
    assert raised.value.column is not None


@pytest.mark.parametrize("text", HUGE.values(), ids=HUGE.keys())
def test_an_expression_past_the_length_bound_is_refused_before_parsing(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError) as raised:
        parse_expression(text, file="p.yaml", line=7, column=9)
    assert (raised.value.file, raised.value.line, raised.value.column) == ("p.yaml", 7, 9)
    assert raised.value.reason == f"longer than {MAX_EXPRESSION_LENGTH} characters ({len(text)})"


def test_the_nesting_error_points_where_it_goes_too_deep() -> None:
    text = "not " * (MAX_NESTING + 50) + "si.layoffs > 1"
    with pytest.raises(ExpressionSyntaxError) as raised:
        parse_expression(text, file="p.yaml", line=3, column=5)
    assert raised.value.reason == f"nested more than {MAX_NESTING} operators deep"
    # the node MAX_NESTING + 1 deep: the first levels are the `not`s, four characters each
    assert (raised.value.line, raised.value.column) == (3, 5 + 4 * MAX_NESTING)


def test_nesting_up_to_the_bound_is_parsed_checked_and_compiled(tmp_path: Path) -> None:
    """A sum of 99 terms (99 levels: the sums are left-nested, the comparison is one more)."""
    expr = " + ".join(["si.layoffs"] * 99) + " > 1"
    assert load_text(tmp_path, policy_yaml([expr])).compiled(2025) is not None


def test_a_long_flat_or_is_no_nesting() -> None:
    assert parse_expression(" or ".join(["si.layoffs > 1"] * 1_000)) is not None


def test_an_integer_of_more_digits_than_python_converts_is_a_syntax_error() -> None:
    with pytest.raises(ExpressionSyntaxError) as raised:
        parse_expression("1" * 5_000 + " > si.layoffs", file="p.yaml", line=2)
    assert (raised.value.line, raised.value.column) == (2, 1)
    assert raised.value.reason == "a number of 5000 digits is too long"


@pytest.mark.parametrize("text", [*DEEP.values(), *HUGE.values()], ids=[*DEEP, *(f"huge-{k}" for k in HUGE)])
def test_deep_nesting_in_a_policy_file_names_the_file_and_the_line(tmp_path: Path, text: str) -> None:
    source = policy_yaml([text])
    with pytest.raises(PolicyFileError) as raised:
        load_text(tmp_path, source)
    assert raised.value.file == str(tmp_path / "demo.yaml")
    assert raised.value.line == position_of(source, text[:20])[0]


def _parse_and_check(text: str) -> None:
    try:
        check(parse_expression(text, file="p.yaml", line=4), SCOPE)
    except PolicyFileError as exc:
        assert exc.file == "p.yaml"
        assert exc.line is not None and exc.line >= 4


@FUZZ
@given(st.text(max_size=200))
def test_any_text_parses_and_checks_or_is_a_policy_file_error(text: str) -> None:
    _parse_and_check(text)


# Text made of the language's own pieces: far more of it parses, and parses deep.
_TOKENS = st.sampled_from(
    [
        *"()[],.+-*/<>",
        "==",
        "!=",
        "<=",
        ">=",
        "not",
        "and",
        "or",
        "in",
        "is",
        "missing",
        "present",
        "if",
        "then",
        "else",
        "count",
        "where",
        "date",
        "true",
        "false",
        "1",
        "0",
        "99999999999999999999",
        "1.5",
        "60%",
        "1500元",
        "1.5万元",
        '"large"',
        '"2025-02-30"',
        "si.layoffs",
        "si.insured_start",
        "enterprise.size_class",
        "params.rate",
        "params.count",
        "period",
        "today",
        "x",
        "year",
        "ratio",
        "min",
        "max",
        "tier",
        "\n",
        "#",
    ]
)


@FUZZ
@given(st.lists(_TOKENS, max_size=60))
def test_any_sequence_of_tokens_parses_and_checks_or_is_a_policy_file_error(tokens: list[str]) -> None:
    _parse_and_check(" ".join(tokens))


@FUZZ
@given(st.lists(_TOKENS, min_size=1, max_size=30), st.integers(min_value=1, max_value=400))
def test_any_token_sequence_repeated_deep_is_a_policy_file_error_or_parses(tokens: list[str], times: int) -> None:
    _parse_and_check(" ".join(tokens) * times)


@FUZZ
@given(st.lists(_TOKENS, max_size=40))
def test_any_expression_in_a_policy_loads_or_is_a_policy_file_error(tokens: list[str]) -> None:
    expr = " ".join(tokens).replace("\n", " ") or "true"
    try:
        load_policy_text(policy_yaml([expr]).encode(), CATALOGUE, origin="demo.yaml")
    except PolicyFileError as exc:
        assert exc.file == "demo.yaml"
        assert exc.line is not None


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_as_a_policy_file_load_or_are_a_policy_file_error(raw: bytes) -> None:
    try:
        load_policy_text(raw, CATALOGUE, origin="demo.yaml")
    except PolicyFileError as exc:
        assert exc.file == "demo.yaml"


@FUZZ
@given(st.data())
def test_a_valid_policy_with_any_line_cut_or_mangled_loads_or_is_a_policy_file_error(data: st.DataObject) -> None:
    lines = policy_yaml(["si.layoffs > 1", 'enterprise.size_class in ["small", "micro"]']).splitlines()
    index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
    lines[index] = data.draw(
        st.text(max_size=40) | st.sampled_from(["", "  - ", ":", "- [", "&a *a", "!!python/object:x"])
    )
    try:
        load_policy_text("\n".join(lines).encode(), CATALOGUE, origin="demo.yaml")
    except PolicyFileError as exc:
        assert exc.file == "demo.yaml"


_LAUGHS = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefg", "bcdefgh")
)
HOSTILE_YAML = {
    # (text, line of the error)
    "nul": ("id: demo\ntitle: a\x00b\n", 2),
    "control-character": ("id: demo\n\x07: 1\n", 2),
    "deep-flow": ("id: demo\nx: " + "[" * 100_000, 2),
    # the document is level 1, `x:`'s sequence on line 3 level 2: the line where it goes too deep
    "deep-block": ("id: demo\nx:\n" + "".join(" " * i + "-\n" for i in range(0, 400, 2)), YAML_DEPTH + 2),
    "deep-mapping": ("id: demo\nx: " + "{a: " * 3_000 + "1" + "}" * 3_000, 2),
    "recursive-alias": ("id: demo\nx: &a [*a]\n", 2),
    "billion-laughs": (_LAUGHS, 1),
    "bad-date": ("id: demo\nx: 2025-13-01\n", 2),
    "bad-int-tag": ("id: demo\nx: !!int 12x\n", 2),
    "bad-float-tag": ("id: demo\nx: !!float x\n", 2),
    "bad-timestamp-tag": ("id: demo\nx: !!timestamp x\n", 2),
    "bad-binary-tag": ("id: demo\nx: !!binary xx\n", 2),
    "unknown-tag": ("id: demo\nx: !foo 1\n", 2),
    "bad-key": ("id: demo\n!!int x: 1\n", 2),
}


@pytest.mark.parametrize(("text", "line"), HOSTILE_YAML.values(), ids=HOSTILE_YAML.keys())
def test_hostile_yaml_is_a_policy_file_error_on_its_line(text: str, line: int) -> None:
    with pytest.raises(PolicyFileError) as raised:
        load_policy_text(text.encode(), CATALOGUE, origin="demo.yaml")
    assert (raised.value.file, raised.value.line) == ("demo.yaml", line)


def test_a_shipped_test_file_with_aliases_stays_within_the_yaml_bounds() -> None:
    """The bounds leave room for what policies and their test files do (anchors and aliases)."""
    for path in sorted(Path(__file__).resolve().parents[3].joinpath("rules", "policies").glob("*.yaml")):
        assert load(path.read_text(encoding="utf-8"), str(path)).data
