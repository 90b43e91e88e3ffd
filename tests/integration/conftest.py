"""Fixtures of the gRPC API tests: one real server per test module and database (SQLite and
PostgreSQL), with a small registry and an auth file holding one principal per role."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from api_fixtures import (
    PG_URL,
    REQUIRE_PG,
    RULES_DIR,
    Stubs,
    channel_stubs,
    registry_records,
    write_auth_file,
)
from sqlalchemy import text

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_records
from service.config import ServeConfig
from service.server import RunningServer, create_server

_pg_reachable: bool | None = None


def _postgres_reachable() -> bool:
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
    if not _postgres_reachable():
        message = f"PostgreSQL not reachable at {PG_URL}: PostgreSQL tests SKIPPED"
        if REQUIRE_PG:
            pytest.fail(message + " (BENEFITS_REQUIRE_PG=1 forbids skipping)")
        pytest.skip(message)
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
