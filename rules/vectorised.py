"""The vectorised trace: a policy's syntax tree compiled into numpy code that decides a whole chunk
of enterprises at once - every clause three-valued, the outcome and the amount in fen.

It must agree exactly with the tree-walking interpreter (`rules.interpreter`, the readable
reference) and with `rules.evaluator.evaluate`. Every node computes, over one frame (the chunk's
rows, or inside `count(...)` the flat table of a collection's records), its values and a `known`
mask; UNKNOWN is `known` False (the value slot is then a placeholder that nothing reads).

Numbers stay exact: integers are int64, decimals rationals (int64 numerators over positive int64
denominators, never reduced). Each node's largest magnitude is worked out at compile time from the
catalogue's `max_abs` (as the engine compiler's `bound()` does); a node whose bound could pass
int64 - where numpy would wrap around silently - is refused at load (VectorisedLimitError, naming
its file and line), as is a construct this compiler does not support. A row whose inputs break
what that proof assumed (a value beyond its fact's `max_abs`, a date outside the calendar, more
than COUNT_BOUND records) is decided by the interpreter instead, row by row: exact, and rare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from math import lcm
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rules import ast
from rules.columns import Column, FactColumns, RecordColumns, dtype_of, row_document
from rules.compiler import INT64_MAX, MAX_STRING
from rules.errors import EngineError, VectorisedLimitError
from rules.evaluator import _amount, _checked, _engine_fact
from rules.facts import DEFAULT_MAX_ABS
from rules.interpreter import Interpreter, Tiers, truth
from rules.values import OUTCOME_CODES, OUTCOME_OF_CODE, TRUTH_CODES, Outcome, Truth

if TYPE_CHECKING:
    from rules.loader import CompiledPolicy

Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
Codes = npt.NDArray[np.int8]

# The codes of a clause's three-valued result and of an outcome (`rules.values`).
FALSE, TRUE, UNKNOWN = TRUTH_CODES[Truth.FALSE], TRUTH_CODES[Truth.TRUE], TRUTH_CODES[Truth.UNKNOWN]
ELIGIBLE_CODE, INELIGIBLE_CODE, UNDETERMINED_CODE, HELD_CODE = (
    OUTCOME_CODES[Outcome.ELIGIBLE],
    OUTCOME_CODES[Outcome.INELIGIBLE],
    OUTCOME_CODES[Outcome.UNDETERMINED],
    OUTCOME_CODES[Outcome.HELD],
)

# The records one enterprise may have in one collection, as the compile-time bound of a count
# (the catalogue bounds no collection; a row with more is decided by the interpreter).
COUNT_BOUND = 10**9
DATE_MIN, DATE_MAX = date.min.toordinal(), date.max.toordinal()
YEAR_BOUND = date.max.year
_EPOCH = date(1970, 1, 1).toordinal()  # numpy's datetime64 day 0
_ROW: tuple[str | None, str | None] = (None, None)  # scope of the chunk's rows: (variable, collection)
_NUMERIC = frozenset({"int", "rat"})


@dataclass(frozen=True)
class _Val:
    """One node's result over a frame: kind int/rat/bool/str/date; for rat `v` is the numerator."""

    kind: str
    v: npt.NDArray[Any]
    known: Bools
    den: Ints | None = None

    def numerator_denominator(self) -> tuple[Ints, Ints | int]:
        return self.v, (self.den if self.den is not None else 1)


@dataclass(frozen=True)
class ChunkTrace:
    """A chunk's decisions, row by row, as `evaluate` gives them.

    `engine` holds, for every property of the policy's EngineLayout, the values the engine fact
    carries (`known` False where the property is absent from the fact). Where `_engine_fact`
    would raise EngineError, `engine_error` is set and `messages` says why (the property's slot
    is then not known). `failed` marks rows the trace itself cannot evaluate (a date beyond the
    calendar, an amount beyond int64), with a message too; `reference_rows` are the rows the
    interpreter decided (inputs outside the bounds the compile-time proof assumed)."""

    conditions: Codes
    payable: Codes
    outcome: Codes
    amount_fen: Ints
    engine: dict[str, Column]
    engine_error: Bools
    failed: Bools
    messages: dict[int, str]
    reference_rows: Ints

    def __len__(self) -> int:
        return len(self.outcome)

    def outcome_name(self, row: int) -> Outcome:
        return OUTCOME_OF_CODE[int(self.outcome[row])]


class _Run:
    """The state of one run over one chunk: the frames' sizes, cached node results, and the rows
    whose inputs the vectorised path cannot vouch for."""

    def __init__(self, columns: FactColumns, today: int) -> None:
        self.columns, self.today, self.n = columns, today, len(columns)
        self.cache: dict[int, _Val] = {}
        self.unsafe = np.zeros(self.n, dtype=np.bool_)
        self.notes: dict[int, str] = {}

    def records(self, collection: str) -> RecordColumns:
        found = self.columns.collections.get(collection)
        return found if found is not None else RecordColumns(np.zeros(0, np.int64), {}, [])

    def size(self, collection: str | None) -> int:
        return self.n if collection is None else len(self.records(collection))

    def mark(self, collection: str | None, mask: Bools) -> None:
        """Rows (or the owners of records) the interpreter must decide."""
        if not mask.any():
            return
        self.unsafe[mask if collection is None else self.records(collection).owner[mask]] = True


class _Step:
    """A compiled node: its kind, compile-time bounds, and how to compute it (once per run)."""

    __slots__ = ("bound", "collection", "den_bound", "fn", "kind")

    def __init__(
        self, kind: str, bound: int, fn: Callable[[_Run], _Val], collection: str | None, den_bound: int = 1
    ) -> None:
        self.kind, self.bound, self.fn, self.collection, self.den_bound = kind, bound, fn, collection, den_bound

    def __call__(self, run: _Run) -> _Val:
        key = id(self)
        if key not in run.cache:
            run.cache[key] = self.fn(run)
        return run.cache[key]


class VectorisedPolicy:
    """One policy compiled for one period; `run` decides a chunk of enterprises."""

    def __init__(
        self,
        compiled: CompiledPolicy,
        conditions: list[_Step],
        payable: list[_Step],
        amount: _Step,
        fields: list[tuple[str, str, _Step | None]],
        terms: list[tuple[str, _Step]],
    ) -> None:
        self.compiled = compiled
        self._conditions, self._payable, self._amount = conditions, payable, amount
        self._fields, self._terms = fields, terms
        policy = compiled.policy
        self._rounding, self._cap = policy.model.amount.rounding, policy.cap_fen

    def run(self, columns: FactColumns, *, today: date) -> ChunkTrace:
        run = _Run(columns, today.toordinal())
        n = run.n
        # Numpy reports a division by a placeholder or a wrapped product only on rows the
        # interpreter redoes (`unsafe`): nothing it warns about reaches a result.
        with np.errstate(all="ignore"):
            conditions = _codes([step(run) for step in self._conditions], n)
            payable = _codes([step(run) for step in self._payable], n)
            fen, amount_known = self._fen(self._amount(run))
            engine, engine_error, messages = self._engine(run)
        failed = np.zeros(n, dtype=np.bool_)
        reference_rows = np.flatnonzero(run.unsafe)
        for row in reference_rows:
            self._reference(
                columns, int(row), today, conditions, payable, fen, amount_known, engine, engine_error, failed, messages
            )
        outcome, amount_fen = _decide(conditions, payable, fen, amount_known)
        return ChunkTrace(
            conditions, payable, outcome, amount_fen, engine, engine_error, failed, messages, reference_rows
        )

    def _fen(self, value: _Val) -> tuple[Ints, Bools]:
        """The amount as `_amount` finishes it: below zero gives 0, rounded once, then capped."""
        if value.kind == "int":
            fen = np.maximum(value.v, 0)
        else:
            num, den = np.maximum(value.v, 0), value.den
            assert den is not None
            whole = num // den
            if self._rounding == "half_up":
                whole = whole + (2 * (num - whole * den) >= den)
            fen = whole
        if self._cap is not None:
            fen = np.minimum(fen, self._cap)
        return np.where(value.known, fen, 0).astype(np.int64), value.known.copy()

    def _engine(self, run: _Run) -> tuple[dict[str, Column], Bools, dict[int, str]]:
        n = run.n
        error = np.zeros(n, dtype=np.bool_)
        messages: dict[int, str] = {}
        engine: dict[str, Column] = {}

        def refuse(name: str, mask: Bools, python: Callable[[int], object]) -> None:
            # The message is `_checked`'s own, for the first property that fails (its order).
            for row in np.flatnonzero(mask & ~error):
                try:
                    _checked(python(int(row)), name)
                except EngineError as exc:
                    messages[int(row)] = str(exc)
            error[mask] = True

        for name, prop, step in self._fields:
            if step is None:  # a fact, as its column holds it
                column = run.columns.facts.get(name)
                kind = self.compiled.policy.catalogue.facts[name].kind
                values = column.values if column is not None else np.zeros(n, dtype=dtype_of(kind))
                known = column.known.copy() if column is not None else np.zeros(n, dtype=np.bool_)
                val = _Val(_kind_bound(kind, 0)[0], values, known)
            else:  # a context value (period, fact_year, today): always on the fact
                val = step(run)
            engine[prop] = self._encoded(name, val, refuse)
        for prop, step in self._terms:
            engine[prop] = self._encoded(prop, step(run), refuse)
        return engine, error, messages

    @staticmethod
    def _encoded(name: str, val: _Val, refuse: Callable[[str, Bools, Callable[[int], object]], None]) -> Column:
        known = val.known.copy()
        if val.kind == "str":
            too_long = known & (np.frompyfunc(len, 1, 1)(val.v).astype(np.int64) > MAX_STRING)
            refuse(name, too_long, lambda row: val.v[row])
            known &= ~too_long
            return Column(val.v.copy(), known)
        if val.kind == "rat":
            assert val.den is not None
            whole = val.v % val.den == 0
            fraction = known & ~whole
            refuse(name, fraction, lambda row: Fraction(int(val.v[row]), int(val.den[row])))  # type: ignore[index]
            known &= whole
            return Column(np.where(known, val.v // val.den, 0).astype(np.int64), known)
        return Column(val.v.copy(), known)  # a copy: `_reference` writes into it

    def _reference(
        self,
        columns: FactColumns,
        row: int,
        today: date,
        conditions: Codes,
        payable: Codes,
        fen: Ints,
        amount_known: Bools,
        engine: dict[str, Column],
        engine_error: Bools,
        failed: Bools,
        messages: dict[int, str],
    ) -> None:
        """Decide one row with the interpreter, as `evaluate` would (without the engine)."""
        compiled = self.compiled
        policy = compiled.policy
        messages.pop(row, None)
        engine_error[row] = False
        for column in engine.values():
            column.known[row] = False
        try:
            document = row_document(columns, row, policy.catalogue)
            interp = Interpreter(document, compiled.params, period=compiled.period, today=today)
            for i, clause in enumerate(policy.conditions):
                conditions[row, i] = TRUTH_CODES[truth(interp.evaluate(clause.expr))]
            for i, clause in enumerate(policy.payable):
                payable[row, i] = TRUTH_CODES[truth(interp.evaluate(clause.expr))]
            try:
                properties = _engine_fact(compiled, interp)
            except EngineError as exc:
                engine_error[row], messages[row] = True, str(exc)
            else:
                for prop, column in engine.items():
                    if prop in properties:
                        column.values[row], column.known[row] = properties[prop], True
            fen[row], amount_known[row] = 0, False
            if not (conditions[row] == FALSE).any():  # evaluate computes the amount only then
                amount, _, missing = _amount(compiled, interp, document)  # raises beyond int64
                fen[row], amount_known[row] = amount, not missing
        except (OverflowError, ValueError) as exc:
            failed[row], messages[row] = True, f"{columns.usccs[row]}: {exc}"


def compile_vectorised(compiled: CompiledPolicy) -> VectorisedPolicy:
    """Compile a policy (parameters resolved for its period) into its vectorised trace; raise
    VectorisedLimitError naming the file and line of what cannot be computed exactly."""
    policy = compiled.policy
    compiler = _Compiler(compiled)
    conditions = [compiler.truth(clause.expr) for clause in policy.conditions]
    payable = [compiler.truth(clause.expr) for clause in policy.payable]
    amount = compiler.step(policy.amount, _ROW)
    if amount.kind not in _NUMERIC:
        raise compiler.refuse(policy.amount, "the amount formula must give a number")
    if amount.kind == "rat":  # rounding needs 2 x the remainder
        compiler.fits(policy.amount, 2 * amount.den_bound)
    fields: list[tuple[str, str, _Step | None]] = []
    for name, prop in compiled.layout.fields.items():
        if name in ("period", "fact_year", "today"):
            fields.append((name, prop, compiler.step(ast.Name((name,), policy.amount.pos), _ROW)))
        else:
            fields.append((name, prop, None))
    terms = [(prop, compiler.step(node, _ROW)) for node, prop in compiled.layout.terms.items()]
    return VectorisedPolicy(compiled, conditions, payable, amount, fields, terms)


# --------------------------------------------------------------------------------------------
# Compilation: one _Step per (node, scope), shared between clauses that repeat a sub-expression.
Scope = tuple[str | None, str | None]


class _Compiler:
    def __init__(self, compiled: CompiledPolicy) -> None:
        self.file = compiled.policy.file
        self.params: Mapping[str, Any] = compiled.params
        self.period = compiled.period
        self.catalogue = compiled.policy.catalogue
        self.memo: dict[tuple[object, Scope], _Step] = {}

    def refuse(self, node: ast.Expr, reason: str) -> VectorisedLimitError:
        return VectorisedLimitError(self.file, node.pos.line, reason, column=node.pos.column)

    def fits(self, node: ast.Expr, *bounds: int) -> None:
        """Refuse a node one of whose intermediate magnitudes could pass int64."""
        if max(bounds) > INT64_MAX:
            raise self.refuse(
                node,
                "the vectorised trace cannot compute this exactly: it can exceed "
                "64-bit integers (bound from the facts' declared ranges)",
            )

    def truth(self, node: ast.Expr) -> _Step:
        step = self.step(node, _ROW)
        if step.kind != "bool":
            raise self.refuse(node, "a condition must be true/false")
        return step

    def step(self, node: ast.Expr, scope: Scope) -> _Step:
        key = (_structure(node), scope)
        if key not in self.memo:
            self.memo[key] = getattr(self, "_" + type(node).__name__.lower())(node, scope)
        return self.memo[key]

    # --- leaves --------------------------------------------------------------------------
    def constant(self, value: object, scope: Scope, node: ast.Expr) -> _Step:
        collection = scope[1]
        if isinstance(value, Tiers):
            raise self.refuse(node, "a tier table is used only through tier(amount, table)")
        if isinstance(value, bool):
            return _Step("bool", 1, lambda run: _full(run, collection, value, np.bool_), collection)
        if isinstance(value, int):
            self.fits(node, abs(value))
            return _Step("int", abs(value), lambda run: _full(run, collection, value, np.int64), collection)
        if isinstance(value, Fraction):
            self.fits(node, abs(value.numerator), value.denominator)
            num, den = value.numerator, value.denominator

            def rational(run: _Run) -> _Val:
                size = run.size(collection)
                return _Val("rat", np.full(size, num, np.int64), np.ones(size, np.bool_), np.full(size, den, np.int64))

            return _Step("rat", abs(num), rational, collection, den)
        if isinstance(value, date):
            day = value.toordinal()
            return _Step("date", day, lambda run: _full(run, collection, day, np.int64, "date"), collection)
        if isinstance(value, str):
            return _Step("str", 0, lambda run: _full(run, collection, value, object, "str"), collection)
        raise self.refuse(node, f"unsupported constant {value!r}")

    def _literal(self, node: ast.Literal, scope: Scope) -> _Step:
        value = node.value
        return self.constant(Fraction(value) if not isinstance(value, (bool, int, str, date)) else value, scope, node)

    def _name(self, node: ast.Name, scope: Scope) -> _Step:
        parts, (variable, collection) = node.parts, scope
        if parts[0] == "params":
            return self.constant(self.params[parts[1]], scope, node)
        if variable is not None and parts[0] == variable:
            assert collection is not None
            return self._record_field(node, collection, parts[1])
        if len(parts) == 1 and parts[0] in ("period", "fact_year", "today"):
            return self._context(node, parts[0], scope)
        return self._fact(node, node.dotted, scope)

    def _context(self, node: ast.Name, name: str, scope: Scope) -> _Step:
        collection = scope[1]
        if name == "period":
            return self.constant(self.period, scope, node)
        if name == "today":
            return _Step("date", DATE_MAX, lambda run: _full(run, collection, run.today, np.int64, "date"), collection)

        def fact_year(run: _Run) -> _Val:
            if abs(run.columns.fact_year) > DEFAULT_MAX_ABS:
                run.unsafe[:] = True
            return _full(run, collection, run.columns.fact_year, np.int64)

        return _Step("int", DEFAULT_MAX_ABS, fact_year, collection)

    def _fact(self, node: ast.Name, name: str, scope: Scope) -> _Step:
        fact_type = self.catalogue.facts.get(name)
        if fact_type is None:
            raise self.refuse(node, f"unknown fact {name!r}")
        kind, bound = _kind_bound(fact_type.kind, fact_type.max_abs)
        collection = scope[1]

        def read(run: _Run) -> _Val:
            column = run.columns.facts.get(name)
            if column is None:  # not in this chunk at all: not on record anywhere
                return _Val(kind, np.zeros(run.n, dtype=dtype_of(fact_type.kind)), np.zeros(run.n, np.bool_))
            _check_input(run, None, kind, bound, column.values, column.known)
            if collection is None:
                return _Val(kind, column.values, column.known)
            owner = run.records(collection).owner
            return _Val(kind, column.values[owner], column.known[owner])

        return _Step(kind, bound, read, collection)

    def _record_field(self, node: ast.Name, collection: str, field: str) -> _Step:
        field_type = self.catalogue.collections[collection].get(field)
        if field_type is None:
            raise self.refuse(node, f"{collection} records have no field {field!r}")
        kind, bound = _kind_bound(field_type.kind, field_type.max_abs)

        def read(run: _Run) -> _Val:
            records = run.records(collection)
            column = records.fields.get(field)
            if column is None:
                size = len(records)
                return _Val(kind, np.zeros(size, dtype=dtype_of(field_type.kind)), np.zeros(size, np.bool_))
            _check_input(run, collection, kind, bound, column.values, column.known)
            return _Val(kind, column.values, column.known)

        return _Step(kind, bound, read, collection)

    def _ref(self, node: ast.Ref, scope: Scope) -> _Step:
        # A definition reads no record variable: one step over the chunk's rows, computed once
        # per chunk and shared by every use (inside a count, spread to each owner's records).
        term = self.step(node.expr, _ROW)
        collection = scope[1]
        if collection is None:
            return term

        def spread(run: _Run) -> _Val:
            value, owner = term(run), run.records(collection).owner
            den = value.den[owner] if value.den is not None else None
            return _Val(value.kind, value.v[owner], value.known[owner], den)

        return _Step(term.kind, term.bound, spread, collection, term.den_bound)

    # --- operators -----------------------------------------------------------------------
    def _unary(self, node: ast.Unary, scope: Scope) -> _Step:
        operand = self.step(node.operand, scope)
        if node.op == "not":

            def negation(run: _Run) -> _Val:
                a = operand(run)
                return _Val("bool", ~a.v, a.known)

            return _Step("bool", 1, negation, scope[1])
        if operand.kind not in _NUMERIC:
            raise self.refuse(node, "'-' needs a number")

        def minus(run: _Run) -> _Val:
            a = operand(run)
            return _Val(a.kind, -a.v, a.known, a.den)

        return _Step(operand.kind, operand.bound, minus, scope[1], operand.den_bound)

    def _binary(self, node: ast.Binary, scope: Scope) -> _Step:
        left, right = self.step(node.left, scope), self.step(node.right, scope)
        collection = scope[1]
        if node.op in ast.COMPARISONS:
            test = self.comparison(node, node.op, left, right)

            def compare(run: _Run) -> _Val:
                a, b = left(run), right(run)
                return _Val("bool", test(a, b), a.known & b.known)

            return _Step("bool", 1, compare, collection)
        if left.kind == "date":
            return self._date_arithmetic(node, left, right, collection)
        if left.kind not in _NUMERIC or right.kind not in _NUMERIC:
            raise self.refuse(node, f"'{node.op}' needs numbers")
        if node.op == "/":
            return self._division(node, left, right, collection)
        if left.kind == right.kind == "int":
            bound = left.bound * right.bound if node.op == "*" else left.bound + right.bound
            self.fits(node, bound)
            op = {"+": np.add, "-": np.subtract, "*": np.multiply}[node.op]

            def integer(run: _Run) -> _Val:
                a, b = left(run), right(run)
                return _Val("int", op(a.v, b.v), a.known & b.known)

            return _Step("int", bound, integer, collection)
        dl, dr = left.den_bound, right.den_bound
        if node.op == "*":
            bound, den_bound = left.bound * right.bound, dl * dr
            self.fits(node, bound, den_bound)

            def product(run: _Run) -> _Val:
                a, b = left(run), right(run)
                (an, ad), (bn, bd) = a.numerator_denominator(), b.numerator_denominator()
                return _Val("rat", an * bn, a.known & b.known, _as_array(ad * bd, len(a.known)))

            return _Step("rat", bound, product, collection, den_bound)
        bound, den_bound = left.bound * dr + right.bound * dl, dl * dr
        self.fits(node, left.bound * dr, right.bound * dl, bound, den_bound)
        sign = 1 if node.op == "+" else -1

        def rational_sum(run: _Run) -> _Val:
            a, b = left(run), right(run)
            (an, ad), (bn, bd) = a.numerator_denominator(), b.numerator_denominator()
            return _Val("rat", an * bd + sign * (bn * ad), a.known & b.known, _as_array(ad * bd, len(a.known)))

        return _Step("rat", bound, rational_sum, collection, den_bound)

    def _division(self, node: ast.Binary, left: _Step, right: _Step, collection: str | None) -> _Step:
        # at least 1: a zero divisor's rows are UNKNOWN with denominator 1
        bound, den_bound = left.bound * right.den_bound, max(1, left.den_bound * right.bound)
        self.fits(node, bound, den_bound)

        def divide(run: _Run) -> _Val:
            a, b = left(run), right(run)
            (an, ad), (bn, bd) = a.numerator_denominator(), b.numerator_denominator()
            num, den = _as_array(an * bd, len(a.known)), _as_array(ad * bn, len(a.known))
            zero = den == 0  # division by zero is UNKNOWN, as in the interpreter
            negative = den < 0
            num, den = np.where(negative, -num, num), np.where(negative, -den, den)
            return _Val("rat", num, a.known & b.known & ~zero, np.where(zero, 1, den))

        return _Step("rat", bound, divide, collection, den_bound)

    def _date_arithmetic(self, node: ast.Binary, left: _Step, right: _Step, collection: str | None) -> _Step:
        if right.kind == "date" and node.op == "-":

            def days_between(run: _Run) -> _Val:
                a, b = left(run), right(run)
                return _Val("int", a.v - b.v, a.known & b.known)

            return _Step("int", DATE_MAX, days_between, collection)
        if right.kind != "int" or node.op not in ("+", "-"):
            raise self.refuse(node, "date arithmetic is date - date, or date + or - a number of days")
        self.fits(node, DATE_MAX + right.bound)
        sign = 1 if node.op == "+" else -1

        def shifted(run: _Run) -> _Val:
            a, b = left(run), right(run)
            known = a.known & b.known
            day = a.v + sign * b.v
            # Beyond the calendar the interpreter raises: let it, for those rows.
            run.mark(collection, known & ((day < DATE_MIN) | (day > DATE_MAX)))
            return _Val("date", day, known)

        return _Step("date", DATE_MAX + right.bound, shifted, collection)

    def comparison(self, node: ast.Expr, op: str, left: _Step, right: _Step) -> Callable[[_Val, _Val], Bools]:
        """How to compare two values of these steps (known or not: the caller masks)."""
        compare = {
            "==": np.equal,
            "!=": np.not_equal,
            "<": np.less,
            "<=": np.less_equal,
            ">": np.greater,
            ">=": np.greater_equal,
        }[op]
        if left.kind in _NUMERIC and right.kind in _NUMERIC:
            if left.kind == right.kind == "int":
                return lambda a, b: compare(a.v, b.v)
            self.fits(node, left.bound * right.den_bound, right.bound * left.den_bound)

            def cross(a: _Val, b: _Val) -> Bools:
                (an, ad), (bn, bd) = a.numerator_denominator(), b.numerator_denominator()
                return compare(an * bd, bn * ad)  # type: ignore[no-any-return]

            return cross
        if left.kind != right.kind:
            raise self.refuse(node, f"cannot compare {left.kind} with {right.kind}")
        if left.kind == "str":
            if op not in ("==", "!="):
                raise self.refuse(node, "strings are compared only with == and !=")
            return lambda a, b: np.asarray(compare(a.v, b.v), dtype=np.bool_)
        return lambda a, b: compare(a.v, b.v)

    def _logical(self, node: ast.Logical, scope: Scope) -> _Step:
        operands = [self.step(operand, scope) for operand in node.operands]
        decisive = node.op == "or"

        def kleene(run: _Run) -> _Val:
            values = [operand(run) for operand in operands]  # every one, as the trace reads them
            decided = np.zeros(len(values[0].known), dtype=np.bool_)
            all_known = np.ones(len(values[0].known), dtype=np.bool_)
            for value in values:
                decided |= value.known & (value.v == decisive)
                all_known &= value.known
            return _Val("bool", decided if decisive else ~decided, decided | all_known)

        return _Step("bool", 1, kleene, scope[1])

    def _membership(self, node: ast.Membership, scope: Scope) -> _Step:
        subject = self.step(node.subject, scope)
        options = [(self.step(option, scope), option) for option in node.options]
        tests = [self.comparison(option, "==", subject, step) for step, option in options]

        def member(run: _Run) -> _Val:
            s = subject(run)
            found = np.zeros(len(s.known), dtype=np.bool_)
            unsure = np.zeros(len(s.known), dtype=np.bool_)
            for (step, _), test in zip(options, tests):
                o = step(run)
                found |= o.known & test(s, o)
                unsure |= ~o.known
            return _Val("bool", found != node.negated, s.known & (found | ~unsure))

        return _Step("bool", 1, member, scope[1])

    def _presence(self, node: ast.Presence, scope: Scope) -> _Step:
        subject = self.step(node.subject, scope)

        def presence(run: _Run) -> _Val:
            s = subject(run)
            return _Val("bool", s.known == node.present, np.ones(len(s.known), dtype=np.bool_))

        return _Step("bool", 1, presence, scope[1])

    def _conditional(self, node: ast.Conditional, scope: Scope) -> _Step:
        condition = self.step(node.condition, scope)
        then, otherwise = self.step(node.then, scope), self.step(node.otherwise, scope)
        if condition.kind != "bool":
            raise self.refuse(node.condition, "the condition of 'if' must be true/false")
        if then.kind != otherwise.kind and not {then.kind, otherwise.kind} <= _NUMERIC:
            raise self.refuse(node, f"'then' gives {then.kind} but 'else' gives {otherwise.kind}")
        same = self.comparison(node, "==", then, otherwise)
        kind = then.kind if then.kind == otherwise.kind else "rat"
        bound, den_bound = max(then.bound, otherwise.bound), max(then.den_bound, otherwise.den_bound)

        def choose(run: _Run) -> _Val:
            c, a, b = condition(run), then(run), otherwise(run)
            take_then = c.known & c.v
            take_else = c.known & ~c.v
            # An unknown condition is harmless where both branches agree (the trace's rule).
            agree = ~c.known & a.known & b.known & same(a, b)
            known = (take_then & a.known) | (take_else & b.known) | agree
            pick_then = ~take_else  # the value of `then` also where both agree
            v = np.where(pick_then, a.v, b.v)
            den = None
            if kind == "rat":
                (_, ad), (_, bd) = a.numerator_denominator(), b.numerator_denominator()
                den = np.where(pick_then, ad, bd).astype(np.int64)
            return _Val(kind, v, known, den)

        return _Step(kind, bound, choose, scope[1], den_bound)

    def _count(self, node: ast.Count, scope: Scope) -> _Step:
        outer_variable, outer_collection = scope
        if outer_variable is not None:
            free = _free_locals(node, frozenset())
            if outer_variable in free:
                raise self.refuse(
                    node,
                    "the vectorised trace does not support a count whose filter "
                    f"reads the enclosing record {outer_variable!r}",
                )
            inner = self.step(node, _ROW)  # the same for every record of an owner

            def gathered(run: _Run) -> _Val:
                value, owner = inner(run), run.records(outer_collection).owner  # type: ignore[arg-type]
                return _Val("int", value.v[owner], value.known[owner])

            return _Step("int", COUNT_BOUND, gathered, outer_collection)
        if node.collection not in self.catalogue.collections:
            raise self.refuse(node, f"unknown collection {node.collection!r}")
        collection = node.collection
        where = self.step(node.where, (node.variable, collection)) if node.where is not None else None
        if where is not None and where.kind != "bool":
            raise self.refuse(node.where, "the 'where' filter must be true/false")  # type: ignore[arg-type]

        def count(run: _Run) -> _Val:
            owner = run.records(collection).owner
            n = run.n
            per_owner = np.bincount(owner, minlength=n)
            run.mark(None, per_owner > COUNT_BOUND)
            if where is None:
                return _Val("int", per_owner.astype(np.int64), np.ones(n, dtype=np.bool_))
            verdict = where(run)
            matched = np.bincount(owner[verdict.known & verdict.v], minlength=n)
            unsure = np.bincount(owner[~verdict.known], minlength=n) > 0
            return _Val("int", matched.astype(np.int64), ~unsure)

        return _Step("int", COUNT_BOUND, count, None)

    def _call(self, node: ast.Call, scope: Scope) -> _Step:
        name, collection = node.function, scope[1]
        if name == "tier":
            return self._tier(node, scope)
        args = [self.step(arg, scope) for arg in node.args]
        if name == "year" and [a.kind for a in args] == ["date"]:
            (day,) = args

            def year(run: _Run) -> _Val:
                d = day(run)
                days = (np.clip(d.v, DATE_MIN, DATE_MAX) - _EPOCH).astype("datetime64[D]")
                return _Val("int", days.astype("datetime64[Y]").astype(np.int64) + 1970, d.known)

            return _Step("int", YEAR_BOUND, year, collection)
        if name == "ratio" and [a.kind for a in args] == ["int", "int"]:
            numerator, denominator = args

            def ratio(run: _Run) -> _Val:
                a, b = numerator(run), denominator(run)
                defined = b.v > 0  # undefined (UNKNOWN) unless the denominator is positive
                return _Val("rat", a.v, a.known & b.known & defined, np.where(defined, b.v, 1))

            return _Step("rat", numerator.bound, ratio, collection, max(1, denominator.bound))
        if name in ("min", "max") and len(args) == 2 and {a.kind for a in args} <= _NUMERIC:
            first, second = args
            # min(a, b) is a unless b < a; max(a, b) is a unless b > a (Python's builtins).
            takes_second = self.comparison(node, "<" if name == "min" else ">", second, first)
            kind = "int" if first.kind == second.kind == "int" else "rat"

            def extreme(run: _Run) -> _Val:
                a, b = first(run), second(run)
                pick = takes_second(b, a)
                den = None
                if kind == "rat":
                    (_, ad), (_, bd) = a.numerator_denominator(), b.numerator_denominator()
                    den = np.where(pick, bd, ad).astype(np.int64)
                return _Val(kind, np.where(pick, b.v, a.v), a.known & b.known, den)

            return _Step(
                kind, max(first.bound, second.bound), extreme, collection, max(first.den_bound, second.den_bound)
            )
        raise self.refuse(node, f"the vectorised trace does not support {name}() here")

    def _tier(self, node: ast.Call, scope: Scope) -> _Step:
        amount = self.step(node.args[0], scope)
        table_name = node.args[1]
        assert isinstance(table_name, ast.Name)
        table = self.params[table_name.parts[1]]
        assert isinstance(table, Tiers)
        values = [Fraction(value) for _, value in table.steps]
        integral = all(isinstance(value, int) for _, value in table.steps)
        den = lcm(*(value.denominator for value in values))
        nums = [int(value * den) for value in values]  # every step over one denominator
        bound = max(abs(num) for num in nums)
        self.fits(node, bound, den, *(abs(up) for up, _ in table.steps if up is not None))
        kind = "int" if integral else "rat"

        def tier(run: _Run) -> _Val:
            a = amount(run)
            picked = np.full(len(a.known), nums[-1], dtype=np.int64)
            for (up_to, _), num in zip(reversed(table.steps[:-1]), reversed(nums[:-1])):
                picked = np.where(a.v <= up_to, num, picked)  # the first step that fits wins
            return _Val(kind, picked, a.known, np.full(len(a.known), den, np.int64) if kind == "rat" else None)

        return _Step(kind, bound, tier, scope[1], den)


# --------------------------------------------------------------------------------------------
def _kind_bound(kind: str, max_abs: int) -> tuple[str, int]:
    if kind == "int":
        return "int", max_abs
    if kind == "date":
        return "date", DATE_MAX
    return kind, 1


def _check_input(
    run: _Run, collection: str | None, kind: str, bound: int, values: npt.NDArray[Any], known: Bools
) -> None:
    """Rows with a value beyond what the compile-time bound assumed go to the interpreter."""
    if kind == "int":
        run.mark(collection, known & ((values > bound) | (values < -bound)))
    elif kind == "date":
        run.mark(collection, known & ((values < DATE_MIN) | (values > DATE_MAX)))


def _full(run: _Run, collection: str | None, value: object, dtype: Any, kind: str | None = None) -> _Val:
    size = run.size(collection)
    if kind is None:
        kind = "bool" if dtype is np.bool_ else "int"
    values = np.empty(size, dtype=dtype)
    values[:] = value if dtype is not object else [value] * size
    return _Val(kind, values, np.ones(size, dtype=np.bool_))


def _as_array(value: Ints | int, size: int) -> Ints:
    return value if isinstance(value, np.ndarray) else np.full(size, value, dtype=np.int64)


def _structure(node: ast.Expr) -> object:
    """A node as a key that tells literals of different types apart: the nodes compare equal
    when `True == 1` or `Decimal(2) == 2`, but do not compute the same kind of value."""
    if isinstance(node, ast.Literal):
        return ("Literal", type(node.value).__name__, node.value)
    if isinstance(node, ast.Name):
        return ("Name", node.parts)
    if isinstance(node, ast.Count):
        where = _structure(node.where) if node.where is not None else None
        return ("Count", node.variable, node.collection, where)
    if isinstance(node, ast.Ref):  # the value of its expression, whatever the name
        return _structure(node.expr)
    extra = tuple(getattr(node, f) for f in ("op", "negated", "present", "function") if hasattr(node, f))
    return (type(node).__name__, extra, tuple(_structure(child) for child in ast.children(node)))


def _free_locals(node: ast.Expr, bound: frozenset[str]) -> set[str]:
    """The record variables a sub-expression reads that it does not bind itself."""
    if isinstance(node, ast.Name):
        return {node.parts[0]} if node.parts[0] not in bound and len(node.parts) == 2 else set()
    if isinstance(node, ast.Count):
        inner = bound | {node.variable}
        return _free_locals(node.where, inner) if node.where is not None else set()
    out: set[str] = set()
    for child in ast.children(node):
        out |= _free_locals(child, bound)
    return out


def _codes(values: list[_Val], n: int) -> Codes:
    out = np.empty((n, len(values)), dtype=np.int8)
    for i, value in enumerate(values):
        out[:, i] = np.where(value.known, value.v.astype(np.int8), UNKNOWN)
    return out


def _decide(conditions: Codes, payable: Codes, fen: Ints, amount_known: Bools) -> tuple[Codes, Ints]:
    """`evaluate`'s outcome and amount from the clauses' codes: a false condition is INELIGIBLE,
    an unknown one UNDETERMINED; all true: HELD when a payable clause is not true, else ELIGIBLE
    with a known amount, else UNDETERMINED. The amount counts only when ELIGIBLE or HELD."""
    any_false = (conditions == FALSE).any(axis=1)
    any_unknown = (conditions == UNKNOWN).any(axis=1)
    held = (payable != TRUE).any(axis=1)
    outcome = np.select(
        [any_false, any_unknown, held, amount_known],
        [INELIGIBLE_CODE, UNDETERMINED_CODE, HELD_CODE, ELIGIBLE_CODE],
        UNDETERMINED_CODE,
    ).astype(np.int8)
    paid = (outcome == ELIGIBLE_CODE) | (outcome == HELD_CODE)
    return outcome, np.where(paid & amount_known, fen, 0).astype(np.int64)


__all__ = ["FALSE", "TRUE", "UNKNOWN", "ChunkTrace", "VectorisedPolicy", "compile_vectorised"]
