"""Evaluations over the registry: one enterprise, or every enterprise for a period."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from rules.errors import EvaluationError
from rules.evaluator import ELIGIBLE, HELD, INELIGIBLE, UNDETERMINED, Evaluation, evaluate
from rules.facts import FactsDocument
from rules.loader import LoadedPolicy, PolicySet
from service.errors import EnterpriseNotFoundError
from service.facts_documents import DocumentSource, build_document


def evaluate_enterprise(policies: PolicySet, source: DocumentSource, *, uscc: str, policy_id: str,
                        period: int, today: date) -> Evaluation:
    """Evaluate one enterprise under one policy for one period."""
    return evaluate_with_inputs(policies, source, uscc=uscc, policy_id=policy_id, period=period,
                                today=today)[0]


def evaluate_with_inputs(policies: PolicySet, source: DocumentSource, *, uscc: str, policy_id: str,
                         period: int, today: date) -> tuple[Evaluation, FactsDocument, LoadedPolicy]:
    """The evaluation together with what it was made from, for the audit record."""
    policy = policies.get(policy_id)
    compiled = policy.compiled(period)
    document = source.document(uscc, policy.fact_year(period))
    if document is None:
        raise EnterpriseNotFoundError(uscc)
    return evaluate(compiled, document, today=today), document, policy


@dataclass
class PolicySummary:
    policy_id: str
    title: str
    counts: dict[str, int] = field(default_factory=lambda: {
        ELIGIBLE: 0, INELIGIBLE: 0, UNDETERMINED: 0, HELD: 0})
    eligible_fen: int = 0
    held_fen: int = 0
    errors: int = 0


@dataclass
class PeriodSummary:
    period: int
    enterprises: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    policies: list[PolicySummary] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.evaluations / self.seconds if self.seconds else 0.0


def evaluate_period(policies: PolicySet, source: DocumentSource, *, period: int, today: date,
                    policy_ids: Iterable[str] | None = None,
                    progress: Callable[[int], None] | None = None) -> PeriodSummary:
    """Evaluate every registered enterprise under every (or the given) policy for `period`.
    Engine errors are counted and sampled, never hidden: the summary reports them."""
    chosen = [policies.get(pid) for pid in policy_ids] if policy_ids else \
        [p for p in policies if p.covers(period)]
    compiled = {p.id: p.compiled(period) for p in chosen}
    summary = PeriodSummary(period, policies=[PolicySummary(p.id, p.model.title) for p in chosen])
    by_id = {s.policy_id: s for s in summary.policies}
    started = time.perf_counter()
    for rows in source.all_rows():
        documents = {}
        for policy in chosen:
            year = policy.fact_year(period)
            if year not in documents:
                documents[year] = build_document(rows, year)
            _tally(by_id[policy.id], policy, compiled[policy.id], documents[year], today, summary)
        summary.enterprises += 1
        if progress is not None and summary.enterprises % 1000 == 0:
            progress(summary.enterprises)
    summary.seconds = time.perf_counter() - started
    return summary


def _tally(target: PolicySummary, policy: LoadedPolicy, compiled: object, document: object,
           today: date, summary: PeriodSummary) -> None:
    summary.evaluations += 1
    try:
        result = evaluate(compiled, document, today=today)  # type: ignore[arg-type]
    except EvaluationError as exc:
        target.errors += 1
        if len(summary.error_samples) < 20:
            summary.error_samples.append(f"{policy.id}: {exc}")
        return
    target.counts[result.outcome] += 1
    if result.outcome == ELIGIBLE:
        target.eligible_fen += result.amount_fen
    elif result.outcome == HELD:
        target.held_fen += result.amount_fen
