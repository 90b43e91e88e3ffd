"""A payout batch run by partitions in worker processes, and on a local Dask cluster of two
workers (one thread each: the engine is process state), gives exactly what one process gives:
the same lines, the same decisions recorded, every enterprise once. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from testkit.api_fixtures import database_factory
from testkit.databases import BACKENDS
from testkit.payout_runs import batch_counts, create_together_or_one_by_one

from enterprise_registry.synthetic import generate
from service.audit.records import Actor, evaluation_record, verify_records
from service.cli.defaults import load_policies
from service.evaluation import chunks
from service.payouts import partitions
from service.payouts.batches import get_batch, lines_of, start_batch
from service.payouts.pools import DaskPool, PartitionPool, ProcessPool
from service.payouts.runner import (
    RunSettings,
    _Run,
    create_batch,
    create_batches,
    new_worker_id,
    run_batch,
    run_batches,
    together,
)
from service.payouts.states import BatchState
from service.payouts.tables import payout_partition
from service.payouts.verification import verify_payouts

ENTERPRISES, SEED = 240, 5
POLICY, PERIOD = "stable-jobs-refund", 2025
TODAY = date(2026, 3, 2)
OPERATOR = Actor("operator-1", "finance_operator")


@pytest.fixture(params=BACKENDS)
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Engine]]:
    """A factory of databases, each holding the same synthetic registry."""
    with database_factory(request.param, tmp_path, list(generate(ENTERPRISES, seed=SEED))) as new:
        yield new


def _run(engine: Engine, settings: RunSettings, pool: PartitionPool | None = None) -> str:
    policies = load_policies()
    if pool is None:
        return create_batch(
            engine,
            policies,
            policy_id=POLICY,
            period=PERIOD,
            request_id="req-workers",
            actor=OPERATOR,
            today=TODAY,
            settings=settings,
        ).batch_id
    batch = start_batch(
        engine, policies, policy_id=POLICY, period=PERIOD, request_id="req-workers", actor=OPERATOR, today=TODAY
    )
    assert run_batch(engine, policies, batch.batch_id, worker=new_worker_id(), settings=settings, pool=pool)
    return batch.batch_id


# state, evaluated, eligible, eligible fen, errors, lines, total fen; fen by USCC; decisions
# (uscc, policy, outcome, fen) counted
Outcome = tuple[BatchState, int, int, int, int, int, int, dict[str, int], Counter[tuple[str, str, str, int]]]


def _outcome(engine: Engine, batch_id: str) -> Outcome:
    """What the batch decided and paid, independent of how it was run."""
    batch = get_batch(engine, batch_id)
    with engine.connect() as conn:
        lines: dict[str, int] = {line["uscc"]: line["amount_fen"] for line in lines_of(conn, batch_id)}
        decisions: Counter[tuple[str, str, str, int]] = Counter(
            conn.execute(
                select(
                    evaluation_record.c.uscc,
                    evaluation_record.c.policy_id,
                    evaluation_record.c.outcome,
                    evaluation_record.c.amount_fen,
                ).where(evaluation_record.c.batch_id == batch_id)
            ).all()
        )
        assert verify_records(conn) == []
        assert verify_payouts(conn) == []
    return (*batch_counts(batch), lines, decisions)


def _partitions(engine: Engine, batch_id: str) -> list[tuple[str, str | None, int]]:
    with engine.connect() as conn:
        return [
            (r.after_uscc, r.last_uscc, r.done)
            for r in conn.execute(
                select(payout_partition)
                .where(payout_partition.c.batch_id == batch_id)
                .order_by(payout_partition.c.partition_no)
            )
        ]


@contextmanager
def _dask_pool() -> Iterator[DaskPool]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,
    ):
        yield DaskPool(client)


@pytest.mark.parametrize("mode", ["processes", "dask"])
def test_partitions_in_worker_processes_decide_and_pay_what_one_process_does(
    databases: Callable[[], Engine], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    alone = databases()
    expected = _outcome(alone, _run(alone, RunSettings(chunk_size=25)))
    assert expected[0] == "DRAFT" and expected[1] == ENTERPRISES and expected[5] > 10, "a batch worth the name"

    spread = databases()
    pool_context = nullcontext(ProcessPool(2)) if mode == "processes" else _dask_pool()
    with pool_context as pool, caplog.at_level(logging.INFO, logger="benefits.payouts"):
        batch_id = _run(spread, RunSettings(chunk_size=25, workers=2, partitions=3), pool)
        if isinstance(pool, ProcessPool):
            pool.close()
    assert _outcome(spread, batch_id) == expected

    partitions = _partitions(spread, batch_id)
    assert len(partitions) == 3 and all(done for _, _, done in partitions)
    # The ranges tile the registry: each starts where the previous ended, the last is open.
    assert partitions[0][0] == "" and partitions[-1][1] is None
    assert all(partitions[i][1] == partitions[i + 1][0] for i in range(2))
    pids = {int(pid) for pid in re.findall(r"evaluated in process (\d+)", caplog.text)}
    assert pids and os.getpid() not in pids, "the partitions ran in other processes"


# -- batches run together -------------------------------------------------------------------------


def _in_force() -> list[str]:
    return [p.id for p in load_policies() if p.covers(PERIOD)]


def _outcomes(engine: Engine, settings: RunSettings, *, together: bool) -> dict[str, Outcome]:
    made = create_together_or_one_by_one(
        engine,
        load_policies(),
        [(p, f"req-{p}") for p in _in_force()],
        together=together,
        period=PERIOD,
        actor=OPERATOR,
        today=TODAY,
        settings=settings,
    )
    return {batch.policy_id: _outcome(engine, batch.batch_id) for batch in made}


def _one_by_one(engine: Engine, settings: RunSettings) -> dict[str, Outcome]:
    return _outcomes(engine, settings, together=False)


def _together(engine: Engine, settings: RunSettings) -> dict[str, Outcome]:
    return _outcomes(engine, settings, together=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_periods_batches_run_together_read_each_chunk_once_and_decide_what_they_do_one_by_one(
    databases: Callable[[], Engine], workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = databases()
    expected = _one_by_one(alone, RunSettings(chunk_size=25))
    assert len(expected) == 6 and all(o[0] == "DRAFT" and o[1] == ENTERPRISES for o in expected.values())
    assert sum(1 for o in expected.values() if o[5]) >= 3, "several batches pay someone"

    reads: list[int] = []
    real_read = chunks.read_chunk  # what partitions calls: it imports it from chunks (no re-export)

    def counted(conn: Any, usccs: Any, fact_years: Any) -> Any:
        reads.append(len(usccs))
        return real_read(conn, usccs, fact_years)

    monkeypatch.setattr(partitions, "read_chunk", counted)
    joint = databases()
    pool = ProcessPool(2) if workers > 1 else None
    try:
        settings = RunSettings(chunk_size=25, workers=workers, partitions=workers)
        made = (
            create_batches(
                joint,
                load_policies(),
                [(p, f"req-{p}") for p in _in_force()],
                period=PERIOD,
                actor=OPERATOR,
                today=TODAY,
                settings=settings,
            )
            if pool is None
            else _together_in(joint, settings, pool)
        )
    finally:
        if pool is not None:
            pool.close()
    assert {batch.policy_id: _outcome(joint, batch.batch_id) for batch in made} == expected
    if workers == 1:  # (worker processes read in their own process)
        assert sum(reads) == ENTERPRISES and len(reads) == ENTERPRISES // 25 + (ENTERPRISES % 25 > 0), (
            "one read per chunk for all six batches"
        )


def _together_in(engine: Engine, settings: RunSettings, pool: PartitionPool) -> list[Any]:
    policies = load_policies()
    started = [
        start_batch(engine, policies, policy_id=p, period=PERIOD, request_id=f"req-{p}", actor=OPERATOR, today=TODAY)
        for p in _in_force()
    ]
    ids = [batch.batch_id for batch in started]
    assert sorted(run_batches(engine, policies, ids, worker=new_worker_id(), settings=settings, pool=pool)) == sorted(
        ids
    )
    return [get_batch(engine, batch_id) for batch_id in ids]


def test_batches_of_different_evaluation_dates_run_apart_and_each_as_it_would_alone(
    databases: Callable[[], Engine],
) -> None:
    policies = load_policies()
    first, second = _in_force()[:2]
    engine = databases()
    earlier = start_batch(engine, policies, policy_id=first, period=PERIOD, request_id="a", actor=OPERATOR, today=TODAY)
    later = start_batch(
        engine, policies, policy_id=second, period=PERIOD, request_id="b", actor=OPERATOR, today=date(2026, 3, 3)
    )
    worker = new_worker_id()
    settings = RunSettings(chunk_size=25)
    runs = [_Run.load(engine, policies, b.batch_id, worker, settings) for b in (earlier, later)]
    assert [[r.batch_id for r in group.runs] for group in together(engine, runs, settings)] == [
        [earlier.batch_id],
        [later.batch_id],
    ]
    assert sorted(
        run_batches(engine, policies, [earlier.batch_id, later.batch_id], worker=worker, settings=settings)
    ) == sorted([earlier.batch_id, later.batch_id])
    reference = databases()
    for batch, day in ((earlier, TODAY), (later, date(2026, 3, 3))):
        alone = create_batch(
            reference,
            policies,
            policy_id=batch.policy_id,
            period=PERIOD,
            request_id=f"c-{day}",
            actor=OPERATOR,
            today=day,
            settings=settings,
        )
        assert _outcome(engine, batch.batch_id) == _outcome(reference, alone.batch_id)


def test_a_batch_ends_the_same_whatever_the_pages_its_end_reads_its_candidates_and_lines_in(
    databases: Callable[[], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DRAFT reads candidates and seals lines a page at a time; pages of 7 and 3 (many, with
    a remainder) give the lines, totals and seals of one page, and the root of its lines' records."""
    from service.payouts import runner, seals

    whole = databases()
    expected_id = _run(whole, RunSettings(chunk_size=25))
    expected = _outcome(whole, expected_id)
    monkeypatch.setattr(runner, "_CANDIDATES_PER_PAGE", 7)
    monkeypatch.setattr(seals, "_LINES_PER_PAGE", 3)
    paged = databases()
    batch_id = _run(paged, RunSettings(chunk_size=25))
    assert _outcome(paged, batch_id) == expected
    assert expected[5] > 7 * 3, "several pages of lines"
    from service.audit.merkle import root

    with paged.connect() as conn:
        lines = sorted(lines_of(conn, batch_id), key=lambda line: str(line["grant_id"]))
    leaves = [bytes.fromhex(line["record_sha256"]) for line in lines]
    assert get_batch(paged, batch_id).merkle_root == root(leaves).hex()
