"""Evaluates one enterprise against one policy and period: outcome, amount and the full trace.

durable-rules decides which clauses hold; the interpreter evaluates the same clauses again,
independently and three-valued, to produce the trace. The two must agree on every clause and
on the decision, or the evaluation fails with EngineDisagreementError.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from rules.compiler import INT64_MAX, Clause, encode
from rules.engine import ENGINE_VERSION
from rules.errors import EngineDisagreementError, EngineError
from rules.facts import FactsDocument
from rules.interpreter import UNKNOWN, Interpreter, Reads, truth
from rules.money import to_fen
from rules.values import Outcome, Truth

if TYPE_CHECKING:  # the loader compiles the vectorised trace, which builds on this module
    from rules.loader import CompiledPolicy, LoadedPolicy


@dataclass(frozen=True)
class FactRead:
    name: str
    label: str
    value: Any  # JSON-ready: int, str, bool, ISO date, or None when missing
    source: str | None
    as_of: str | None
    missing: str | None = None  # why the value is not on record


@dataclass(frozen=True)
class CollectionRead:
    name: str
    label: str
    records: int
    matched: list[str]


@dataclass(frozen=True)
class TermRead:
    """A named term (a definition of the policy file) a clause or the amount used."""

    name: str
    text: str
    value: Any  # JSON-ready: int, str, bool, ISO date, a fraction as exact text
    # ("0.055", else "1/3"); None when it cannot be known


@dataclass(frozen=True)
class ClauseResult:
    id: str
    text: str
    citation: str
    result: Truth
    reads: list[FactRead]
    collections: list[CollectionRead] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    terms: list[TermRead] = field(default_factory=list)


@dataclass(frozen=True)
class AmountTrace:
    formula: str
    text: str
    exact: str | None  # the exact value before rounding, in fen
    rounding: str
    cap_fen: int | None
    reads: list[FactRead]
    notes: list[str]
    terms: list[TermRead] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluation:
    policy_id: str
    policy_version: str
    rule_sha256: str
    period: int
    fact_year: int
    uscc: str
    evaluated_on: str
    outcome: Outcome
    amount_fen: int
    conditions: list[ClauseResult]
    payable: list[ClauseResult]
    missing: list[str]
    held: list[str]
    amount: AmountTrace | None
    conflict_group: str | None
    engine: str = ENGINE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as `dataclasses.asdict` gives it (without its deep copies, which cost
        more than the evaluation itself in a batch)."""
        return _plain(self)  # type: ignore[no-any-return]

    @property
    def failed(self) -> list[ClauseResult]:
        return [c for c in self.conditions if c.result == Truth.FALSE]


def evaluate(compiled: CompiledPolicy, document: FactsDocument, *, today: date) -> Evaluation:
    """Decide one (enterprise, policy, period) and explain it."""
    policy = compiled.policy
    interpreter = Interpreter(document, compiled.params, period=compiled.period, today=today)

    condition_results = [_trace(clause, interpreter, document, policy) for clause in policy.conditions]
    payable_results = [_trace(clause, interpreter, document, policy) for clause in policy.payable]

    fired = compiled.ruleset.fire(_engine_fact(compiled, interpreter), decide_on=[c.rule for c in policy.conditions])
    _cross_check(compiled, document, condition_results, payable_results, fired)

    missing = _missing(condition_results)
    amount_fen, amount_trace, amount_missing = 0, None, list[str]()
    if any(c.result == Truth.FALSE for c in condition_results):
        outcome = Outcome.INELIGIBLE
    elif any(c.result == Truth.UNKNOWN for c in condition_results):
        outcome = Outcome.UNDETERMINED
        # Name also what the amount will need, so that one correction of the data suffices.
        missing += [name for name in _amount(compiled, interpreter, document)[2] if name not in missing]
    else:
        amount_fen, amount_trace, amount_missing = _amount(compiled, interpreter, document)
        held = [c.id for c in payable_results if c.result != Truth.TRUE]
        if held:
            outcome, missing = Outcome.HELD, amount_missing
        elif amount_missing:
            outcome, missing = Outcome.UNDETERMINED, amount_missing
        else:
            outcome = Outcome.ELIGIBLE
    held_ids = [c.id for c in payable_results if c.result != Truth.TRUE] if outcome == Outcome.HELD else []
    return Evaluation(
        policy_id=policy.id,
        policy_version=policy.version,
        rule_sha256=policy.sha256,
        period=compiled.period,
        fact_year=document.fact_year,
        uscc=document.uscc,
        evaluated_on=today.isoformat(),
        outcome=outcome,
        amount_fen=amount_fen if outcome in (Outcome.ELIGIBLE, Outcome.HELD) else 0,
        conditions=condition_results,
        payable=payable_results,
        missing=missing,
        held=held_ids,
        amount=amount_trace,
        conflict_group=policy.model.conflict_group,
    )


def _trace(clause: Clause, interpreter: Interpreter, document: FactsDocument, policy: LoadedPolicy) -> ClauseResult:
    reads = Reads()
    value = interpreter.evaluate(clause.expr, reads)
    catalogue = policy.catalogue
    return ClauseResult(
        id=clause.id,
        text=clause.text,
        citation=clause.citation,
        result=truth(value),
        reads=_fact_reads(reads, document, catalogue),
        collections=[
            CollectionRead(name, catalogue.collection_labels.get(name, name), n, matched)
            for name, (n, matched) in reads.collections.items()
        ],
        notes=reads.notes,
        terms=_term_reads(reads, policy),
    )


def _fact_reads(reads: Reads, document: FactsDocument, catalogue: Any) -> list[FactRead]:
    out = []
    for name in reads.facts:
        fact = document.facts.get(name)
        label = catalogue.facts[name].label if name in catalogue.facts else name
        if fact is None:
            out.append(FactRead(name, label, None, None, None, document.why_missing(name)))
        else:
            value = fact.value.isoformat() if isinstance(fact.value, date) else fact.value
            out.append(FactRead(name, label, value, fact.source, fact.as_of.isoformat() if fact.as_of else None))
    return out


def _term_reads(reads: Reads, policy: LoadedPolicy) -> list[TermRead]:
    out = []
    for name, value in reads.terms.items():
        shown: Any = value
        if value is UNKNOWN:
            shown = None
        elif isinstance(value, Fraction):
            shown = _show(value)
        elif isinstance(value, date):
            shown = value.isoformat()
        out.append(TermRead(name, policy.definitions[name].text, shown))
    return out


def _engine_fact(compiled: CompiledPolicy, interpreter: Interpreter) -> dict[str, Any]:
    """The one fact the engine sees: the facts the clauses read and the precomputed terms."""
    layout = compiled.layout
    properties: dict[str, Any] = {}
    for name, prop in layout.fields.items():
        if name in interpreter.context:
            properties[prop] = encode(interpreter.context[name])
            continue
        fact = interpreter.document.facts.get(name)
        if fact is not None:
            properties[prop] = _checked(encode(fact.value), name)
    for node, prop in layout.terms.items():
        value = interpreter.evaluate(node)
        if value is not UNKNOWN:
            properties[prop] = _checked(encode(value), prop)
    return properties


def _checked(value: Any, name: str) -> Any:
    if isinstance(value, Fraction):
        if value.denominator != 1:
            raise EngineError(f"{name}: the engine cannot hold the fraction {value}")
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise EngineError(f"{name}: {value} exceeds the engine's 64-bit integers")
    if isinstance(value, str) and len(value) > 1000:
        raise EngineError(f"{name}: string too long for exact comparison in the engine")
    return value


def _cross_check(
    compiled: CompiledPolicy,
    document: FactsDocument,
    conditions: list[ClauseResult],
    payable: list[ClauseResult],
    fired: frozenset[str],
) -> None:
    policy = compiled.policy
    problems = []
    clauses = [*policy.conditions, *policy.payable]
    for clause, result in zip(clauses, [*conditions, *payable]):
        if (clause.rule in fired) != (result.result == Truth.TRUE):
            problems.append(
                f"clause {clause.id}: engine {'held' if clause.rule in fired else 'failed'}, trace {result.result}"
            )
    all_true = all(c.result == Truth.TRUE for c in conditions)
    if ("all" in fired) != all_true:
        problems.append(
            f"decision: engine {'eligible' if 'all' in fired else 'not eligible'}, "
            f"trace {'eligible' if all_true else 'not eligible'}"
        )
    if "seen" not in fired or "decided" not in fired:
        problems.append("the engine did not see the evaluation (catch-all rule did not fire)")
    if problems:
        raise EngineDisagreementError(policy.id, document.uscc, problems)


def _missing(results: list[ClauseResult]) -> list[str]:
    """What keeps unknown clauses unknown: missing facts by name, else the trace's notes,
    else the clause itself (never an empty list for an unknown clause)."""
    names: list[str] = []
    for result in results:
        if result.result != Truth.UNKNOWN:
            continue
        found = [r.name for r in result.reads if r.missing is not None] + result.notes
        for name in found or [f"{result.id}: not decidable from the facts on record"]:
            if name not in names:
                names.append(name)
    return names


def _amount(
    compiled: CompiledPolicy, interpreter: Interpreter, document: FactsDocument
) -> tuple[int, AmountTrace, list[str]]:
    policy = compiled.policy
    reads = Reads()
    value = interpreter.evaluate(policy.amount, reads)
    fact_reads = _fact_reads(reads, document, policy.catalogue)
    terms = _term_reads(reads, policy)
    rule = policy.model.amount
    notes = list(reads.notes)
    if value is UNKNOWN:
        missing = [r.name for r in fact_reads if r.missing is not None] + notes or ["amount"]
        return (
            0,
            AmountTrace(rule.formula.strip(), rule.text, None, rule.rounding, policy.cap_fen, fact_reads, notes, terms),
            missing,
        )
    exact = Fraction(value)  # type: ignore[arg-type]
    if exact < 0:
        notes.append(f"formula gives {_show(exact)} fen, below zero: nothing is payable")
        exact = Fraction(0)
    fen = to_fen(exact, rule.rounding)
    if policy.cap_fen is not None and fen > policy.cap_fen:
        notes.append(f"capped at {policy.cap_fen} fen")
        fen = policy.cap_fen
    if fen > INT64_MAX:  # only from facts beyond the catalogue's bounds; no column could hold it
        raise OverflowError(f"amount {fen} fen is beyond int64")
    return (
        fen,
        AmountTrace(
            rule.formula.strip(), rule.text, _show(exact), rule.rounding, policy.cap_fen, fact_reads, notes, terms
        ),
        [],
    )


def _show(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    # Exact decimal when the fraction terminates (rates are decimal), else the fraction itself.
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        from decimal import Decimal, localcontext

        with localcontext() as ctx:
            ctx.prec = 60
            return str(Decimal(value.numerator) / Decimal(value.denominator))
    return f"{value.numerator}/{value.denominator}"


_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}
_SCALARS = (str, int, bool, type(None))


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind not in _FIELD_NAMES:
        _FIELD_NAMES[kind] = (
            tuple(f.name for f in fields(value)) if is_dataclass(value) and not isinstance(value, type) else None
        )
    names = _FIELD_NAMES[kind]
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if kind is list:
        return [_plain(item) for item in value]
    if kind is tuple:
        return tuple(_plain(item) for item in value)
    if kind is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value
