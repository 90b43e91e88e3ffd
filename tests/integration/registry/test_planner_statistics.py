"""The planner's statistics are kept by the service itself, not left to autovacuum.

With autovacuum off (as on a machine here) PostgreSQL never analyses a table, plans from default
estimates and a lookup at 1,000,000 enterprises ran 9x slower; `refresh_statistics` analyses
what a load or a batch changed. These tests read `pg_stat_user_tables.last_analyze`, which only
an explicit ANALYZE sets, so they hold whether or not autovacuum runs on the server.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from enterprise_registry.db import DatabaseTimeouts, create_schema, make_engine, refresh_statistics
from enterprise_registry.importer import load_records
from enterprise_registry.synthetic import generate
from service.audit.records import Actor
from service.cli.defaults import load_policies
from service.payouts.batches import create_payout_schema
from service.payouts.runner import create_batch

ENTERPRISES, SEED = 300, 11


@pytest.fixture
def engine(pg_engine: Engine) -> Engine:
    create_payout_schema(pg_engine)
    return pg_engine


def _analysed(engine: Engine) -> dict[str, Any]:
    """Each table of the schema: the time of its last explicit ANALYZE (None: never)."""
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text("select relname, last_analyze from pg_stat_user_tables where schemaname = current_schema()")
            ).all()
        )


def _planned_rows(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        plan = conn.execute(text(f"explain (format json) {sql}"), params).scalar_one()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


@pytest.mark.postgres
def test_a_load_analyses_the_tables_it_filled_and_one_enterprise_is_planned_as_a_few_rows(engine: Engine) -> None:
    assert all(when is None for when in _analysed(engine).values())
    records = list(generate(ENTERPRISES, seed=SEED))
    load_records(records, engine)

    analysed = _analysed(engine)
    for table in ("enterprise", "tax_year", "social_insurance_year"):
        assert analysed[table] is not None, f"{table} not analysed after the load"
    uscc = str(records[0]["uscc"])
    # Default estimates (no statistics) put one enterprise's tax rows at about 1 % of the table's pages;
    # with statistics the planner expects the few rows an enterprise has.
    assert _planned_rows(engine, "select * from tax_year where uscc = :uscc", uscc=uscc) <= 10
    # Nothing changed since: a second call analyses nothing (one catalogue query).
    assert refresh_statistics(engine) == []


@pytest.mark.postgres
def test_a_batch_analyses_the_records_it_wrote_before_its_end_reads_them(engine: Engine) -> None:
    load_records(list(generate(ENTERPRISES, seed=SEED)), engine)
    assert _analysed(engine)["evaluation_record"] is None
    create_batch(
        engine,
        load_policies(),
        policy_id="stable-jobs-refund",
        period=2025,
        request_id="req-statistics",
        actor=Actor("operator-1", "finance_operator"),
        today=date(2026, 3, 2),
    )
    assert _analysed(engine)["evaluation_record"] is not None


@pytest.mark.postgres
def test_small_writes_after_a_load_leave_the_statistics_alone(engine: Engine) -> None:
    """Autovacuum's threshold: a table grown by less than 10 % is not worth another ANALYZE."""
    records = list(generate(ENTERPRISES + 5, seed=SEED))
    first = set(list(dict.fromkeys(str(r["uscc"]) for r in records))[:ENTERPRISES])
    load_records([r for r in records if r["uscc"] in first], engine)
    analysed = _analysed(engine)
    load_records([r for r in records if r["uscc"] not in first], engine)  # 5 enterprises more
    assert refresh_statistics(engine) == []
    assert _analysed(engine) == analysed


def test_sqlite_is_left_without_statistics(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    create_schema(engine)
    load_records(list(generate(ENTERPRISES, seed=SEED)), engine)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from sqlite_master where name = 'sqlite_stat1'")).scalar() == 0
    engine.dispose()


@pytest.mark.postgres
def test_a_table_another_session_is_analysing_is_skipped_without_waiting(engine: Engine) -> None:
    """Concurrent imports each refresh the statistics: an ANALYZE waiting for another's reached
    the lock timeout and failed an import already committed. Now a table whose ANALYZE lock
    another session holds is skipped (SKIP_LOCKED), even with a lock timeout far shorter than
    the hold, and analysed by the next refresh."""
    with engine.begin() as conn:  # a table of ~50 pages, never analysed: stale
        conn.execute(text("create table filler as select g, repeat('x', 200) as pad from generate_series(1, 7000) g"))
    impatient = make_engine(engine.url.render_as_string(hide_password=False), timeouts=DatabaseTimeouts(lock=0.2))
    try:
        with engine.connect() as holder:  # the lock an ANALYZE takes, held open
            holder.execute(text("lock table filler in share update exclusive mode"))
            assert "filler" in refresh_statistics(impatient)  # no LockNotAvailable
            assert _analysed(engine)["filler"] is None
            holder.rollback()
        refresh_statistics(impatient)
        assert _analysed(engine)["filler"] is not None
    finally:
        impatient.dispose()


@pytest.mark.postgres
def test_a_table_locked_past_the_lock_timeout_leaves_the_statistics_for_later(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Even measuring a table waits on an exclusive lock (an index built, a table altered): the
    refresh gives up at the lock timeout with a warning instead of failing what asked for it."""
    with engine.begin() as conn:
        conn.execute(text("create table filler as select g, repeat('x', 200) as pad from generate_series(1, 7000) g"))
    impatient = make_engine(engine.url.render_as_string(hide_password=False), timeouts=DatabaseTimeouts(lock=0.2))
    try:
        with engine.connect() as holder:
            holder.execute(text("lock table filler in access exclusive mode"))
            assert refresh_statistics(impatient) == []
            holder.rollback()
        assert "planner statistics not refreshed now" in caplog.text
        assert "filler" in refresh_statistics(impatient)
    finally:
        impatient.dispose()
