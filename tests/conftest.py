"""Shared fixtures: a database engine on SQLite and, for real, on PostgreSQL."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from testkit.databases import PG_URL, postgres_reachable, private_schema

from enterprise_registry.db import create_schema, make_engine

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header(config: pytest.Config) -> str:
    state = "reachable" if postgres_reachable() else "NOT reachable: PostgreSQL tests will be skipped"
    return f"postgresql: {PG_URL} ({state})"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a private schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with private_schema() as url:
        yield url


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    """An engine with the schema created, on each database in turn."""
    engine = make_engine(db_url)
    create_schema(engine)
    yield engine
    engine.dispose()
