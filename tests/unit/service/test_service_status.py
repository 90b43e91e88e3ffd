"""Every error of every layer has a gRPC status in the one table (service/api/status.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import psycopg
import pytest
from google.rpc import code_pb2, error_details_pb2
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from enterprise_registry.db import DatabaseTimeouts, database_full, database_unavailable, make_engine
from enterprise_registry.errors import RegistryError
from rules.errors import RuleError
from service.api.status import ERROR_CODES, FULL_RETRY_DELAY_SECONDS, RETRY_DELAY_SECONDS, status_code_for, to_status
from service.errors import ServiceError


def _subclasses(base: type[BaseException]) -> list[type[BaseException]]:
    out = [base]
    for sub in base.__subclasses__():
        out += _subclasses(sub)
    return out


@pytest.mark.parametrize(
    "error",
    [e for base in (ServiceError, RuleError, RegistryError) for e in _subclasses(base)],
    ids=lambda e: e.__name__,
)
def test_every_error_maps_to_a_status(error: type[BaseException]) -> None:
    code = next((ERROR_CODES[c] for c in error.__mro__ if c in ERROR_CODES), None)
    assert code is not None and code != grpc.StatusCode.UNKNOWN


def test_bad_input_never_maps_to_internal() -> None:
    from rules.errors import PeriodNotCoveredError, PolicyNotFoundError
    from service.errors import EnterpriseNotFoundError, InvalidArgumentError

    assert status_code_for(InvalidArgumentError([("uscc", "x")])) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(PeriodNotCoveredError("p", 2024, [2025], False)) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(PolicyNotFoundError("p")) == grpc.StatusCode.NOT_FOUND
    assert status_code_for(EnterpriseNotFoundError("x")) == grpc.StatusCode.NOT_FOUND
    assert status_code_for(ValueError("boom")) is None  # unknown errors: logged, answered INTERNAL


def _sqlite_error(tmp_path: Path, statement: str, *, lock: bool = False) -> BaseException:
    """The error SQLAlchemy really raises for `statement` on a SQLite file (locked by another
    connection's write transaction when `lock`)."""
    path = tmp_path / "db.sqlite"
    engine = make_engine(f"sqlite:///{path}", timeouts=DatabaseTimeouts(busy=0.05))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("create table if not exists t (x integer)")
        if lock:
            other.execute("begin immediate")
        with pytest.raises(OperationalError) as caught, engine.begin() as conn:
            conn.execute(text(statement))
        return caught.value
    finally:
        if lock:
            other.execute("rollback")
        other.close()
        engine.dispose()


def test_a_locked_sqlite_database_is_unavailable_with_a_retry_delay(tmp_path: Path) -> None:
    error = _sqlite_error(tmp_path, "insert into t values (1)", lock=True)
    assert status_code_for(error) == grpc.StatusCode.UNAVAILABLE
    status = to_status(error)
    assert status.code == code_pb2.UNAVAILABLE and str(tmp_path) not in status.message
    [detail] = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info) and info.retry_delay.seconds == RETRY_DELAY_SECONDS


def test_a_wrong_statement_stays_internal_though_sqlite_calls_it_operational(tmp_path: Path) -> None:
    error = _sqlite_error(tmp_path, "select * from no_such_table")
    assert status_code_for(error) is None
    assert to_status(error).code == code_pb2.INTERNAL


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (psycopg.OperationalError("connection failed: Connection refused"), True),  # client side: no SQLSTATE
        (psycopg.errors.ConnectionTimeout("connection timeout expired"), True),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), True),
        (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"), True),
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
        (psycopg.errors.TooManyConnections("sorry, too many clients already"), True),
        (psycopg.InterfaceError("the connection is closed"), True),
        (psycopg.errors.UniqueViolation("duplicate key value"), False),  # our bug, never retried
        (psycopg.errors.UndefinedTable("relation does not exist"), False),
        (psycopg.errors.DivisionByZero("division by zero"), False),
    ],
    ids=lambda e: type(e).__name__ if isinstance(e, Exception) else str(e),
)
def test_psycopg_errors_are_unavailable_only_when_the_database_is_away_or_busy(
    error: Exception, unavailable: bool
) -> None:
    assert database_unavailable(error) is unavailable
    wrapped = OperationalError("select 1", {}, error)  # as SQLAlchemy raises it
    assert database_unavailable(wrapped) is unavailable
    assert status_code_for(wrapped) == (grpc.StatusCode.UNAVAILABLE if unavailable else None)


def _sqlite_write_error(tmp_path: Path, pragma: str) -> OperationalError:
    """The error SQLAlchemy really raises for a write on a SQLite file after `pragma` (a
    statement that may read the file's page count as {pages})."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("create table if not exists t (x text)"))
        with pytest.raises(OperationalError) as caught, engine.begin() as conn:
            pages = conn.execute(text("pragma page_count")).scalar_one()
            conn.execute(text(pragma.format(pages=pages)))
            conn.execute(text("insert into t values (:x)"), {"x": "x" * 100_000})  # more than a page
        return caught.value
    finally:
        engine.dispose()


def test_a_full_sqlite_database_is_resource_exhausted_by_its_code_with_a_retry_delay(tmp_path: Path) -> None:
    error = _sqlite_write_error(tmp_path, "pragma max_page_count = {pages}")
    assert isinstance(error.orig, sqlite3.OperationalError) and error.orig.sqlite_errorname == "SQLITE_FULL"
    assert database_full(error) and not database_unavailable(error)
    assert status_code_for(error) == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = to_status(error)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED and "storage is full" in status.message
    assert str(tmp_path) not in status.message
    [detail] = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info) and info.retry_delay.seconds == FULL_RETRY_DELAY_SECONDS


def test_a_read_only_sqlite_database_is_unavailable_by_its_code(tmp_path: Path) -> None:
    error = _sqlite_write_error(tmp_path, "pragma query_only = 1")
    assert isinstance(error.orig, sqlite3.OperationalError) and error.orig.sqlite_errorname == "SQLITE_READONLY"
    assert database_unavailable(error) and not database_full(error)
    assert to_status(error).code == code_pb2.UNAVAILABLE


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (psycopg.errors.DiskFull("could not extend file: No space left on device"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (
            psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
            grpc.StatusCode.UNAVAILABLE,
        ),
        (psycopg.errors.OutOfMemory("out of memory"), grpc.StatusCode.UNAVAILABLE),  # class 53, not full
    ],
    ids=lambda e: type(e).__name__ if isinstance(e, Exception) else str(e),
)
def test_postgresql_disk_full_and_read_only_are_told_by_their_sqlstate(error: Exception, code: grpc.StatusCode) -> None:
    wrapped = OperationalError("insert", {}, error)  # as SQLAlchemy raises it
    assert database_full(wrapped) is (code == grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert database_unavailable(wrapped) is (code == grpc.StatusCode.UNAVAILABLE)
    assert status_code_for(wrapped) == code
