"""Static checks of expressions: every name known, every operator applied to the right types."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

from rules import ast
from rules.errors import ExpressionTypeError
from rules.facts import Catalogue

CONTEXT = {"period": "int", "fact_year": "int", "today": "date"}
NUMERIC = frozenset({"int", "decimal"})
FUNCTIONS = ("year", "ratio", "min", "max", "tier")


@dataclass(frozen=True)
class Scope:
    catalogue: Catalogue
    params: Mapping[str, str]  # parameter name -> type ("int", "decimal", "tiers[int]", ...)
    file: str
    locals: Mapping[str, str] = field(default_factory=dict)  # count variable -> collection
    param_values: Mapping[str, tuple[object, ...]] = field(default_factory=dict)
    definitions: Mapping[str, str] = field(default_factory=dict)  # definition name -> its type

    def bind(self, variable: str, collection: str) -> Scope:
        return replace(self, locals={**self.locals, variable: collection})

    def with_definitions(self, definitions: Mapping[str, str]) -> Scope:
        return replace(self, definitions=definitions)


def literal_type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, str):
        return "str"
    if isinstance(value, date):
        return "date"
    raise TypeError(f"not a literal: {value!r}")


def check(node: ast.Expr, scope: Scope) -> str:
    """Return the type of `node`, or raise ExpressionTypeError at the offending position."""
    return _Checker(scope).type_of(node)


def enum_values(node: ast.Expr, scope: Scope) -> tuple[str, ...] | None:
    """The allowed values of an enumerated fact or record field, if `node` names one."""
    node = _unwrapped(node)
    if not isinstance(node, ast.Name):
        return None
    parts = node.parts
    if len(parts) == 2 and parts[0] in scope.locals:
        field_type = scope.catalogue.collections[scope.locals[parts[0]]].get(parts[1])
        return field_type.values if field_type else None
    fact = scope.catalogue.facts.get(node.dotted)
    return fact.values if fact else None


def _unwrapped(node: ast.Expr) -> ast.Expr:
    """What a definition stands for, through definitions that only name another term."""
    while isinstance(node, ast.Ref):
        node = node.expr
    return node


class _Checker:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def fail(self, node: ast.Expr, reason: str) -> ExpressionTypeError:
        return ExpressionTypeError(self.scope.file, node.pos.line, reason, column=node.pos.column)

    def type_of(self, node: ast.Expr) -> str:
        method = getattr(self, "_" + type(node).__name__.lower())
        return method(node)  # type: ignore[no-any-return]

    def _literal(self, node: ast.Literal) -> str:
        return literal_type(node.value)

    def _name(self, node: ast.Name) -> str:
        parts, scope = node.parts, self.scope
        if parts[0] == "params":
            if len(parts) != 2 or parts[1] not in scope.params:
                raise self.fail(node, f"unknown parameter {node.dotted!r}" + _suggest(parts[-1], scope.params))
            return scope.params[parts[1]]
        if parts[0] in scope.locals:
            fields = scope.catalogue.collections[scope.locals[parts[0]]]
            if len(parts) != 2 or parts[1] not in fields:
                raise self.fail(
                    node,
                    f"{scope.locals[parts[0]]} records have no field "
                    f"{'.'.join(parts[1:])!r}" + _suggest(parts[-1], fields),
                )
            return fields[parts[1]].kind
        if len(parts) == 1 and parts[0] in CONTEXT:
            return CONTEXT[parts[0]]
        fact = scope.catalogue.facts.get(node.dotted)
        if fact is None:
            if parts[0] in scope.catalogue.collections:
                raise self.fail(node, f"{parts[0]!r} is a collection: use count({parts[0][0]} in {parts[0]} where ...)")
            if len(parts) == 1:
                known = {**dict.fromkeys(scope.definitions), **scope.catalogue.facts}
                raise self.fail(
                    node,
                    f"unknown name {node.dotted!r}: not a definition of this file, "
                    "a fact, period, fact_year or today" + _suggest(node.dotted, known),
                )
            raise self.fail(node, f"unknown fact {node.dotted!r}" + _suggest(node.dotted, scope.catalogue.facts))
        return fact.kind

    def _ref(self, node: ast.Ref) -> str:
        return self.scope.definitions[node.name]  # checked once, where it is defined

    def _unary(self, node: ast.Unary) -> str:
        operand = self.type_of(node.operand)
        if node.op == "not":
            if operand != "bool":
                raise self.fail(node, f"'not' needs a true/false value, got {operand}")
            return "bool"
        if operand not in NUMERIC:
            raise self.fail(node, f"'-' needs a number, got {operand}")
        return operand

    def _binary(self, node: ast.Binary) -> str:
        left, right = self.type_of(node.left), self.type_of(node.right)
        op = node.op
        if op in ast.COMPARISONS:
            return self._comparison(node, left, right)
        if op in ("+", "-") and left == "date" and right == "int":
            return "date"
        if op == "-" and left == right == "date":
            return "int"
        if left not in NUMERIC or right not in NUMERIC:
            raise self.fail(node, f"'{op}' needs numbers, got {left} and {right}")
        if op == "/" or "decimal" in (left, right):
            return "decimal"
        return "int"

    def _comparison(self, node: ast.Binary, left: str, right: str) -> str:
        if "ratio" in (left, right):
            other = right if left == "ratio" else left
            if other not in NUMERIC or node.op in ("==", "!="):
                raise self.fail(node, "a ratio(...) can only be compared with <, <=, >, >= against a rate such as 5.5%")
            return "bool"
        comparable = left == right or {left, right} <= NUMERIC
        if not comparable:
            raise self.fail(node, f"cannot compare {left} with {right}")
        if node.op not in ("==", "!=") and left in ("str", "bool"):
            raise self.fail(
                node,
                f"'{node.op}' does not order {left} values (the engine compares "
                "strings byte by byte): use == or in [...]",
            )
        for subject, candidate in ((node.left, node.right), (node.right, node.left)):
            self._check_enum(subject, candidate)
        return "bool"

    def _check_enum(self, subject: ast.Expr, candidate: ast.Expr) -> None:
        allowed = enum_values(subject, self.scope)
        if not allowed:
            return
        named = _unwrapped(subject)
        assert isinstance(named, ast.Name)  # enum_values found its values through a name
        candidate = _unwrapped(candidate)  # a definition that is just a value or a parameter
        values: tuple[object, ...] = ()
        if isinstance(candidate, ast.Literal):
            values = (candidate.value,)
        elif isinstance(candidate, ast.Name) and candidate.parts[0] == "params" and len(candidate.parts) == 2:
            values = self.scope.param_values.get(candidate.parts[1], ())
        for value in values:
            if value not in allowed:
                raise self.fail(candidate, f"{value!r} is not a value of {named.dotted}: one of {', '.join(allowed)}")

    def _logical(self, node: ast.Logical) -> str:
        for operand in node.operands:
            kind = self.type_of(operand)
            if kind != "bool":
                raise self.fail(operand, f"'{node.op}' needs true/false values, got {kind}")
        return "bool"

    def _membership(self, node: ast.Membership) -> str:
        subject = self.type_of(node.subject)
        if not node.options:
            raise self.fail(node, "an empty list: nothing can be in it")
        for option in node.options:
            kind = self.type_of(option)
            if kind != subject and {kind, subject} - NUMERIC:
                raise self.fail(option, f"list holds {kind}, but the value tested is {subject}")
            self._check_enum(node.subject, option)
        return "bool"

    def _presence(self, node: ast.Presence) -> str:
        if not isinstance(node.subject, ast.Name):
            raise self.fail(node, "'is missing'/'is present' applies to a fact name")
        self.type_of(node.subject)
        return "bool"

    def _conditional(self, node: ast.Conditional) -> str:
        if self.type_of(node.condition) != "bool":
            raise self.fail(node.condition, "the condition of 'if' must be true/false")
        then, otherwise = self.type_of(node.then), self.type_of(node.otherwise)
        if then == otherwise:
            return then
        if {then, otherwise} <= NUMERIC:
            return "decimal"
        raise self.fail(node, f"'then' gives {then} but 'else' gives {otherwise}")

    def _count(self, node: ast.Count) -> str:
        if node.collection not in self.scope.catalogue.collections:
            raise self.fail(
                node,
                f"unknown collection {node.collection!r}" + _suggest(node.collection, self.scope.catalogue.collections),
            )
        if node.where is not None:
            inner = _Checker(self.scope.bind(node.variable, node.collection))
            if inner.type_of(node.where) != "bool":
                raise self.fail(node.where, "the 'where' filter must be true/false")
        return "int"

    def _call(self, node: ast.Call) -> str:
        args = [self.type_of(a) for a in node.args]
        name = node.function
        if name == "year" and args == ["date"]:
            return "int"
        if name == "ratio" and args == ["int", "int"]:
            return "ratio"
        if name in ("min", "max") and len(args) == 2 and set(args) <= NUMERIC:
            return "int" if args == ["int", "int"] else "decimal"
        if name == "tier" and len(args) == 2 and args[0] == "int" and args[1].startswith("tiers["):
            return args[1][len("tiers[") : -1]
        if name not in FUNCTIONS:
            raise self.fail(node, f"unknown function {name!r} (known: {', '.join(FUNCTIONS)})")
        usage = {
            "year": "year(date)",
            "ratio": "ratio(count, count)",
            "min": "min(number, number)",
            "max": "max(number, number)",
            "tier": "tier(amount, params.<tier table>)",
        }[name]
        raise self.fail(node, f"{name}() is used as {usage}; got ({', '.join(args)})")


def _suggest(name: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
