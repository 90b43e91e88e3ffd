"""Database engines for the registry: SQLite (embedded default) and PostgreSQL (production),
and database errors told without the data they carry."""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import SQLModel, create_engine

DEFAULT_DB_URL = "sqlite:///var/benefits.db"

log = logging.getLogger("benefits.db")


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long a call waits on the database before it is told the database is unavailable
    (docs/operations.md, "The database"). Seconds; 0 turns a PostgreSQL timeout off."""

    connect: float = 5.0  # PostgreSQL: to connect, log in included (libpq connect_timeout)
    # PostgreSQL statement_timeout: one statement, lock waits included. Generous: it stops a runaway
    # statement, not a slow lookup (callers have deadlines); a batch's largest statements at 1,000,000
    # enterprises (the DRAFT's stacking, ANALYZE of millions of records) are not measured against it yet.
    statement: float = 600.0
    lock: float = 10.0  # PostgreSQL lock_timeout: one wait for a lock (the ledger's chain lock included)
    busy: float = 30.0  # SQLite busy_timeout: a writer waiting for another's write transaction

    def __post_init__(self) -> None:
        for name in ("connect", "statement", "lock", "busy"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"database timeout {name} must be 0 or more seconds, got {value}")


DEFAULT_TIMEOUTS = DatabaseTimeouts()


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and route them to psycopg 3, the driver we install."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str = DEFAULT_DB_URL, *, timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and FULL sync (the ledger must survive power loss).

    No call waits on the database without bound (`timeouts`); a `connect_timeout` in a
    PostgreSQL URL wins over `timeouts.connect`. Connections are checked before use
    (pool_pre_ping), so the pool recovers by itself when a database that went away comes back.
    Statement parameters (bank accounts, tax figures) never appear in the text of its errors.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas(timeouts))
    else:
        connect_args: dict[str, Any] = {}
        if url.startswith("postgresql") and "connect_timeout" not in make_url(url).query:
            # libpq counts whole seconds; 0 would mean "wait for ever"
            connect_args["connect_timeout"] = max(1, round(timeouts.connect)) if timeouts.connect else 0
        engine = create_engine(
            url,
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args=connect_args | kwargs.pop("connect_args", {}),
            **kwargs,
        )
        if engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _postgresql_timeouts(timeouts))
    return engine


# Database errors that say the database is away, overloaded or waited on too long, rather than
# that a statement is wrong: PostgreSQL SQLSTATE classes and codes (appendix A of its manual).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")  # connection; insufficient resources; operator
# intervention (57014 query_canceled is how statement_timeout ends a statement, 57P01 a shutdown)
_UNAVAILABLE_SQLSTATES = frozenset({"55P03"})  # lock_not_available: lock_timeout
# 25006 read_only_sql_transaction: a standby after a failover, or default_transaction_read_only.
# Writes fail until the primary is back; reads go on.
_READ_ONLY_SQLSTATES = frozenset({"25006"})
_FULL_SQLSTATES = frozenset({"53100"})  # disk_full: told apart from the rest of class 53
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
# SQLite's primary result codes (the low byte of an extended code: SQLITE_READONLY_DBMOVED...).
_SQLITE_READONLY = 8  # a read-only file or directory, PRAGMA query_only
_SQLITE_FULL = 13  # "database or disk is full": the file system, or PRAGMA max_page_count


class DatabaseUnavailableError(Exception):
    """The database is away, overloaded or busy: the same call may succeed later. Stands for
    every error `database_unavailable` recognises (the API maps it to UNAVAILABLE)."""


class DatabaseFullError(Exception):
    """The database's storage is full: writes fail until space is made, reads go on. Stands for
    every error `database_full` recognises (the API maps it to RESOURCE_EXHAUSTED)."""


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database is unreachable, overloaded, busy or read-only - a
    connection refused, lost or timed out, a statement or lock timeout, SQLite's "database is
    locked", a write refused by a standby or a read-only file - so that retrying later may
    succeed, rather than that a statement is wrong. A full disk is `database_full` instead."""
    if isinstance(exc, DatabaseUnavailableError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (PoolTimeoutError, DisconnectionError)):  # no pooled connection came free in time
        return True
    if isinstance(exc, StatementError):  # SQLAlchemy's wrapper of a driver error
        return exc.orig is not None and database_unavailable(exc.orig)
    if isinstance(exc, sqlite3.OperationalError):
        # busy: by its message ("no such table" shares the class and the generic code SQLITE_ERROR)
        return _sqlite_code(exc) == _SQLITE_READONLY or str(exc).startswith(_SQLITE_BUSY)
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return False
    if isinstance(exc, psycopg.Error) and exc.sqlstate in _READ_ONLY_SQLSTATES:  # an InternalError
        return True
    if isinstance(exc, psycopg.OperationalError):
        sqlstate = exc.sqlstate
        if sqlstate in _FULL_SQLSTATES:
            return False
        # None: raised by the client library, not a server: the connection failed or broke
        return sqlstate is None or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _UNAVAILABLE_SQLSTATES
    # "the connection is closed", "the connection is lost": a connection the database dropped
    return isinstance(exc, psycopg.InterfaceError) and exc.sqlstate is None


def database_full(exc: BaseException) -> bool:
    """Whether `exc` says the database's storage is full - SQLITE_FULL (the file system, or
    `PRAGMA max_page_count`), PostgreSQL's disk_full - told by the error's code, not its text.
    The failed statement's transaction is rolled back whole (SQLite does so by itself)."""
    if isinstance(exc, DatabaseFullError):
        return True
    if isinstance(exc, StatementError):  # SQLAlchemy's wrapper of a driver error
        return exc.orig is not None and database_full(exc.orig)
    if isinstance(exc, sqlite3.Error):
        return _sqlite_code(exc) == _SQLITE_FULL
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error) and exc.sqlstate in _FULL_SQLSTATES


def _sqlite_code(exc: sqlite3.Error) -> int | None:
    """The primary result code of a SQLite error (None for one raised by the module itself)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_database_error(exc: BaseException) -> bool:
    """Raised by SQLAlchemy or a driver (the importer also drives psycopg's cursor directly)."""
    if isinstance(exc, (SQLAlchemyError, sqlite3.Error)):
        return True
    psycopg = sys.modules.get("psycopg")  # not loaded: no psycopg error can exist
    return psycopg is not None and isinstance(exc, psycopg.Error)


def error_text(exc: BaseException) -> str:
    """An error as a log line or a caller may see it: its class and message, and for a database
    error only the class and the server's primary message, never the statement, its parameters
    or PostgreSQL's DETAIL (`Key (uscc, ...)=(...) already exists` holds the row's values)."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(exc, StatementError):  # SQLAlchemy's wrapper of a driver error
        return f"{name}: {error_text(exc.orig)}" if exc.orig is not None else name
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        sqlstate = exc.diag.sqlstate or ""
        if sqlstate.startswith("22"):
            # Data exceptions quote the offending input in the primary message itself.
            return f"{name} (SQLSTATE {sqlstate})"
        primary = exc.diag.message_primary
        if primary is None:  # raised by the client library, not the server: no diagnostics
            primary = _first_line(exc)
        return f"{name}: {primary}"
    if is_database_error(exc):  # SQLite names tables and columns, never values
        return f"{name}: {_first_line(exc)}"
    return f"{name}: {exc}"


class RedactedError(Exception):
    """Stands in for an error in a logged traceback, with `error_text` as its message."""


def redacted(exc: BaseException) -> RedactedError:
    """`exc` and the errors it was raised from, as stand-ins with the same tracebacks and
    `error_text` messages: for `exc_info=`, whose chained messages would show DETAIL text."""
    copies: dict[int, RedactedError] = {}

    def copy(error: BaseException | None) -> RedactedError | None:
        if error is None:
            return None
        if id(error) not in copies:
            stand_in = RedactedError(error_text(error)).with_traceback(error.__traceback__)
            copies[id(error)] = stand_in  # before the causes: a chain may loop
            stand_in.__cause__ = copy(error.__cause__)
            stand_in.__context__ = copy(error.__context__)
            stand_in.__suppress_context__ = error.__suppress_context__
        return copies[id(error)]

    result = copy(exc)
    assert result is not None
    return result


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


def create_schema(engine: Engine) -> None:
    """Create every table of every imported model module (idempotent)."""
    import enterprise_registry.models  # noqa: F401  (registers the tables)

    SQLModel.metadata.create_all(engine)


def _sqlite_pragmas(timeouts: DatabaseTimeouts) -> Callable[[Any, Any], None]:
    busy_ms = round(timeouts.busy * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    return on_connect


def _postgresql_timeouts(timeouts: DatabaseTimeouts) -> Callable[[Any, Any], None]:
    settings = {
        "statement_timeout": round(timeouts.statement * 1000),
        "lock_timeout": round(timeouts.lock * 1000),
    }

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            for name, ms in settings.items():  # session settings: they outlast the pool's rollbacks
                cursor.execute(f"set {name} = {int(ms)}")
        dbapi_connection.commit()  # the SETs ran in a transaction of their own; kept

    return on_connect


def _ensure_sqlite_folder(url: str) -> None:
    from pathlib import Path

    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


# A table is analysed again once it has grown by more than this since its last analysis
# (autovacuum's default scale factor); smaller tables are read whole whatever the plan.
_GROWTH_FACTOR = 1.1
_SMALL_TABLE_PAGES = 8

# By size on disk, which is always current: the row counts of pg_stat_user_tables reach it only
# when the writing backend flushes them (up to 10 s later on PostgreSQL 15), too late for a
# batch that reads its records back at once. pg_class.relpages is what the last ANALYZE (or
# CREATE INDEX, or VACUUM) saw.
# The schema's tables are chosen first (a materialised CTE): pg_relation_size locks the table it
# measures, and were it evaluated for another schema's rows it could wait on their locks.
_STALE_TABLES = text(
    "with ours as materialized (select c.oid, c.relname, c.relpages from pg_class c"
    "   join pg_namespace n on n.oid = c.relnamespace where n.nspname = current_schema() and c.relkind = 'r')"
    " select relname from ours"
    " where pg_relation_size(oid) / current_setting('block_size')::int > greatest(relpages * :growth, :small)"
    " order by relname"
)


_REFRESHING = threading.Lock()


def refresh_statistics(engine: Engine) -> list[str]:
    """Bring the planner's statistics up to date after bulk writes; the tables analysed.

    The service must not depend on autovacuum: where it is off (seen on a machine here), no table
    is ever analysed and PostgreSQL plans from default estimates (12,032 rows guessed for one
    enterprise's 5 tax rows, a lookup 9x slower at 1,000,000 enterprises). This applies
    autovacuum's threshold at the points that write in bulk (a load, a batch's records and
    grants, the server's start): only tables grown by more than 10 % since their last analysis
    are analysed, so a call after small writes costs one catalogue query.

    SQLite is left without statistics on purpose: with no `sqlite_stat1` its planner takes every
    index to be selective, which is right for this schema (every read is by enterprise or key),
    while statistics taken on a small table and never refreshed (SQLite 3.40's `PRAGMA optimize`
    analyses only tables the same connection queried) would later steer it to scans.
    """
    if engine.dialect.name != "postgresql":
        return []
    # One analysis at a time, and none waiting for another: two ANALYZEs of a table wait for each
    # other, and concurrent imports made that wait reach the lock timeout (the import, committed,
    # then answered UNAVAILABLE). A refresh already running here, or a table another process is
    # analysing (SKIP_LOCKED), is left to it; the next refresh catches up.
    if not _REFRESHING.acquire(blocking=False):
        return []
    try:
        with engine.connect() as conn:
            stale = list(conn.execute(_STALE_TABLES, {"growth": _GROWTH_FACTOR, "small": _SMALL_TABLE_PAGES}).scalars())
            if stale:
                conn.execute(text("analyze (skip_locked) " + ", ".join(f'"{name}"' for name in stale)))
            conn.commit()
        return stale
    except DBAPIError as exc:
        # Statistics are an optimisation: a table locked for longer than the lock timeout (an
        # index being built, a table altered) must not fail the import or the start that asked.
        if not database_unavailable(exc):
            raise
        log.warning("planner statistics not refreshed now (%s); the next refresh catches up", error_text(exc))
        return []
    finally:
        _REFRESHING.release()
