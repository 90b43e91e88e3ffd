"""Fixtures of the gRPC API tests: one real server per test module and database (SQLite and
PostgreSQL), with a small registry and an auth file holding one principal per role."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_fixtures import (
    RULES_DIR,
    Stubs,
    channel_stubs,
    registry_records,
    write_auth_file,
)
from testing_databases import private_schema

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_records
from service.config import ServeConfig
from service.server import RunningServer, create_server


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def api_db_url(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like `db_url` of tests/conftest.py, but one database per module: a fresh SQLite file, or a
    private schema on the PostgreSQL server (skipped when none is reachable, unless
    BENEFITS_REQUIRE_PG=1 makes that a failure)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('api-db') / 'registry.db'}"
        return
    with private_schema() as url:
        yield url


@pytest.fixture(scope="module")
def api_server(api_db_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A started server on a loopback port over the small registry of api_fixtures."""
    engine = make_engine(api_db_url)
    try:
        create_schema(engine)
        load_records(registry_records(), engine)
    finally:
        engine.dispose()
    auth_file = write_auth_file(tmp_path_factory.mktemp("api-auth") / "auth.yaml")
    running = create_server(ServeConfig(db_url=api_db_url, rules_dir=RULES_DIR,
                                        auth_file=auth_file, listen="127.0.0.1:0"))
    try:
        yield running
    finally:
        running.stop(grace=None)


@pytest.fixture(scope="module")
def stubs(api_server: RunningServer) -> Iterator[Stubs]:
    """Stubs of the five services on one real channel (closed before the server stops)."""
    yield from channel_stubs(api_server.port)


@pytest.fixture(scope="module")
def is_postgres(api_db_url: str) -> bool:
    return api_db_url.startswith("postgresql")
