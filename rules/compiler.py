"""Compiles a policy, for one period, into a durable-rules ruleset plus the clauses it decides.

Each clause becomes one rule (`c0`, `c1`, ... and `p0`, ... for payability), rule `seen`
matches every evaluation so that no fact is ever unhandled, and rule `all` decides eligibility
from a second fact that records which condition rules fired. Conditions are put in negation
normal form, and every field read inside arithmetic must be present, so that durable-rules'
"a missing field makes a comparison false" coincides exactly with "the clause is not known to
be true".
Named definitions (`rules.definitions`) are inlined first.
Sub-expressions the engine cannot compute (counts over records, year(), min/max, tiers) become
precomputed terms; everything else - comparisons, arithmetic, and/or/not, membership, presence -
is evaluated by the engine. The compiler refuses what would crash or mislead durable-rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeGuard, cast

from rules import ast
from rules.errors import EngineLimitError
from rules.facts import DEFAULT_MAX_ABS
from rules.interpreter import ParamValue, Tiers, Value

# Limits measured on durable-rules 2.0.28 (docs/durable-rules-limits.md): 64 sibling rules matching one fact fail
# with error 303, 253 properties per fact with 302, more than 512 rules loop forever.
MAX_RULES = 60
MAX_PROPERTIES = 200
MAX_STRING = 1000
# Tests (comparisons, connectives) of one clause's engine form. An `if` in a true/false position is
# written (c and a) or (not c and b) or (a and b), each branch twice, so nested ifs double it per
# level: 14 levels of 73 terms gave 2.5 MB of ruleset JSON, 18 took ~50 s to load before durable-rules
# refused them. The reference pack's largest clause needs 5 (stable-jobs-refund).
MAX_CLAUSE_TESTS = 500
INT64_MAX = 2**63 - 1

DECISION = "_decision"  # marks the second fact of an evaluation (see compile_ruleset)
TRUE_JSON: dict[str, Any] = {"$ex": {"_eval": 1}}
FALSE_JSON: dict[str, Any] = {"$nex": {"_eval": 1}}
_OPS = {"==": "$eq", "!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_NEGATED = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_MIRRORED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ARITH = {"+": "$add", "-": "$sub", "*": "$mul"}


@dataclass(frozen=True)
class Clause:
    id: str
    text: str
    citation: str
    expr: ast.Expr
    rule: str  # the durable-rules rule that decides it


@dataclass
class EngineLayout:
    """How a document maps onto the one fact asserted per evaluation."""

    fields: dict[str, str] = field(default_factory=dict)  # fact or context name -> property
    terms: dict[ast.Expr, str] = field(default_factory=dict)  # precomputed node -> property
    bounds: dict[str, int] = field(default_factory=dict)  # property -> largest magnitude

    def property_for(self, name: str, bound: int) -> str:
        if name not in self.fields:
            self.fields[name] = f"f{len(self.fields)}"
            self.bounds[self.fields[name]] = bound
        return self.fields[name]

    def term_for(self, node: ast.Expr, bound: int) -> str:
        if node not in self.terms:
            self.terms[node] = f"t{len(self.terms)}"
            self.bounds[self.terms[node]] = bound
        return self.terms[node]


def compile_ruleset(
    conditions: list[Clause],
    payable: list[Clause],
    params: Mapping[str, ParamValue],
    fact_bounds: Mapping[str, int],
    file: str,
    term_type: Callable[[ast.Expr], str],
) -> tuple[dict[str, Any], EngineLayout]:
    """Build the durable-rules ruleset definition for resolved parameters. `term_type` gives
    the static type of a sub-expression (the engine holds no fractions)."""
    if len(conditions) + len(payable) + 3 > MAX_RULES:
        raise EngineLimitError(
            file,
            None,
            f"{len(conditions) + len(payable)} clauses: the engine allows at most {MAX_RULES - 3} per policy",
        )
    layout = EngineLayout()
    emitter = _Emitter(layout, params, fact_bounds, file, term_type)
    rules: dict[str, Any] = {}
    for clause in [*conditions, *payable]:
        emitter.tests = 0
        # Named definitions are lowered by inlining: the engine sees each written out where it
        # is used (a term it cannot compute becomes one property, however often it is used).
        rules[clause.rule] = _rule(emitter.boolean(ast.inline(clause.expr), negate=False))
    rules["seen"] = _rule(TRUE_JSON)
    # The decision chains on the clause rules: a second fact records which of them fired, and
    # `all` requires every condition's. (One rule holding every condition would be multiplied
    # out by durable-rules into disjunctive normal form, which overflows its limit of 32
    # expressions per sequence (error 113) as soon as a few conditions contain `or`.)
    decision = [{"$eq": {clause.rule: True}} for clause in conditions]
    rules["all"] = {"all": [{"m": {"$and": [{"$ex": {DECISION: 1}}, *decision]}}]}
    rules["decided"] = {"all": [{"m": {"$ex": {DECISION: 1}}}]}
    if len(layout.fields) + len(layout.terms) + 3 > MAX_PROPERTIES:
        raise EngineLimitError(
            file, None, f"the policy reads too many facts for one engine fact (limit {MAX_PROPERTIES})"
        )
    return rules, layout


def _rule(condition: dict[str, Any]) -> dict[str, Any]:
    # Every rule also requires `_eval`, so that the engine's own state object never matches.
    return {"all": [{"m": {"$and": [{"$ex": {"_eval": 1}}, condition]}}]}


def encode(value: object) -> object:
    """A value as the engine sees it: dates as day numbers; nothing else changes."""
    if isinstance(value, date):
        return value.toordinal()
    return value


class _Emitter:
    def __init__(
        self,
        layout: EngineLayout,
        params: Mapping[str, ParamValue],
        fact_bounds: Mapping[str, int],
        file: str,
        term_type: Callable[[ast.Expr], str],
    ) -> None:
        self.layout, self.params, self.fact_bounds, self.file = layout, params, fact_bounds, file
        self.term_type = term_type
        self.tests = 0  # of the clause being emitted, bounded by MAX_CLAUSE_TESTS

    def refuse(self, node: ast.Expr, reason: str) -> EngineLimitError:
        return EngineLimitError(self.file, node.pos.line, reason, column=node.pos.column)

    # --- boolean positions -------------------------------------------------------------
    def boolean(self, node: ast.Expr, negate: bool) -> dict[str, Any]:
        self.tests += 1
        if self.tests > MAX_CLAUSE_TESTS:  # refused as it grows, before it is written out exponentially
            raise self.refuse(
                node,
                f"this clause needs more than {MAX_CLAUSE_TESTS} tests in the engine (each `if` in a "
                "true/false position writes its branches twice): compare inside the branches, or split it",
            )
        if isinstance(node, ast.Logical):
            parts = [self.boolean(operand, negate) for operand in node.operands]
            return {"$and" if (node.op == "and") != negate else "$or": parts}
        if isinstance(node, ast.Unary) and node.op == "not":
            return self.boolean(node.operand, not negate)
        if isinstance(node, ast.Literal):
            return TRUE_JSON if bool(node.value) != negate else FALSE_JSON
        if isinstance(node, ast.Name):
            constant = self._constant(node)
            if constant is not None:
                return TRUE_JSON if bool(constant) != negate else FALSE_JSON
            return {"$eq": {self._property(node): not negate}}
        if isinstance(node, ast.Presence):
            test = "$ex" if node.present != negate else "$nex"
            return {test: {self._property(node.subject): 1}}
        if isinstance(node, ast.Membership):
            op = "!=" if node.negated != negate else "=="
            parts = [self._compare(op, node.subject, option) for option in node.options]
            joiner = "$and" if op == "!=" else "$or"
            return parts[0] if len(parts) == 1 else {joiner: parts}
        if isinstance(node, ast.Binary) and node.op in ast.COMPARISONS:
            op = _NEGATED[node.op] if negate else node.op
            if _is_ratio(node.left) or _is_ratio(node.right):
                return self._ratio(op, node)
            return self._compare(op, node.left, node.right)
        if isinstance(node, ast.Conditional):
            # (c and a) or (not c and b) or (a and b): the last, redundant in two-valued logic,
            # makes an unknown c harmless when both branches agree, as in the trace.
            c, a, b, pos = node.condition, node.then, node.otherwise, node.pos
            rewritten = ast.Logical(
                "or",
                (
                    ast.Logical("and", (c, a), pos),
                    ast.Logical("and", (ast.Unary("not", c, pos), b), pos),
                    ast.Logical("and", (a, b), pos),
                ),
                pos,
            )
            if negate:
                rewritten = ast.Logical(
                    "or",
                    (
                        ast.Logical("and", (c, ast.Unary("not", a, pos)), pos),
                        ast.Logical("and", (ast.Unary("not", c, pos), ast.Unary("not", b, pos)), pos),
                        ast.Logical("and", (ast.Unary("not", a, pos), ast.Unary("not", b, pos)), pos),
                    ),
                    pos,
                )
            return self.boolean(rewritten, False)
        raise self.refuse(node, "this expression cannot decide a condition")

    def _compare(self, op: str, left: ast.Expr, right: ast.Expr) -> dict[str, Any]:
        left_const, right_const = self._constant(left), self._constant(right)
        if left_const is not None and right_const is not None:
            from rules.interpreter import _compare as python_compare

            # folded literals and params: values of the language
            return TRUE_JSON if python_compare(op, cast(Value, left_const), cast(Value, right_const)) else FALSE_JSON
        if self._is_property(left):
            return self._guarded({_OPS[op]: {self._property(left): self.operand(right)}}, right)
        if self._is_property(right):
            return self._guarded({_OPS[_MIRRORED[op]]: {self._property(right): self.operand(left)}}, left)
        # Neither side is a plain field: compare 0 with (right - left), which keeps the order.
        difference = ast.Binary("-", right, left, left.pos)
        return self._guarded({_OPS[op]: {"_zero": self.operand(difference)}}, difference)

    def _guarded(self, comparison: dict[str, Any], operand: ast.Expr) -> dict[str, Any]:
        # durable-rules evaluates arithmetic over a missing field with a stale value instead of
        # failing the comparison: require every field the operand reads to be present.
        fields = sorted({self._property(n) for n in _reads(operand) if self._is_property(n)})
        if not fields:
            return comparison
        return {"$and": [*({"$ex": {f: 1}} for f in fields), comparison]}

    def _ratio(self, op: str, node: ast.Binary) -> dict[str, Any]:
        # ratio(a, b) OP r  <=>  b > 0 and a * den(r) OP b * num(r): exact, and never a division
        # in the engine (an integer division by zero there kills the process).
        if _is_ratio(node.right):
            op, ratio_node, rate_node = _MIRRORED[op], node.right, node.left
        else:
            ratio_node, rate_node = node.left, node.right
        assert isinstance(ratio_node, ast.Call)
        rate = self._constant(rate_node)
        if not isinstance(rate, (int, Fraction)):
            raise self.refuse(rate_node, "a ratio is compared only with a constant rate or parameter")
        rate = Fraction(rate)
        numerator, denominator = ratio_node.args
        pos = node.pos
        scaled_num = ast.Binary("*", numerator, ast.Literal(rate.denominator, pos), pos)
        scaled_den = ast.Binary("*", denominator, ast.Literal(rate.numerator, pos), pos)
        return {
            "$and": [self._compare(">", denominator, ast.Literal(0, pos)), self._compare(op, scaled_num, scaled_den)]
        }

    # --- value positions ---------------------------------------------------------------
    def operand(self, node: ast.Expr) -> Any:
        constant = self._constant(node)
        if constant is not None:
            if isinstance(constant, Fraction):
                if constant.denominator != 1:
                    raise self.refuse(
                        node,
                        "the engine has no exact fractions: compare rates with ratio(a, b) <= 5.5%, or multiply out",
                    )
                constant = int(constant)
            if isinstance(constant, str) and (len(constant) > MAX_STRING or "\x00" in constant):
                raise self.refuse(node, "string constant too long for the engine")
            if isinstance(constant, int) and not isinstance(constant, bool) and abs(constant) > INT64_MAX:
                raise self.refuse(node, "number out of the engine's 64-bit range")
            return encode(constant)
        if self._is_property(node):
            return {"$m": self._property(node)}
        if isinstance(node, ast.Binary) and node.op in _ARITH:
            self._check_bound(node)
            return {_ARITH[node.op]: {"$l": self.operand(node.left), "$r": self.operand(node.right)}}
        if isinstance(node, ast.Binary) and node.op == "/":
            raise self.refuse(
                node,
                "division is not allowed in conditions (an integer division by "
                "zero kills the engine): write a * 100 <= b * 5, or ratio(a, b)",
            )
        if isinstance(node, ast.Unary) and node.op == "-":
            return {"$sub": {"$l": 0, "$r": self.operand(node.operand)}}
        raise self.refuse(node, "this expression cannot be computed by the engine")

    def _check_bound(self, node: ast.Expr) -> None:
        if self.bound(node) > INT64_MAX:
            raise self.refuse(
                node, "this arithmetic can exceed the engine's 64-bit integers (it wraps around silently)"
            )

    def bound(self, node: ast.Expr) -> int:
        """The largest magnitude an integer expression can take, from the facts' declared ranges."""
        constant = self._constant(node)
        if constant is not None:
            return abs(int(encode(constant))) if not isinstance(constant, (str, bool)) else 1  # type: ignore[call-overload]
        if isinstance(node, ast.Name):
            return self.fact_bounds.get(node.dotted, DEFAULT_MAX_ABS)
        if isinstance(node, ast.Binary):
            left, right = self.bound(node.left), self.bound(node.right)
            return left * right if node.op == "*" else left + right
        if isinstance(node, ast.Unary):
            return self.bound(node.operand)
        return DEFAULT_MAX_ABS

    def _is_property(self, node: ast.Expr) -> bool:
        if isinstance(node, ast.Name):
            return self._constant(node) is None
        return isinstance(node, (ast.Count, ast.Call, ast.Conditional)) and not _is_ratio(node)

    def _property(self, node: ast.Expr) -> str:
        if isinstance(node, ast.Name):
            if node.parts[0] == "params":
                raise self.refuse(node, "a parameter is a constant, not a fact")
            return self.layout.property_for(node.dotted, self.fact_bounds.get(node.dotted, DEFAULT_MAX_ABS))
        if isinstance(node, (ast.Count, ast.Call, ast.Conditional)):
            kind = self.term_type(node)
            if kind == "decimal":
                raise self.refuse(
                    node,
                    "this value can be a fraction, which the engine cannot "
                    "hold: compare rates with ratio(a, b) <= 5.5%",
                )
            if kind == "ratio":  # e.g. `if c then ratio(a, b) else ratio(d, e)`: a fraction as well
                raise self.refuse(
                    node,
                    "a ratio is compared only where it is written, as ratio(a, b) "
                    "<= 5.5%: put the comparison inside the branches",
                )
            return self.layout.term_for(node, DEFAULT_MAX_ABS)
        raise self.refuse(node, "expected a fact here")

    def _constant(self, node: ast.Expr) -> object | None:
        """The value of a node that needs no facts, folded here: durable-rules never
        evaluates arithmetic between two constants as true."""
        if isinstance(node, ast.Binary) and node.op in _ARITH:
            left, right = self._constant(node.left), self._constant(node.right)
            if _is_number(left) and _is_number(right):
                folded = left + right if node.op == "+" else left - right if node.op == "-" else left * right
                return int(folded) if isinstance(folded, Fraction) and folded.denominator == 1 else folded
            return None
        if isinstance(node, ast.Unary) and node.op == "-":
            operand = self._constant(node.operand)
            return -operand if _is_number(operand) else None
        if isinstance(node, ast.Literal):
            literal = node.value
            return Fraction(literal) if isinstance(literal, Decimal) else literal
        if isinstance(node, ast.Name) and node.parts[0] == "params":
            value = self.params[node.parts[1]]
            if isinstance(value, Tiers):
                raise self.refuse(node, "a tier table is used only through tier(amount, table)")
            return value
        return None


def _is_number(value: object) -> TypeGuard[int | Fraction]:
    return isinstance(value, (int, Fraction)) and not isinstance(value, bool)


def _reads(node: ast.Expr) -> list[ast.Expr]:
    """The fact names and precomputed terms an operand reads (not looking inside terms)."""
    if isinstance(node, (ast.Name, ast.Count, ast.Call, ast.Conditional)):
        return [node]
    return [n for child in ast.children(node) for n in _reads(child)]


def _is_ratio(node: ast.Expr) -> bool:
    return isinstance(node, ast.Call) and node.function == "ratio"
