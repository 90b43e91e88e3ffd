"""Shared fixtures: a database engine on SQLite and, for real, on PostgreSQL."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from enterprise_registry.db import create_schema, make_engine

PG_URL = os.environ.get("BENEFITS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# CI sets BENEFITS_REQUIRE_PG=1: there an unreachable PostgreSQL is a failure, never a skip.
REQUIRE_PG = os.environ.get("BENEFITS_REQUIRE_PG") == "1"
REPO_ROOT = Path(__file__).resolve().parent.parent

_pg_reachable: bool | None = None


def postgres_reachable() -> bool:
    global _pg_reachable
    if _pg_reachable is None:
        try:
            probe = make_engine(PG_URL)
            with probe.connect() as conn:
                conn.execute(text("select 1"))
            probe.dispose()
            _pg_reachable = True
        except Exception:
            _pg_reachable = False
    return _pg_reachable


def _skip_or_fail_without_postgres() -> None:
    if postgres_reachable():
        return
    message = f"PostgreSQL not reachable at {PG_URL}: PostgreSQL tests SKIPPED"
    if REQUIRE_PG:
        pytest.fail(message + " (BENEFITS_REQUIRE_PG=1 forbids skipping)")
    pytest.skip(message)


def pytest_report_header(config: pytest.Config) -> str:
    state = "reachable" if postgres_reachable() else "NOT reachable: PostgreSQL tests will be skipped"
    return f"postgresql: {PG_URL} ({state})"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a private schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    _skip_or_fail_without_postgres()
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'drop schema "{schema}" cascade'))
    admin.dispose()


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    """An engine with the schema created, on each database in turn."""
    engine = make_engine(db_url)
    create_schema(engine)
    yield engine
    engine.dispose()
