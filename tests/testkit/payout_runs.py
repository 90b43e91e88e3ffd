"""A period's batches created together or one by one: tests compare a joint run with the
one-by-one reference."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date

from sqlalchemy import select
from sqlalchemy.engine import Engine

from rules.loader import PolicySet
from service.audit.records import Actor
from service.payouts.batches import Batch
from service.payouts.runner import RunSettings, create_batch, create_batches
from service.payouts.states import BatchState
from service.payouts.tables import payout_batch


def create_together_or_one_by_one(
    engine: Engine,
    policies: PolicySet,
    requests: Sequence[tuple[str, str]],
    *,
    together: bool,
    period: int,
    actor: Actor,
    today: date,
    settings: RunSettings,
) -> list[Batch]:
    """Each (policy id, request id) a batch: all run together (`create_batches`), or each as its
    own `create_batch`, in order, run to its end before the next starts."""
    if together:
        return create_batches(engine, policies, requests, period=period, actor=actor, today=today, settings=settings)
    return [
        create_batch(
            engine,
            policies,
            policy_id=policy_id,
            period=period,
            request_id=request_id,
            actor=actor,
            today=today,
            settings=settings,
        )
        for policy_id, request_id in requests
    ]


# A batch's state and counts: evaluated, eligible, eligible fen, errors, lines, total fen.
BatchCounts = tuple[BatchState, int, int, int, int, int, int]


def batch_counts(batch: Batch) -> BatchCounts:
    """What a batch's row says of its run, to compare a joint run with the one-by-one one."""
    return (
        batch.state,
        batch.evaluated_count,
        batch.eligible_count,
        batch.eligible_fen,
        batch.error_count,
        batch.line_count,
        batch.total_fen,
    )


def wait_until_evaluating(engine: Engine, batch_id: str, enterprises: int, seconds: float = 5.0) -> None:
    """Until the batch has committed some of its chunks but not all `enterprises` (read on
    `engine`: directly, not through whatever fault the test put in the server's way)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            evaluated = conn.execute(
                select(payout_batch.c.evaluated_count).where(payout_batch.c.batch_id == batch_id)
            ).scalar_one()
        if evaluated > 0:
            assert evaluated < enterprises, "the batch ran through before the fault"
            return
        time.sleep(0.005)
    raise AssertionError("the batch never started")
