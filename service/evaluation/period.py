"""Evaluations over the registry: every enterprise under every policy for a period."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.engine import Engine

from rules.loader import PolicySet
from rules.values import Outcome
from service.evaluation.chunks import next_usccs, read_chunk
from service.evaluation.decide import PolicyDecisions, decide_chunk, plan_for


@dataclass
class PolicySummary:
    policy_id: str
    title: str
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
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


def evaluate_period(
    policies: PolicySet,
    engine: Engine,
    *,
    period: int,
    today: date,
    policy_ids: Iterable[str] | None = None,
    chunk_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> PeriodSummary:
    """Decide every registered enterprise under every (or the given) policy for `period`, a chunk
    at a time (`service.evaluation.decide`: the engine decides, the compiled trace cross-checks).
    Errors are counted and sampled, never hidden: the summary reports them."""
    chosen = (
        [policies.get(pid) for pid in dict.fromkeys(policy_ids)]
        if policy_ids
        else [p for p in policies if p.covers(period)]
    )
    for policy in chosen:
        policy.compiled(period)  # a period the policy does not cover is refused here, by name
    plan = plan_for(chosen, period)
    summary = PeriodSummary(period, policies=[PolicySummary(p.id, p.model.title) for p in chosen])
    by_id = {s.policy_id: s for s in summary.policies}
    started = time.perf_counter()
    cursor = ""
    while True:
        with engine.connect() as conn:
            usccs = next_usccs(conn, cursor, chunk_size)
            if not usccs:
                break
            columns = read_chunk(conn, usccs, plan.fact_years).columns
        for policy_id, decisions in decide_chunk(plan, columns, today=today).items():
            _tally(by_id[policy_id], decisions, summary)
        summary.enterprises += len(usccs)
        summary.evaluations += len(usccs) * len(chosen)
        cursor = usccs[-1]
        if progress is not None:
            progress(summary.enterprises)
    summary.seconds = time.perf_counter() - started
    return summary


def _tally(target: PolicySummary, decisions: PolicyDecisions, summary: PeriodSummary) -> None:
    counts, eligible_fen, held_fen, errors = decisions.tally()
    for outcome, count in counts.items():
        target.counts[outcome] += count
    target.eligible_fen += eligible_fen
    target.held_fen += held_fen
    target.errors += errors
    for row, message in list(decisions.errors.items())[: max(0, 20 - len(summary.error_samples))]:
        summary.error_samples.append(f"{target.policy_id} {decisions.columns.usccs[row]}: {message}")
