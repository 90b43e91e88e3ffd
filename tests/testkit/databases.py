"""The test databases: SQLite files and private schemas on the PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from enterprise_registry.db import make_engine

PG_URL = os.environ.get("BENEFITS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# CI sets BENEFITS_REQUIRE_PG=1: there an unreachable PostgreSQL is a failure, never a skip.
REQUIRE_PG = os.environ.get("BENEFITS_REQUIRE_PG") == "1"

_pg_reachable: bool | None = None


def postgres_reachable() -> bool:
    global _pg_reachable
    if _pg_reachable is None:
        try:
            probe = make_engine(PG_URL)
            try:
                with probe.connect() as conn:
                    conn.execute(text("select 1"))
            finally:
                probe.dispose()
            _pg_reachable = True
        except Exception:
            _pg_reachable = False
    return _pg_reachable


def require_postgres() -> None:
    """Skip the calling test when no PostgreSQL is reachable, saying so; fail instead in CI."""
    if postgres_reachable():
        return
    message = f"PostgreSQL not reachable at {PG_URL}: PostgreSQL tests SKIPPED"
    if REQUIRE_PG:
        pytest.fail(message + " (BENEFITS_REQUIRE_PG=1 forbids skipping)")
    pytest.skip(message)


@contextmanager
def private_schema() -> Iterator[str]:
    """A URL on the PostgreSQL server whose search_path is a fresh schema, dropped afterwards."""
    require_postgres()
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'create schema "{schema}"'))
        separator = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
        with admin.begin() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
    finally:
        admin.dispose()


# The params of a fixture that runs its tests on each database: SQLite, and PostgreSQL (marked, so
# that `-m "not postgres"` leaves it out; skipped where no server is reachable).
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def fresh_database(backend: str, folder: Path, name: str = "registry.db") -> Iterator[str]:
    """The URL of a fresh, empty database: the SQLite file `folder`/`name`, or (backend
    "postgresql") a private schema on the PostgreSQL server, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / name}"
        return
    with private_schema() as url:
        yield url
