"""The batch workers log a database failure by class and primary message, never the row's values
(PostgreSQL's DETAIL), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from enterprise_registry.db import error_text
from rules.loader import PolicySet
from service.payouts import runner

ACCOUNT = "6222021803002718281"


def _database_error(engine: Engine) -> Exception:
    """A real unique violation whose DETAIL (on PostgreSQL) names the account."""
    with engine.begin() as conn:
        conn.execute(text("create table secrets (account text unique)"))
        conn.execute(text("insert into secrets values (:a)"), {"a": ACCOUNT})
    try:
        with engine.begin() as conn:
            conn.execute(text("insert into secrets values (:a)"), {"a": ACCOUNT})
    except Exception as exc:
        return exc
    raise AssertionError("the second insert was accepted")


def test_a_failed_batch_is_logged_without_the_row(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failure = _database_error(db_engine)

    def fail(*_args: object, **_kwargs: object) -> bool:
        raise failure

    monkeypatch.setattr(runner, "run_batches", fail)
    workers = runner.BatchWorkers(db_engine, lambda: PolicySet([], "none"))
    with caplog.at_level(logging.ERROR, logger="benefits.payouts"):
        workers._run(["pb_test"])
    assert f"batch pb_test failed; it will be retried: {error_text(failure)}" in caplog.text
    assert "Traceback" in caplog.text and ACCOUNT not in caplog.text


def test_a_failed_scan_is_logged_without_the_row(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failure = _database_error(db_engine)

    def fail(_engine: Engine) -> list[list[str]]:
        raise failure

    monkeypatch.setattr(runner, "claimable_groups", fail)
    workers = runner.BatchWorkers(db_engine, lambda: PolicySet([], "none"))
    with caplog.at_level(logging.ERROR, logger="benefits.payouts"):
        workers.start()
        deadline = time.monotonic() + 10
        while "batch scan failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        workers.stop(timeout=10)
    assert f"batch scan failed: {error_text(failure)}" in caplog.text
    assert ACCOUNT not in caplog.text
