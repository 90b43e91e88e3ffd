"""Parser of the policy expression language: text -> `rules.ast` tree, with line:column errors."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import cast

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, VisitError

from rules import ast
from rules.definitions import MAX_DEPTH
from rules.errors import ExpressionSyntaxError

_GRAMMAR = Path(__file__).with_name("grammar.lark")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
FEN_PER_YUAN = 100
FEN_PER_WAN_YUAN = 1_000_000
# How deep a parse tree may nest (`not not ...`, `- - ...`, `a + b + ...`, each level of
# parentheses around an operator): checked without recursion, before the tree is turned into
# ours by recursion (a few frames a level; Python allows 1000). Twice the language's own bound,
# `rules.definitions.MAX_DEPTH`, which is checked on our tree with every definition written out
# and keeps the type checker, compiler and engine far from the limit.
MAX_NESTING = 2 * MAX_DEPTH
# Longer expressions are refused before parsing: a policy's longest is a few hundred characters,
# and parsing 100,000 tokens takes seconds even when nesting refuses them afterwards.
MAX_EXPRESSION_LENGTH = 20_000


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(_GRAMMAR.read_text(encoding="utf-8"), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_expression(
    text: str, *, file: str = "<expression>", line: int = 1, column: int = 1, indent: int = 0
) -> ast.Expr:
    """Parse one expression. `line`/`column` say where the text starts in its file, and
    `indent` how much indentation YAML removed from its continuation lines (block scalars),
    so that errors and node positions point into the policy file, not into the snippet."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionSyntaxError(
            file, line, f"longer than {MAX_EXPRESSION_LENGTH} characters ({len(text)})", column=column
        )
    try:
        tree = _parser().parse(text)
        deep = _too_deep(tree)
        if deep is not None:  # before any recursion over the tree
            err_line, err_col = _shift(deep.meta.line, deep.meta.column, line, column, indent)
            raise ExpressionSyntaxError(
                file, err_line, f"nested more than {MAX_NESTING} operators deep", column=err_col
            )
        return _ToAst(line, column, indent).transform(tree)  # type: ignore[no-any-return]
    except UnexpectedInput as exc:
        err_line, err_col = _shift(exc.line, exc.column, line, column, indent)
        raise ExpressionSyntaxError(file, err_line, _describe(exc, text), column=err_col) from None
    except VisitError as exc:
        original = exc.orig_exc
        if isinstance(original, _LiteralError):
            err_line, err_col = _shift(original.line, original.column, line, column, indent)
            raise ExpressionSyntaxError(file, err_line, original.reason, column=err_col) from None
        raise


def parse_literal(text: str, *, file: str = "<parameter>", line: int = 1) -> ast.Literal:
    """Parse a parameter value written as a literal (`60%`, `1500元`, `12`, `"large"`)."""
    node = parse_expression(text, file=file, line=line)
    if isinstance(node, ast.Unary) and node.op == "-" and isinstance(node.operand, ast.Literal):
        value = node.operand.value
        if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            return ast.Literal(-value, node.pos)
    if not isinstance(node, ast.Literal):
        raise ExpressionSyntaxError(file, line, f"expected a constant value, got {text!r}")
    return node


def _too_deep(tree: Tree[Token]) -> Tree[Token] | None:
    """The first node nested deeper than MAX_NESTING, found without recursion."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return node
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))
    return None


def _shift(err_line: int, err_col: int, line: int, column: int, indent: int = 0) -> tuple[int, int]:
    if err_line <= 1:
        return line, column + err_col - 1
    return line + err_line - 1, err_col + indent


def _describe(exc: UnexpectedInput, text: str) -> str:
    if isinstance(exc, UnexpectedEOF):
        return "expression ends too early"
    if isinstance(exc, UnexpectedCharacters):
        position = exc.pos_in_stream
        char = text[position] if position is not None and position < len(text) else "?"
        return f"unexpected character {char!r}"
    token = getattr(exc, "token", None)
    if token is not None and getattr(token, "type", "") == "$END":
        return "expression ends too early"
    expected = sorted(getattr(exc, "expected", []) or [])[:6]
    hint = f" (expected one of: {', '.join(expected)})" if expected else ""
    return f"unexpected {str(token)!r}{hint}"


class _LiteralError(Exception):
    def __init__(self, reason: str, line: int, column: int) -> None:
        self.reason, self.line, self.column = reason, line, column


def _pos(meta_or_token: object, line: int, column: int, indent: int) -> ast.Pos:
    raw_line = getattr(meta_or_token, "line", 1) or 1
    raw_col = getattr(meta_or_token, "column", 1) or 1
    return ast.Pos(*_shift(raw_line, raw_col, line, column, indent))


@v_args(meta=True)
class _ToAst(Transformer):  # type: ignore[type-arg]
    def __init__(self, line: int, column: int, indent: int) -> None:
        super().__init__()
        self._line, self._column, self._indent = line, column, indent

    def _p(self, meta: object) -> ast.Pos:
        return _pos(meta, self._line, self._column, self._indent)

    def _fail(self, reason: str, token: Token) -> _LiteralError:
        return _LiteralError(reason, token.line or 1, token.column or 1)

    # literals
    def int_lit(self, meta: object, children: list[Token]) -> ast.Literal:
        try:
            value = int(children[0])
        except ValueError:  # Python converts at most 4300 digits
            raise self._fail(f"a number of {len(children[0])} digits is too long", children[0]) from None
        return ast.Literal(value, self._p(meta))

    def dec_lit(self, meta: object, children: list[Token]) -> ast.Literal:
        return ast.Literal(Decimal(str(children[0])), self._p(meta))

    def pct_lit(self, meta: object, children: list[Token]) -> ast.Literal:
        return ast.Literal(Decimal(str(children[0])[:-1]) / 100, self._p(meta))

    def money_lit(self, meta: object, children: list[Token]) -> ast.Literal:
        token = children[0]
        text = str(token)
        unit = FEN_PER_WAN_YUAN if text.endswith("万元") else FEN_PER_YUAN
        number = Decimal(text.removesuffix("万元").removesuffix("元"))
        fen = number * unit
        if fen != fen.to_integral_value():
            raise self._fail(f"{text} is not a whole number of fen", token)
        return ast.Literal(int(fen), self._p(meta))

    def str_lit(self, meta: object, children: list[Token]) -> ast.Literal:
        return ast.Literal(str(children[0])[1:-1], self._p(meta))

    def true_lit(self, meta: object, _children: list[object]) -> ast.Literal:
        return ast.Literal(True, self._p(meta))

    def false_lit(self, meta: object, _children: list[object]) -> ast.Literal:
        return ast.Literal(False, self._p(meta))

    def date_lit(self, meta: object, children: list[Token]) -> ast.Literal:
        token = children[0]
        try:
            if not _ISO_DATE.fullmatch(str(token)[1:-1]):
                raise ValueError("not YYYY-MM-DD")
            value = date.fromisoformat(str(token)[1:-1])
        except ValueError:
            raise self._fail(f"not a real date: {token!s}", token) from None
        return ast.Literal(value, self._p(meta))

    # names and calls
    def name(self, meta: object, children: list[Token]) -> ast.Name:
        return ast.Name(tuple(str(c) for c in children), self._p(meta))

    def call(self, meta: object, children: list[object]) -> ast.Call:
        function, *args = children
        return ast.Call(str(function), tuple(cast(ast.Expr, a) for a in args if a is not None), self._p(meta))

    def count(self, meta: object, children: list[object]) -> ast.Count:
        variable, collection, where = children
        return ast.Count(str(variable), str(collection), where, self._p(meta))  # type: ignore[arg-type]

    # operators
    def neg(self, meta: object, children: list[ast.Expr]) -> ast.Expr:
        return ast.Unary("-", children[0], self._p(meta))

    def arith(self, meta: object, children: list[object]) -> ast.Binary:
        left, op, right = children
        return ast.Binary(str(op), left, right, self._p(meta))  # type: ignore[arg-type]

    def compare(self, meta: object, children: list[object]) -> ast.Binary:
        left, op, right = children
        return ast.Binary(str(op), left, right, self._p(meta))  # type: ignore[arg-type]

    def member(self, meta: object, children: list[object]) -> ast.Membership:
        subject, options = children
        return ast.Membership(subject, tuple(options), False, self._p(meta))  # type: ignore[arg-type]

    def not_member(self, meta: object, children: list[object]) -> ast.Membership:
        subject, options = children
        return ast.Membership(subject, tuple(options), True, self._p(meta))  # type: ignore[arg-type]

    def options(self, meta: object, children: list[object]) -> list[object]:  # `[a, b, ...]` after `in`
        return [c for c in children if c is not None]

    def is_missing(self, meta: object, children: list[ast.Expr]) -> ast.Presence:
        return ast.Presence(children[0], False, self._p(meta))

    def is_present(self, meta: object, children: list[ast.Expr]) -> ast.Presence:
        return ast.Presence(children[0], True, self._p(meta))

    def not_(self, meta: object, children: list[ast.Expr]) -> ast.Unary:
        return ast.Unary("not", children[0], self._p(meta))

    def and_(self, meta: object, children: list[ast.Expr]) -> ast.Logical:
        return ast.Logical("and", tuple(children), self._p(meta))

    def or_(self, meta: object, children: list[ast.Expr]) -> ast.Logical:
        return ast.Logical("or", tuple(children), self._p(meta))

    def conditional(self, meta: object, children: list[ast.Expr]) -> ast.Conditional:
        condition, then, otherwise = children
        return ast.Conditional(condition, then, otherwise, self._p(meta))
