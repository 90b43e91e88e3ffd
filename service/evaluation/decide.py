"""Deciding a chunk of enterprises under the policies of a period: the engine decides, the compiled
trace cross-checks.

For each chunk: the vectorised trace (`rules.vectorised`) gives every clause's three-valued
result and the amount for all enterprises at once; the packed rulesets (`rules.packing`) are
asserted one fact per enterprise each, and every clause the engine fired must be exactly a clause
the trace holds true. A disagreement, or a value the engine cannot hold, is an error for that
enterprise and policy: counted, logged with the enterprise and clause, never paid - never
resolved quietly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

import numpy as np

from rules.columns import FactColumns
from rules.loader import CompiledPolicy, LoadedPolicy
from rules.packing import PackedMember, PackedRuleset, pack
from rules.values import OUTCOME_CODES, OUTCOME_OF_CODE, TRUTH_CODES, Outcome
from rules.vectorised import TRUE, ChunkTrace
from service.audit.decision import MASK_CODES, MASK_SEPARATOR

log = logging.getLogger("benefits.evaluation")


@dataclass(frozen=True)
class PeriodPlan:
    """The policies of one period, compiled, vectorised and packed: built once, kept warm."""

    period: int
    policies: tuple[LoadedPolicy, ...]
    packs: tuple[PackedRuleset, ...]

    @property
    def fact_years(self) -> tuple[int, ...]:
        return tuple(sorted({p.fact_year(self.period) for p in self.policies}))

    def compiled(self, policy_id: str) -> CompiledPolicy:
        return next(p for p in self.policies if p.id == policy_id).compiled(self.period)


_plans: dict[tuple[int, tuple[str, ...]], PeriodPlan] = {}


def plan_for(policies: Sequence[LoadedPolicy], period: int) -> PeriodPlan:
    """The plan of these policy versions for `period` (one per process: the engine's rulesets are
    registered once and cannot be removed)."""
    key = (period, tuple(p.sha256 for p in policies))
    existing = _plans.get(key)
    if existing is None:
        packs = tuple(pack([p.compiled(period) for p in policies]))
        existing = _plans.setdefault(key, PeriodPlan(period, tuple(policies), packs))
    return existing


@dataclass
class PolicyDecisions:
    """One policy's decisions for a chunk: the trace, and which rows are errors (and why)."""

    policy: LoadedPolicy
    columns: FactColumns
    trace: ChunkTrace
    errors: dict[int, str] = field(default_factory=dict)

    def outcome(self, row: int) -> Outcome:
        return self.trace.outcome_name(row)

    def amount_fen(self, row: int) -> int:
        return int(self.trace.amount_fen[row])

    def mask(self, row: int) -> str:
        """The clause results of one row as a record stores them (`service.audit.decision`)."""
        return self.masks[row]

    @cached_property
    def masks(self) -> list[str]:
        """Every row's mask, made for the whole chunk at once."""
        trace = self.trace
        separator = np.full((len(trace.outcome), 1), ord(MASK_SEPARATOR), dtype=np.uint8)
        chars = np.ascontiguousarray(
            np.concatenate([_TRUTH_BYTES[trace.conditions], separator, _TRUTH_BYTES[trace.payable]], axis=1)
        )
        return [text.decode("ascii") for text in chars.view(f"S{chars.shape[1]}")[:, 0].tolist()]

    def tally(self) -> tuple[dict[Outcome, int], int, int, int]:
        """Outcome counts, eligible fen and held fen over the rows without error, and the errors."""
        ok = np.ones(len(self.columns), dtype=np.bool_)
        if self.errors:
            ok[list(self.errors)] = False
        outcomes = self.trace.outcome[ok]
        amounts = self.trace.amount_fen[ok]
        counts = np.bincount(outcomes, minlength=len(OUTCOME_OF_CODE))
        return (
            {outcome: int(counts[i]) for i, outcome in enumerate(OUTCOME_OF_CODE)},
            int(amounts[outcomes == OUTCOME_CODES[Outcome.ELIGIBLE]].sum()),
            int(amounts[outcomes == OUTCOME_CODES[Outcome.HELD]].sum()),
            len(self.errors),
        )


# The record's character (one ASCII byte) for each truth code of the vectorised trace.
_TRUTH_BYTES = np.zeros(len(TRUTH_CODES), dtype=np.uint8)
for _truth, _code in TRUTH_CODES.items():
    _TRUTH_BYTES[_code] = ord(MASK_CODES[_truth])


def decide_chunk(
    plan: PeriodPlan, columns: Mapping[int, FactColumns], *, today: date, only: Sequence[str] | None = None
) -> dict[str, PolicyDecisions]:
    """Decide every enterprise of the chunk under the plan's policies (or `only` those): columns
    by fact year, every fact year of the plan present and in the same row order."""
    wanted = set(only) if only is not None else None
    decisions: dict[str, PolicyDecisions] = {}
    for policy in plan.policies:
        if wanted is not None and policy.id not in wanted:
            continue
        chunk = columns[policy.fact_year(plan.period)]
        vectorised = policy.compiled(plan.period).vectorised
        assert vectorised is not None  # the loader compiles every period vectorised or refuses the policy
        trace = vectorised.run(chunk, today=today)
        decisions[policy.id] = PolicyDecisions(policy, chunk, trace, _engine_errors(trace))
    for packed in plan.packs:
        members = [m for m in packed.members if m.policy_id in decisions]
        if members:
            _cross_check(packed, members, decisions)
    return decisions


def _engine_errors(trace: ChunkTrace) -> dict[int, str]:
    """Rows the trace could not evaluate, or whose values the engine cannot hold: errors."""
    rows = np.flatnonzero(trace.engine_error | trace.failed)
    return {int(row): trace.messages.get(int(row), "a value the engine cannot hold") for row in rows.tolist()}


def engine_facts(members: Sequence[PackedMember], decisions: Mapping[str, PolicyDecisions]) -> list[dict[str, Any]]:
    """The one fact per enterprise for a packed ruleset: every member's properties, by packed name,
    present where the trace knows the value."""
    columns: list[tuple[str, list[Any], list[bool]]] = []
    n = 0
    for member in members:
        engine = decisions[member.policy_id].trace.engine
        for own, packed_name in member.properties.items():
            column = engine[own]
            columns.append((packed_name, column.values.tolist(), column.known.tolist()))
            n = len(column)
    return [{name: values[row] for name, values, known in columns if known[row]} for row in range(n)]


def _cross_check(
    packed: PackedRuleset, members: Sequence[PackedMember], decisions: Mapping[str, PolicyDecisions]
) -> None:
    fired = packed.ruleset.fire_each(engine_facts(members, decisions))
    for member in members:
        decision = decisions[member.policy_id]
        trace = decision.trace
        rules = [*member.condition_rules, *member.payable_rules]
        expected = np.concatenate([trace.conditions, trace.payable], axis=1) == TRUE
        held = np.array([[rule in rules_fired for rule in rules] for rules_fired in fired], dtype=np.bool_)
        held = held.reshape(expected.shape)
        for row in np.flatnonzero((held != expected).any(axis=1)).tolist():
            clauses = [*member.compiled.policy.conditions, *member.compiled.policy.payable]
            problems = [
                f"clause {clause.id}: engine {'held' if held[row, j] else 'failed'}, trace "
                f"{'true' if expected[row, j] else 'not true'}"
                for j, clause in enumerate(clauses)
                if held[row, j] != expected[row, j]
            ]
            message = f"engine and trace disagree: {'; '.join(problems)}"
            decision.errors.setdefault(row, message)
            log.error("%s %s: %s", member.policy_id, decision.columns.usccs[row], message)
