"""Independent, three-valued (Kleene) evaluation of expressions over a facts document.

This is the trace: it records every value a clause read, and it decides each clause without the
engine, so that the engine's decision can be cross-checked. Numbers stay exact (int, Fraction).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

from rules import ast
from rules.facts import FactsDocument, Record
from rules.values import Truth


class _Unknown:
    """A value that cannot be known from the facts on record (three-valued logic's third value)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
Value = int | Fraction | str | bool | date | _Unknown


@dataclass(frozen=True)
class Tiers:
    """A tier table: steps of (inclusive upper bound or None, value), in ascending order."""

    steps: tuple[tuple[int | None, int | Fraction], ...]

    def pick(self, amount: int) -> int | Fraction:
        for up_to, value in self.steps:
            if up_to is None or amount <= up_to:
                return value
        raise ValueError("tier table has no step for this amount")


ParamValue = int | Fraction | str | bool | date | Tiers


@dataclass
class Reads:
    """What one clause or formula read: fact names in order, collections with counts, notes,
    and the named terms (definitions) it used with their values, in order of first use."""

    facts: list[str] = field(default_factory=list)
    collections: dict[str, tuple[int, list[str]]] = field(default_factory=dict)  # n records, matched refs
    notes: list[str] = field(default_factory=list)
    terms: dict[str, Value] = field(default_factory=dict)

    def add_fact(self, name: str) -> None:
        if name not in self.facts:
            self.facts.append(name)

    def add(self, other: Reads) -> None:
        """What a definition read, as read by the clause using it."""
        for name in other.facts:
            self.add_fact(name)
        self.collections.update(other.collections)
        self.notes.extend(note for note in other.notes if note not in self.notes)
        for name, value in other.terms.items():
            self.terms.setdefault(name, value)


class Interpreter:
    """Evaluates expressions for one document, one period and one evaluation date."""

    def __init__(self, document: FactsDocument, params: Mapping[str, ParamValue], *, period: int, today: date) -> None:
        self.document = document
        self.params = params
        self.context: dict[str, Value] = {"period": period, "fact_year": document.fact_year, "today": today}
        self._terms: dict[str, tuple[Value, Reads]] = {}  # definitions evaluated so far

    def evaluate(self, node: ast.Expr, reads: Reads | None = None) -> Value:
        return _Run(self, reads if reads is not None else Reads(), {}).value_of(node)

    def term(self, node: ast.Ref) -> tuple[Value, Reads]:
        """A definition's value and what it read, computed once per interpreter (a definition
        reads no record variable, so its value is the same wherever it is used)."""
        if node.name not in self._terms:
            reads = Reads()
            self._terms[node.name] = (self.evaluate(node.expr, reads), reads)
        return self._terms[node.name]


def truth(value: Value) -> Truth:
    """A condition's value as a clause's truth."""
    if value is UNKNOWN:
        return Truth.UNKNOWN
    return Truth.TRUE if value is True else Truth.FALSE


def as_number(value: int | Decimal | Fraction) -> int | Fraction:
    return Fraction(value) if isinstance(value, Decimal) else value


class _Run:
    def __init__(self, interp: Interpreter, reads: Reads, local: dict[str, Record]) -> None:
        self.interp, self.reads, self.local = interp, reads, local

    def value_of(self, node: ast.Expr) -> Value:
        return getattr(self, "_" + type(node).__name__.lower())(node)  # type: ignore[no-any-return]

    def _literal(self, node: ast.Literal) -> Value:
        value = node.value
        return Fraction(value) if isinstance(value, Decimal) else value

    def _name(self, node: ast.Name) -> Value:
        parts = node.parts
        if parts[0] == "params":
            value = self.interp.params[parts[1]]
            assert not isinstance(value, Tiers)
            return value
        if parts[0] in self.local:
            raw = self.local[parts[0]].fields.get(parts[1])
            return UNKNOWN if raw is None else raw
        if len(parts) == 1 and parts[0] in self.interp.context:
            return self.interp.context[parts[0]]
        self.reads.add_fact(node.dotted)
        fact = self.interp.document.facts.get(node.dotted)
        return UNKNOWN if fact is None else fact.value

    def _ref(self, node: ast.Ref) -> Value:
        value, reads = self.interp.term(node)
        self.reads.add(reads)
        self.reads.terms.setdefault(node.name, value)
        return value

    def _unary(self, node: ast.Unary) -> Value:
        value = self.value_of(node.operand)
        if value is UNKNOWN:
            return UNKNOWN
        if node.op == "not":
            return not value
        return -value  # type: ignore[operator]

    def _binary(self, node: ast.Binary) -> Value:
        left, right = self.value_of(node.left), self.value_of(node.right)
        if left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN
        op = node.op
        if op in ast.COMPARISONS:
            return _compare(op, left, right)
        if isinstance(left, date):
            if isinstance(right, date):
                return (left - right).days
            assert isinstance(right, int)  # the type checker admits date +/- int days only
            return left + timedelta(days=right) if op == "+" else left - timedelta(days=right)
        assert isinstance(left, int | Fraction) and isinstance(right, int | Fraction)  # numbers, as type-checked
        if op == "+":
            return _norm(left + right)
        if op == "-":
            return _norm(left - right)
        if op == "*":
            return _norm(left * right)
        if right == 0:
            self.reads.notes.append("division by zero")
            return UNKNOWN
        return _norm(Fraction(left) / Fraction(right))

    def _logical(self, node: ast.Logical) -> Value:
        values = [self.value_of(operand) for operand in node.operands]  # all: the trace shows every read
        decisive = node.op == "or"
        if decisive in values:
            return decisive
        return UNKNOWN if UNKNOWN in values else (not decisive)

    def _membership(self, node: ast.Membership) -> Value:
        subject = self.value_of(node.subject)
        options = [self.value_of(option) for option in node.options]
        if subject is UNKNOWN:
            return UNKNOWN
        found = any(option is not UNKNOWN and option == subject for option in options)
        if not found and UNKNOWN in options:
            return UNKNOWN
        return found != node.negated

    def _presence(self, node: ast.Presence) -> Value:
        return (self.value_of(node.subject) is not UNKNOWN) == node.present

    def _conditional(self, node: ast.Conditional) -> Value:
        condition = self.value_of(node.condition)
        if condition is UNKNOWN:
            # Both branches could apply: the trace shows what each reads, and when they agree
            # the answer does not depend on the unknown condition.
            then, otherwise = self.value_of(node.then), self.value_of(node.otherwise)
            return then if then is not UNKNOWN and then == otherwise else UNKNOWN
        return self.value_of(node.then) if condition else self.value_of(node.otherwise)

    def _count(self, node: ast.Count) -> Value:
        records = self.interp.document.collections.get(node.collection, ())
        matched: list[str] = []
        unsure = False
        for record in records:
            if node.where is None:
                matched.append(record.ref)
                continue
            inner = _Run(self.interp, self.reads, {**self.local, node.variable: record})
            verdict = inner.value_of(node.where)
            if verdict is True:
                matched.append(record.ref)
            elif verdict is UNKNOWN:
                unsure = True
                self.reads.notes.append(f"{record.ref}: a value the filter needs is not on record")
        self.reads.collections[node.collection] = (len(records), matched)
        return UNKNOWN if unsure else len(matched)

    def _call(self, node: ast.Call) -> Value:
        name = node.function
        if name == "tier":
            amount = self.value_of(node.args[0])
            table = self.interp.params[node.args[1].parts[1]]  # type: ignore[union-attr]
            assert isinstance(table, Tiers)
            return UNKNOWN if amount is UNKNOWN else table.pick(amount)  # type: ignore[arg-type]
        args = [self.value_of(arg) for arg in node.args]
        if UNKNOWN in args:
            return UNKNOWN
        if name == "year":
            return args[0].year  # type: ignore[union-attr]
        if name == "ratio":
            numerator, denominator = args
            if denominator <= 0:  # type: ignore[operator]
                self.reads.notes.append(f"ratio undefined: {_show(node.args[1])} is {denominator}")
                return UNKNOWN
            return Fraction(numerator, denominator)  # type: ignore[arg-type]
        if name == "min":
            return min(args)  # type: ignore[type-var]
        if name == "max":
            return max(args)  # type: ignore[type-var]
        raise AssertionError(f"unchecked function {name}")


def _compare(op: str, left: Value, right: Value) -> bool:
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if op == "<":
        return left < right  # type: ignore[operator]
    if op == "<=":
        return left <= right  # type: ignore[operator]
    if op == ">":
        return left > right  # type: ignore[operator]
    return left >= right  # type: ignore[operator]


def _norm(value: int | Fraction) -> int | Fraction:
    if isinstance(value, Fraction) and value.denominator == 1:
        return int(value)
    return value


def _show(node: ast.Expr) -> str:
    return node.dotted if isinstance(node, ast.Name) else type(node).__name__
