"""make_engine's timeouts and what a connection lost mid-statement raises, on a real PostgreSQL
(reached through a TCP proxy the test cuts) and SQLite: every one is a database that is away or
busy (`database_unavailable`), answered UNAVAILABLE by the API, never a wait without bound."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from testkit.databases import private_schema
from testkit.tcp_proxy import tcp_proxy

from enterprise_registry.db import DatabaseTimeouts, database_unavailable, make_engine
from service.audit.ledger import ledger_transaction

pytestmark = pytest.mark.postgres
TIMEOUTS = DatabaseTimeouts(connect=2, statement=1, lock=0.5)


@pytest.fixture
def engine() -> Iterator[Engine]:
    with private_schema() as url:
        engine = make_engine(url, timeouts=TIMEOUTS)
        with engine.begin() as conn:
            conn.execute(text("create table guarded (x integer)"))
        yield engine
        engine.dispose()


def test_the_timeouts_are_session_settings_of_every_connection(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.rollback()  # what the pool does on every return: the settings survive it
        shown = {
            name: conn.execute(text(f"show {name}")).scalar_one() for name in ("statement_timeout", "lock_timeout")
        }
    assert shown == {"statement_timeout": "1s", "lock_timeout": "500ms"}


def test_a_statement_running_too_long_is_cancelled_as_unavailable(engine: Engine) -> None:
    with pytest.raises(DBAPIError) as caught, engine.connect() as conn:
        conn.execute(text("select pg_sleep(30)"))
    assert database_unavailable(caught.value), caught.value.orig


def test_a_lock_waited_on_too_long_is_unavailable(engine: Engine) -> None:
    with engine.connect() as holder:
        holder.execute(text("lock table guarded in access exclusive mode"))
        with pytest.raises(DBAPIError) as caught, engine.connect() as waiter:
            waiter.execute(text("select * from guarded"))
        holder.rollback()
    assert database_unavailable(caught.value), caught.value.orig


def test_a_connection_cut_mid_statement_is_unavailable_and_the_pool_recovers() -> None:
    with private_schema() as url:
        parsed = make_url(url)
        direct = make_engine(url)
        with tcp_proxy(parsed.host or "127.0.0.1", parsed.port or 5432) as proxy:
            proxied = make_engine(
                parsed.set(port=proxy.port).render_as_string(hide_password=False),
                timeouts=DatabaseTimeouts(connect=2, statement=30),
            )
            try:
                errors: list[BaseException] = []

                def sleep() -> None:
                    try:
                        with proxied.connect() as conn:
                            conn.execute(text("select pg_sleep(10)"))
                    except BaseException as exc:
                        errors.append(exc)

                running = threading.Thread(target=sleep)
                running.start()
                for _ in range(200):  # until the statement is under way on the server (seen directly)
                    if _sleeping(direct):
                        break
                    running.join(0.05)
                else:
                    raise AssertionError("the statement never started")
                proxy.cut()
                running.join(15)
                assert not running.is_alive(), "a cut connection left the statement waiting"
                [error] = errors
                assert isinstance(error, DBAPIError) and error.connection_invalidated
                assert database_unavailable(error)
                proxy.restore()
                with proxied.connect() as conn:  # the same engine, without a restart
                    assert conn.execute(text("select 1")).scalar_one() == 1
            finally:
                proxied.dispose()
                direct.dispose()


def _sleeping(engine: Engine) -> bool:
    with engine.connect() as conn:
        query = "select count(*) from pg_stat_activity where state = 'active' and query = 'select pg_sleep(10)'"
        return bool(conn.execute(text(query)).scalar_one())


def test_the_ledger_chain_lock_is_waited_on_no_longer_than_the_lock_timeout(engine: Engine) -> None:
    # the chain lock is an advisory lock: lock_timeout bounds the wait for it too
    with ledger_transaction(engine), pytest.raises(DBAPIError) as caught, ledger_transaction(engine):
        pass
    assert database_unavailable(caught.value), caught.value.orig
