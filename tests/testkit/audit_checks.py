"""Helpers of the tests around the audit ledger: the log verified VALID, an attacker's first step
(the append-only triggers of a table dropped), and a database that refuses evaluation records
(to see what a failed write leaves behind)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from service.audit.ledger import APPEND_ONLY_TRIGGER_NAMES
from service.audit.verification import verify_audit_log


def assert_audit_valid(engine: Engine) -> None:
    """`verify_audit_log` over the whole database says VALID (its detail is the failure message)."""
    with engine.connect() as conn:
        verdict = verify_audit_log(conn)
    assert verdict.valid, verdict.detail


def drop_append_only_triggers(conn: Connection, table: str) -> None:
    """What an attacker with write access does first: drop the triggers refusing UPDATE and DELETE
    (and TRUNCATE) on `table`, so that plain SQL can change its rows."""
    dialect = conn.dialect.name
    for name in APPEND_ONLY_TRIGGER_NAMES[dialect]:
        trigger = name.format(table=table)
        if dialect == "postgresql":
            conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger} ON {table}"))
        else:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))


def refuse_records(conn: Connection) -> None:
    """From now on every INSERT into evaluation_record fails (until `accept_records`)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER test_refuse BEFORE INSERT ON evaluation_record "
                "FOR EACH ROW EXECUTE FUNCTION test_refuse()"
            )
        )
    else:
        conn.execute(
            text(
                "CREATE TRIGGER test_refuse BEFORE INSERT ON evaluation_record "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        )


def accept_records(conn: Connection) -> None:
    """Undo `refuse_records`."""
    conn.execute(
        text(
            "DROP TRIGGER test_refuse ON evaluation_record"
            if conn.dialect.name == "postgresql"
            else "DROP TRIGGER test_refuse"
        )
    )
