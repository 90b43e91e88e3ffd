"""A payout batch run by partitions in worker processes, and on a local Dask cluster of two
workers (one thread each: the engine is process state), gives exactly what one process gives:
the same lines, the same decisions recorded, every enterprise once. On SQLite and PostgreSQL."""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import date
from pathlib import Path

import pytest
from api_fixtures import load_registry
from sqlalchemy import select
from sqlalchemy.engine import Engine
from testing_databases import private_schema

from enterprise_registry.db import make_engine
from enterprise_registry.synthetic import generate
from service.audit.records import Actor, evaluation_record, verify_records
from service.cli import DEFAULT_RULES, _policies
from service.payouts.batches import create_payout_schema, get_batch, lines_of, start_batch
from service.payouts.pools import DaskPool, PartitionPool, ProcessPool
from service.payouts.runner import RunSettings, create_batch, new_worker_id, run_batch
from service.payouts.tables import payout_partition
from service.payouts.verification import verify_payouts

ENTERPRISES, SEED = 240, 5
POLICY, PERIOD = "stable-jobs-refund", 2025
TODAY = date(2026, 3, 2)
OPERATOR = Actor("operator-1", "finance_operator")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Engine]]:
    """A factory of databases, each holding the same synthetic registry."""
    records = list(generate(ENTERPRISES, seed=SEED))
    engines: list[Engine] = []
    schemas: list[AbstractContextManager[str]] = []

    def new() -> Engine:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / f'db{len(engines)}.db'}"
        else:
            schemas.append(private_schema())
            url = schemas[-1].__enter__()
        load_registry(url, records)
        engine = make_engine(url)
        create_payout_schema(engine)
        engines.append(engine)
        return engine

    yield new
    for engine in engines:
        engine.dispose()
    for schema in schemas:
        schema.__exit__(None, None, None)


def _run(engine: Engine, settings: RunSettings, pool: PartitionPool | None = None) -> str:
    policies = _policies(DEFAULT_RULES)
    if pool is None:
        return create_batch(engine, policies, policy_id=POLICY, period=PERIOD, request_id="req-workers",
                            actor=OPERATOR, today=TODAY, settings=settings).batch_id
    batch = start_batch(engine, policies, policy_id=POLICY, period=PERIOD, request_id="req-workers",
                        actor=OPERATOR, today=TODAY)
    assert run_batch(engine, policies, batch.batch_id, worker=new_worker_id(), settings=settings, pool=pool)
    return batch.batch_id


def _outcome(engine: Engine, batch_id: str) -> tuple[object, ...]:
    """What the batch decided and paid, independent of how it was run."""
    batch = get_batch(engine, batch_id)
    with engine.connect() as conn:
        lines = {line["uscc"]: line["amount_fen"] for line in lines_of(conn, batch_id)}
        decisions = Counter(conn.execute(select(
            evaluation_record.c.uscc, evaluation_record.c.policy_id, evaluation_record.c.outcome,
            evaluation_record.c.amount_fen).where(evaluation_record.c.batch_id == batch_id)).all())
        assert verify_records(conn) == []
        assert verify_payouts(conn) == []
    return (batch.state, batch.evaluated_count, batch.eligible_count, batch.eligible_fen, batch.error_count,
            batch.line_count, batch.total_fen, lines, decisions)


def _partitions(engine: Engine, batch_id: str) -> list[tuple[str, str | None, int]]:
    with engine.connect() as conn:
        return [(r.after_uscc, r.last_uscc, r.done) for r in conn.execute(
            select(payout_partition).where(payout_partition.c.batch_id == batch_id)
            .order_by(payout_partition.c.partition_no))]


@contextmanager
def _dask_pool() -> Iterator[DaskPool]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield DaskPool(client)


@pytest.mark.parametrize("mode", ["processes", "dask"])
def test_partitions_in_worker_processes_decide_and_pay_what_one_process_does(
        databases: Callable[[], Engine], mode: str, caplog: pytest.LogCaptureFixture) -> None:
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
