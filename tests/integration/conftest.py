"""Every test below this folder is marked `integration` (real sockets, servers, worker processes,
databases), so that `-m integration` / `-m "not integration"` split the suite without a marker
written in each file. And the fixtures of the gRPC API tests: one real server per test module
and database (SQLite and PostgreSQL), with a small registry and an auth file holding one
principal per role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.api_fixtures import Stubs, channel_stubs, registry_records, serving
from testkit.databases import BACKENDS, fresh_database

from service.server import RunningServer

INTEGRATION_TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's hooks see every collected item, not only those below its folder: filter by path.
    for item in items:
        if item.path.is_relative_to(INTEGRATION_TESTS):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module", params=BACKENDS)
def api_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like `db_url` of tests/conftest.py, but one database per module: a fresh SQLite file, or a
    private schema on the PostgreSQL server (skipped when none is reachable, unless
    BENEFITS_REQUIRE_PG=1 makes that a failure)."""
    with fresh_database(request.param, tmp_path_factory.mktemp("api-db")) as url:
        yield url


@pytest.fixture(scope="module")
def api_server(api_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A started server on a loopback port over the small registry of api_fixtures."""
    with serving(api_db_url, registry_records(), tmp_path_factory.mktemp("api-auth")) as running:
        yield running


@pytest.fixture(scope="module")
def stubs(api_server: RunningServer) -> Iterator[Stubs]:
    """Stubs of the five services on one real channel (closed before the server stops)."""
    yield from channel_stubs(api_server.port)


@pytest.fixture(scope="module")
def is_postgres(api_db_url: str) -> bool:
    return api_db_url.startswith("postgresql")
