"""Storage faults for a running server's own database, made for real.

SQLite: PRAGMA max_page_count held at the file's size when the disk "fills" (every write that
needs a new page fails with SQLITE_FULL, "database or disk is full", as on a full file system),
and PRAGMA query_only (SQLITE_READONLY, as a read-only file). Both are per connection: they are
applied at every checkout of the server's engine, so they reach the pool's connections at once
and are lifted the same way, without a restart.

PostgreSQL: a database of the test's own switched to read-only (default_transaction_read_only)
and its sessions ended, as a failover to a standby does; the sessions the server opens again
refuse writes with SQLSTATE 25006. A full disk is not made for PostgreSQL: that needs a small
file system mounted for its data directory (or a tablespace), which these tests do not mount.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url

from enterprise_registry.db import make_engine
from service.payouts.partitions import PartitionTask, partition_engine
from testkit.databases import PG_URL, require_postgres


class SqliteStorage:
    """A full disk or a read-only file for every connection of `engine` (a SQLite engine)."""

    def __init__(self, engine: Engine) -> None:
        assert engine.dialect.name == "sqlite", engine.dialect.name
        self.engine = engine
        with engine.connect() as conn:
            self._room = int(conn.exec_driver_sql("pragma max_page_count").scalar_one())  # the default
        self._max_pages = self._room
        self._read_only = False
        event.listen(engine, "checkout", self._apply)

    def fill(self) -> int:
        """The disk is full from now on: the file may not grow beyond its present pages (returned)."""
        with self.engine.connect() as conn:
            pages = int(conn.exec_driver_sql("pragma page_count").scalar_one())
        self._max_pages = pages
        return pages

    def make_room(self) -> None:
        self._max_pages = self._room

    def read_only(self, on: bool) -> None:
        self._read_only = on

    def close(self) -> None:
        event.remove(self.engine, "checkout", self._apply)

    def _apply(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"pragma max_page_count = {int(self._max_pages)}")
        cursor.execute(f"pragma query_only = {int(self._read_only)}")
        cursor.close()


@contextmanager
def sqlite_storage(engine: Engine) -> Iterator[SqliteStorage]:
    storage = SqliteStorage(engine)
    try:
        yield storage
    finally:
        storage.close()


class PostgresDatabase:
    """A database of its own on the test server, which can be made read-only as a standby is."""

    def __init__(self) -> None:
        require_postgres()
        self.name = "t_ro_" + uuid.uuid4().hex[:12]
        self.url = make_url(PG_URL).set(database=self.name).render_as_string(hide_password=False)
        self._admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")  # CREATE DATABASE runs outside one
        self._admin_sql(f'create database "{self.name}"')

    def read_only(self, on: bool) -> None:
        """New sessions refuse writes (or accept them again), and the present ones are ended:
        the server's pool reconnects (pool_pre_ping) and meets the database as it now is."""
        if on:
            self._admin_sql(f'alter database "{self.name}" set default_transaction_read_only = on')
        else:
            self._admin_sql(f'alter database "{self.name}" reset default_transaction_read_only')
        self._admin_sql(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = :name and pid <> pg_backend_pid()",
            name=self.name,
        )

    def drop(self) -> None:
        try:
            self._admin_sql(f'drop database if exists "{self.name}" with (force)')
        finally:
            self._admin.dispose()

    def _admin_sql(self, statement: str, **params: object) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(statement), params)


@contextmanager
def postgres_database() -> Iterator[PostgresDatabase]:
    database = PostgresDatabase()
    try:
        yield database
    finally:
        database.drop()


def worker_engine_settings(task: PartitionTask) -> dict[str, str]:
    """Run in a worker process: the timeouts of the engine a partition task gets there, as the
    database reports them (and libpq's connect_timeout, as the connection was opened with)."""
    engine = partition_engine(task)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return {"busy_timeout": str(conn.exec_driver_sql("pragma busy_timeout").scalar_one())}
            found = {
                name: str(conn.execute(text(f"show {name}")).scalar_one())
                for name in ("statement_timeout", "lock_timeout")
            }
            raw = conn.connection.dbapi_connection
            assert raw is not None
            parameters = raw.info.get_parameters()
            found["connect_timeout"] = parameters["connect_timeout"]
            return found
    finally:
        engine.dispose()
