"""Shared fixtures: a database engine on SQLite and, for real, on PostgreSQL; the reference policies."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from testkit.databases import BACKENDS, PG_URL, fresh_database, postgres_reachable, private_schema
from testkit.paths import POLICIES_DIR, REPO_ROOT

from enterprise_registry.db import create_schema, make_engine
from rules.loader import PolicySet, load_policy_dir
from service.catalogue import CATALOGUE


def pytest_report_header(config: pytest.Config) -> str:
    state = "reachable" if postgres_reachable() else "NOT reachable: PostgreSQL tests will be skipped"
    return f"postgresql: {PG_URL} ({state})"


@pytest.fixture(scope="session", autouse=True)
def _commit_tested(record_testsuite_property: Callable[[str, object], None]) -> None:
    """The commit under test, in the JUnit XML (docs/reliability.md names it)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    record_testsuite_property("git_commit", done.stdout.strip() + (" with changes" if dirty.stdout.strip() else ""))


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a private schema on the PostgreSQL server."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    """The reference policies of rules/policies, loaded once per module."""
    return load_policy_dir(POLICIES_DIR, CATALOGUE)


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """An engine on a private PostgreSQL schema holding the registry's tables (PostgreSQL-only tests)."""
    with private_schema() as url:
        engine = make_engine(url)
        create_schema(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    """An engine with the schema created, on each database in turn."""
    engine = make_engine(db_url)
    create_schema(engine)
    yield engine
    engine.dispose()
