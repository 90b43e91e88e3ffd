"""Lookups: one enterprise decided on request by the batches' own decide path, explained by the
reference evaluator, and recorded compactly through the group-commit recorder.

A lookup (ExplainEligibility, ListMatchedBenefits, `benefits evaluate`) reads the enterprise's
rows once, as a chunk of one (`service.evaluation.chunks`), and
- decides it with `decide_chunk` under the plan of every policy in force for the period (cached
  per process, so its packed rulesets stay registered and warm): the decision a batch would make;
- evaluates it with the reference evaluator (`rules.evaluator.evaluate`) on the same document,
  for the full trace the explanation shows. Outcome, amount and clause mask must be the
  decision's: a disagreement is an error (INTERNAL), logged, never answered;
- records the decision (`prepare_decision`) and waits until the recorder has committed it, so
  the evaluation id it answers with is durable.

Reuse: when a record of the same decision already exists - the same rule text on the same facts
snapshot on the same evaluation date (`find_recorded`) - the lookup answers with that record's
id instead of recording again, once the reference evaluator has decided as the record says
(otherwise the record is not faithful: DATA_LOSS, as `render_faithful` refuses it).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.engine import Engine

from rules.errors import EngineDisagreementError
from rules.evaluator import Evaluation, evaluate
from rules.loader import LoadedPolicy, PolicySet
from service.audit.decision import DECISION_FIELDS, Decision
from service.audit.records import Actor, PreparedRecord, find_recorded, prepare_decision
from service.errors import EnterpriseNotFoundError, RecordMismatchError
from service.evaluation.chunks import Chunk, read_chunk
from service.evaluation.decide import PolicyDecisions, decide_chunk, plan_for
from service.evaluation.recorder import Recorder
from service.facts_documents import _on_record

log = logging.getLogger("benefits.lookups")

_ROW = 0   # a lookup's chunk holds one enterprise
# What a decision is, beyond the engine that made it (a record of another engine version that
# decided the same is the same decision, as replay judges it).
_COMPARED = tuple(name for name in DECISION_FIELDS if name != "engine")


@dataclass(frozen=True)
class Lookup:
    """One policy's answer for the enterprise: the reference evaluation (full trace), the id of
    the record that holds its decision, and whether that record was made before (reused)."""
    policy: LoadedPolicy
    evaluation: Evaluation
    evaluation_id: str
    reused: bool


def in_force(policies: PolicySet, period: int) -> list[LoadedPolicy]:
    """The policies covering `period`, in the set's order (ListMatchedBenefits pages them)."""
    return [p for p in policies if p.covers(period)]


class Lookups:
    """Lookups against one database, recorded by one recorder."""

    def __init__(self, engine: Engine, recorder: Recorder, *, reuse: bool = True) -> None:
        self.engine, self.recorder, self.reuse = engine, recorder, reuse

    def read(self, uscc: str, fact_years: Iterable[int]) -> Chunk:
        """The enterprise's rows, read once, with its columns for `fact_years`; raises
        EnterpriseNotFoundError when nothing at all is on record for it."""
        with self.engine.connect() as conn:
            chunk = read_chunk(conn, [uscc], sorted(set(fact_years)))
        if not _on_record(chunk.rows[_ROW]):
            raise EnterpriseNotFoundError(uscc)
        return chunk

    def explain(self, policies: PolicySet, *, uscc: str, policy_id: str, period: int, today: date,
                actor: Actor) -> Lookup:
        """One enterprise under one policy: an unknown policy, or one not in force for the period,
        is refused before the database is read."""
        policy = policies.get(policy_id)
        policy.compiled(period)   # PeriodNotCoveredError names the period
        chunk = self.read(uscc, [policy.fact_year(period)])
        return self.decide(policies, chunk, [policy], period=period, today=today, actor=actor)[0]

    def decide(self, policies: PolicySet, chunk: Chunk, chosen: Sequence[LoadedPolicy], *, period: int,
               today: date, actor: Actor) -> list[Lookup]:
        """Decide, explain and record the chunk's enterprise under each of `chosen` (policies of
        `policies` in force for `period`; the chunk read with their fact years). Every new record
        of the call is committed together before this returns."""
        uscc = chunk.usccs[_ROW]
        recorded = self._recorded(chunk, chosen, period, today) if self.reuse else {}
        fresh = [p.id for p in chosen if p.id not in recorded]
        decisions = decide_chunk(plan_for(in_force(policies, period), period), chunk.columns, today=today,
                                 only=fresh) if fresh else {}
        answers: list[Lookup] = []
        pending: list[tuple[LoadedPolicy, PreparedRecord]] = []
        for policy in chosen:
            fact_year = policy.fact_year(period)
            evaluation = evaluate(policy.compiled(period), chunk.document(_ROW, fact_year), today=today)
            record = recorded.get(policy.id)
            if record is not None:
                _check_record(record, Decision.of(evaluation))
                answers.append(Lookup(policy, evaluation, str(record["evaluation_id"]), True))
                continue
            decision = _decision(decisions[policy.id], period, today)
            _check_agreement(policy, uscc, decisions[policy.id], decision, Decision.of(evaluation))
            facts_json, facts_sha256 = chunk.snapshot(_ROW, fact_year)
            prepared = prepare_decision(decision, facts_json, facts_sha256, actor)
            pending.append((policy, prepared))
            answers.append(Lookup(policy, evaluation, prepared.evaluation_id, False))
        self.recorder.record(pending)   # returns once committed: the ids answered are durable
        return answers

    def _recorded(self, chunk: Chunk, chosen: Sequence[LoadedPolicy], period: int,
                  today: date) -> dict[str, Mapping[str, Any]]:
        """The records already made of these decisions, by policy id (`find_recorded`)."""
        found: dict[str, Mapping[str, Any]] = {}
        with self.engine.connect() as conn:
            for policy in chosen:
                _, facts_sha256 = chunk.snapshot(_ROW, policy.fact_year(period))
                record = find_recorded(conn, rule_sha256=policy.sha256, facts_sha256=facts_sha256,
                                       evaluated_on=today.isoformat(), uscc=chunk.usccs[_ROW],
                                       policy_id=policy.id, period=period)
                if record is not None:
                    found[policy.id] = record
        return found


def _decision(decisions: PolicyDecisions, period: int, today: date) -> Decision:
    """The decide path's decision of the chunk's enterprise, as its record stores it."""
    policy = decisions.policy
    return Decision(policy.id, policy.version, policy.sha256, period, policy.fact_year(period),
                    decisions.columns.usccs[_ROW], today.isoformat(), decisions.outcome(_ROW),
                    decisions.amount_fen(_ROW), decisions.mask(_ROW))


def _check_agreement(policy: LoadedPolicy, uscc: str, decisions: PolicyDecisions, decided: Decision,
                     explained: Decision) -> None:
    """The decide path (vectorised trace and packed rulesets, cross-checked) and the reference
    evaluator must reach the same decision; else neither is answered."""
    problems = []
    if _ROW in decisions.errors:
        problems.append(f"decide path: {decisions.errors[_ROW]}")
    problems += [f"{name}: decide path {getattr(decided, name)!r}, reference evaluator {getattr(explained, name)!r}"
                 for name in _COMPARED if getattr(decided, name) != getattr(explained, name)]
    if problems:
        log.error("lookup %s %s: %s", policy.id, uscc, "; ".join(problems))
        raise EngineDisagreementError(policy.id, uscc, problems)


def _check_record(record: Mapping[str, Any], explained: Decision) -> None:
    """A reused record must hold the decision the reference evaluator makes of the same inputs."""
    evaluation_id = str(record.get("evaluation_id"))
    try:
        stored = Decision.from_record(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordMismatchError(evaluation_id, [f"the record is malformed: {exc}"]) from exc
    differences = [f"{name}: stored {getattr(stored, name)!r}, evaluated {getattr(explained, name)!r}"
                   for name in _COMPARED if getattr(stored, name) != getattr(explained, name)]
    if differences:
        log.error("recorded evaluation %s does not decide as its inputs do: %s", evaluation_id,
                  "; ".join(differences))
        raise RecordMismatchError(evaluation_id, differences)
