"""rules.parser: expression text -> AST, literal exactness, and errors located in the policy file."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest

from rules import ast
from rules.errors import ExpressionSyntaxError, ExpressionTypeError, PolicyFileError
from rules.parser import parse_expression, parse_literal
from rules.typecheck import Scope, check
from service.catalogue import CATALOGUE

P = ast.Pos(0, 0)  # positions do not take part in node equality


def lit(value: int | Decimal | str | bool | date) -> ast.Literal:
    return ast.Literal(value, P)


def name(dotted: str) -> ast.Name:
    return ast.Name(tuple(dotted.split(".")), P)


def binary(op: str, left: ast.Expr, right: ast.Expr) -> ast.Binary:
    return ast.Binary(op, left, right, P)


def literal_types(node: ast.Expr) -> list[type]:
    """The Python types of every literal in the tree (equality alone says 1 == True == 1.0)."""
    return [type(n.value) for n in ast.walk(node) if isinstance(n, ast.Literal)]


CONSTRUCTS: list[tuple[str, ast.Expr]] = [
    ("42", lit(42)),
    ("007", lit(7)),
    ("1.5", lit(Decimal("1.5"))),
    ("5.5%", lit(Decimal("0.055"))),
    ("1500元", lit(150_000)),
    ("30万元", lit(30_000_000)),
    ('"active"', lit("active")),
    ('"中文 #not a comment"', lit("中文 #not a comment")),
    ("true", lit(True)),
    ("false", lit(False)),
    ('date("2024-02-29")', lit(date(2024, 2, 29))),
    ("si.layoffs", name("si.layoffs")),
    ("period", name("period")),
    ("params.sme_rate", name("params.sme_rate")),
    ("year(today)", ast.Call("year", (name("today"),), P)),
    ("min(1, si.layoffs)", ast.Call("min", (lit(1), name("si.layoffs")), P)),
    ("f()", ast.Call("f", (), P)),
    ("count(h in hires)", ast.Count("h", "hires", None, P)),
    ("count(h in hires where h.age < 35)", ast.Count("h", "hires", binary("<", name("h.age"), lit(35)), P)),
    ("-si.layoffs", ast.Unary("-", name("si.layoffs"), P)),
    ("not a", ast.Unary("not", name("a"), P)),
    ("not not a", ast.Unary("not", ast.Unary("not", name("a"), P), P)),
    ("1 + 2 * 3", binary("+", lit(1), binary("*", lit(2), lit(3)))),
    ("(1 + 2) * 3", binary("*", binary("+", lit(1), lit(2)), lit(3))),
    ("1 - 2 - 3", binary("-", binary("-", lit(1), lit(2)), lit(3))),
    ("8 / 4 / 2", binary("/", binary("/", lit(8), lit(4)), lit(2))),
    ("a == 1", binary("==", name("a"), lit(1))),
    ("a != 1", binary("!=", name("a"), lit(1))),
    ("a < 1", binary("<", name("a"), lit(1))),
    ("a <= 1", binary("<=", name("a"), lit(1))),
    ("a > 1", binary(">", name("a"), lit(1))),
    ("a >= 1", binary(">=", name("a"), lit(1))),
    ("a + 1 >= b * 2", binary(">=", binary("+", name("a"), lit(1)), binary("*", name("b"), lit(2)))),
    ('x in ["a", "b"]', ast.Membership(name("x"), (lit("a"), lit("b")), False, P)),
    ('x not in ["a"]', ast.Membership(name("x"), (lit("a"),), True, P)),
    ("x is missing", ast.Presence(name("x"), False, P)),
    ("x is present", ast.Presence(name("x"), True, P)),
    ("a and b", ast.Logical("and", (name("a"), name("b")), P)),
    ("a and b and c", ast.Logical("and", (name("a"), name("b"), name("c")), P)),
    ("a or b and c", ast.Logical("or", (name("a"), ast.Logical("and", (name("b"), name("c")), P)), P)),
    ("not a and b", ast.Logical("and", (ast.Unary("not", name("a"), P), name("b")), P)),
    ("not a == 1", ast.Unary("not", binary("==", name("a"), lit(1)), P)),
    ("if a then 1 else 2", ast.Conditional(name("a"), lit(1), lit(2), P)),
    (
        "if a then 1 else if b then 2 else 3",
        ast.Conditional(name("a"), lit(1), ast.Conditional(name("b"), lit(2), lit(3), P), P),
    ),
    ("a # a comment\n and b", ast.Logical("and", (name("a"), name("b")), P)),
]


@pytest.mark.parametrize(("text", "expected"), CONSTRUCTS, ids=[c[0] for c in CONSTRUCTS])
def test_construct_parses_to_expected_tree(text: str, expected: ast.Expr) -> None:
    tree = parse_expression(text)
    assert tree == expected
    assert literal_types(tree) == literal_types(expected)


@pytest.mark.parametrize(
    "word",
    [
        "android",
        "order",
        "notice",
        "index",
        "iffy",
        "island",
        "truely",
        "falsey",
        "counter",
        "date_x",
        "is_ok",
        "thenx",
        "elsewhere",
        "wherever",
        "missing_rate",
    ],
)
def test_names_that_start_with_a_keyword_are_names(word: str) -> None:
    assert parse_expression(f"{word} == 1") == binary("==", name(word), lit(1))


def test_node_positions_are_shifted_into_the_file() -> None:
    tree = parse_expression("a and\n  b == 1", file="p.yaml", line=10, column=9)
    assert isinstance(tree, ast.Logical)
    first, second = tree.operands
    assert first.pos == ast.Pos(10, 9)
    assert second.pos == ast.Pos(11, 3)
    assert isinstance(second, ast.Binary)
    assert second.right.pos == ast.Pos(11, 8)


# --- money and rates are exact ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("1500元", 150_000),
        ("30万元", 30_000_000),
        ("1.5万元", 1_500_000),
        ("0.01元", 1),
        ("1.23元", 123),
        ("0.000001万元", 1),
        ("2.5万元", 2_500_000),
        ("0元", 0),
    ],
)
def test_money_literal_is_whole_fen(text: str, fen: int) -> None:
    node = parse_expression(text)
    assert isinstance(node, ast.Literal)
    assert node.value == fen
    assert type(node.value) is int


@pytest.mark.parametrize("text", ["1.234元", "0.001元", "0.0000001万元", "1500 元", "1500元元"])
def test_money_literal_finer_than_a_fen_is_refused(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        parse_expression(text)


def test_sub_fen_money_error_names_the_reason_and_place() -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse_expression("x ==\n  1.234元", file="p.yaml", line=10, column=9)
    assert "not a whole number of fen" in info.value.reason
    assert (info.value.file, info.value.line, info.value.column) == ("p.yaml", 11, 3)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5.5%", Decimal("0.055")),
        ("33.333%", Decimal("0.33333")),
        ("0.1%", Decimal("0.001")),
        ("100%", Decimal(1)),
        ("20%", Decimal("0.2")),
    ],
)
def test_percent_literal_is_an_exact_decimal(text: str, value: Decimal) -> None:
    node = parse_expression(text)
    assert isinstance(node, ast.Literal)
    assert type(node.value) is Decimal
    assert node.value == value
    assert Fraction(node.value) == Fraction(str(value))


def test_percent_is_exact_not_binary_float() -> None:
    node = parse_expression("5.5%")
    assert isinstance(node, ast.Literal) and isinstance(node.value, Decimal)
    assert Fraction(node.value) == Fraction(11, 200)  # a float 0.055 would not be
    node = parse_expression("0.1")
    assert isinstance(node, ast.Literal) and node.value == Decimal("0.1")


@pytest.mark.parametrize(
    "text",
    [
        'date("2024-02-30")',
        'date("2023-02-29")',
        'date("2024-13-01")',
        'date("2024-00-10")',
        'date("2024-1-5")',
        'date("soon")',
    ],
)
def test_impossible_dates_are_refused_at_the_string(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse_expression(f"x <\n   {text}", file="p.yaml", line=4, column=11)
    assert "not a real date" in info.value.reason
    assert (info.value.line, info.value.column) == (5, 9)  # the string inside date(...)


def test_date_of_a_non_string_is_a_syntax_error() -> None:
    with pytest.raises(ExpressionSyntaxError):
        parse_expression("date(today)")


# --- syntax errors point into the file -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("a $ b", 10, 11),
        ("a and $", 10, 15),
        ("a == == b", 10, 14),
        ("a and\n  b $ c", 11, 5),
        ("a and\n  b or\n    c ] d", 12, 7),
        ('a ==\n date("2024-13-01")', 11, 7),
        ("1.234元", 10, 9),
        ("'single'", 10, 9),
        ('"unterminated', 10, 9),
        ("x in [1, 2,]", 10, 20),
        ("1 < 2 < 3", 10, 15),
    ],
)
def test_syntax_error_carries_file_line_and_column(text: str, line: int, column: int) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse_expression(text, file="policies/p.yaml", line=10, column=9)
    error = info.value
    assert isinstance(error, PolicyFileError)
    assert (error.file, error.line, error.column) == ("policies/p.yaml", line, column)
    assert str(error).startswith(f"policies/p.yaml:{line}:{column}:")


@pytest.mark.parametrize(
    ("text", "line"), [("", 10), ("(a", 10), ("a and", 10), ("a and\n  b ==", 11), ("count(h in hires where)", 10)]
)
def test_incomplete_expression_is_refused_on_its_line(text: str, line: int) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse_expression(text, file="p.yaml", line=10, column=9)
    assert info.value.line == line


@pytest.mark.parametrize(
    "text",
    [
        "1e5",
        "0x10",
        "1_000",
        "2 ** 3",
        "a; b",
        "x[0]",
        "lambda: 1",
        "[x for x in y]",
        "1 if a else 2",
        "a.b()",
        "a = 1",
        '__import__("os").system("true")',
        "a && b",
        "a || b",
        "!a",
    ],
)
def test_python_syntax_is_not_the_expression_language(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        parse_expression(text)


@pytest.mark.parametrize(
    "text", ['__import__("os")', 'eval("1 + 1")', 'exec("x = 1")', 'open("/etc/passwd")', 'getattr(today, "year")']
)
def test_python_builtins_are_unknown_functions_not_executed(text: str) -> None:
    tree = parse_expression(text)
    assert isinstance(tree, ast.Call)  # parsed to data, nothing ran
    scope = Scope(CATALOGUE, {}, "p.yaml")
    with pytest.raises(ExpressionTypeError) as info:
        check(tree, scope)
    assert "unknown function" in info.value.reason


def test_dunder_attribute_is_just_an_unknown_fact() -> None:
    tree = parse_expression("enterprise.__class__ == 1")
    with pytest.raises(ExpressionTypeError, match="unknown fact"):
        check(tree, Scope(CATALOGUE, {}, "p.yaml"))


# --- parameter literals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("-1500元", -150_000),
        ("60%", Decimal("0.6")),
        ("-5.5%", Decimal("-0.055")),
        ('"large"', "large"),
        ("12", 12),
        ("true", True),
        ('date("2025-01-01")', date(2025, 1, 1)),
    ],
)
def test_parse_literal(text: str, value: object) -> None:
    node = parse_literal(text)
    assert node.value == value
    assert type(node.value) is type(value)


@pytest.mark.parametrize("text", ["a + 1", "x", "--5", "params.rate", "1 + 1"])
def test_parse_literal_refuses_non_constants(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError, match="expected a constant"):
        parse_literal(text, file="p.yaml", line=3)
