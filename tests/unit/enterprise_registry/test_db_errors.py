"""Database errors, on SQLite and PostgreSQL, are told without the values of the rows they concern:
no statement parameters (hide_parameters), no PostgreSQL DETAIL, in the text or a logged traceback."""

from __future__ import annotations

import logging
import traceback

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from enterprise_registry.db import RedactedError, error_text, is_database_error, redacted
from enterprise_registry.importer import load_records
from enterprise_registry.models import table_for
from enterprise_registry.uscc import make

ACCOUNT = "6222021803007788991"  # recognisable: must never show in an error's text
FIRST, SECOND = make("91420600MA4K60001"), make("91420600MA4K60002")


def enterprise(uscc: str) -> dict[str, object]:
    return {
        "kind": "enterprise",
        "uscc": uscc,
        "source": "market_regulation",
        "as_of": "2025-06-30",
        "name": f"襄阳脱敏测试{uscc[-3:]}有限公司",
        "org_type": "enterprise",
        "region_code": "420600",
        "industry_code": "C3484",
        "established_on": "2012-03-15",
        "status": "active",
        "labor_dispatch": False,
        "bank_account": {
            "bank_name": "中国工商银行股份有限公司襄阳分行",
            "account_no": ACCOUNT,
            "account_name": "襄阳脱敏测试",
        },
    }


def logged(exc: BaseException) -> str:
    """What a handler writes for `log.error(..., exc_info=redacted(exc))`."""
    stand_in = redacted(exc)
    record = logging.LogRecord(
        "t",
        logging.ERROR,
        __file__,
        1,
        "internal error: %s",
        (error_text(exc),),
        exc_info=(RedactedError, stand_in, stand_in.__traceback__),
    )
    return logging.Formatter().format(record)


def violation(db_engine: Engine) -> BaseException:
    """A real unique violation on the bank account, raised by the importer's own writes."""
    with db_engine.begin() as conn:
        conn.execute(text("create unique index uq_test_account on enterprise (bank_account_no)"))
    load_records([enterprise(FIRST)], db_engine)
    with pytest.raises(Exception) as info:
        load_records([enterprise(SECOND)], db_engine)
    return info.value


def test_a_constraint_violation_is_told_without_the_row(db_engine: Engine) -> None:
    exc = violation(db_engine)
    assert is_database_error(exc)
    described = error_text(exc)
    assert ACCOUNT not in described
    assert "uq_test_account" in described or "enterprise.bank_account_no" in described  # SQLite names the column
    if db_engine.dialect.name == "postgresql":
        # What it replaces: the driver's own text carries DETAIL with the row's values.
        assert ACCOUNT in "".join(traceback.format_exception(exc))
        assert described == (
            'psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "uq_test_account"'
        )
    line = logged(exc)
    assert ACCOUNT not in line
    assert line.startswith(f"internal error: {described}\nTraceback (most recent call last):")
    assert "in _upsert" in line  # the frames are kept for whoever reads the log


def test_statement_parameters_and_detail_are_hidden(db_engine: Engine) -> None:
    # A NOT NULL violation through SQLAlchemy: its text would list the parameters, and on
    # PostgreSQL DETAIL repeats the failing row ("Failing row contains (..., account, ...)").
    row = {
        "uscc": FIRST,
        "name": None,
        "org_type": "enterprise",
        "region_code": "420600",
        "industry_code": "C3484",
        "established_on": "2012-03-15",
        "status": "active",
        "labor_dispatch": False,
        "bank_account_no": ACCOUNT,
        "source": "market_regulation",
        "as_of": "2025-06-30",
    }
    with pytest.raises(Exception) as info, db_engine.begin() as conn:
        conn.execute(
            text(
                "insert into enterprise (uscc, name, org_type, region_code, industry_code, "
                "established_on, status, labor_dispatch, bank_account_no, source, as_of) "
                "values (:uscc, :name, :org_type, :region_code, :industry_code, "
                ":established_on, :status, :labor_dispatch, :bank_account_no, :source, :as_of)"
            ),
            row,
        )
    exc = info.value
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(exc)
    assert table_for("enterprise").name in error_text(exc)
    assert ACCOUNT not in error_text(exc) and ACCOUNT not in logged(exc)
    if db_engine.dialect.name == "postgresql":
        assert "Failing row contains" in str(exc) and ACCOUNT in str(exc)
        assert error_text(exc).startswith(
            'sqlalchemy.exc.IntegrityError: psycopg.errors.NotNullViolation: null value in column "name"'
        )
    else:
        assert error_text(exc) == (
            "sqlalchemy.exc.IntegrityError: sqlite3.IntegrityError: NOT NULL constraint failed: enterprise.name"
        )


def test_ordinary_errors_keep_their_message() -> None:
    assert error_text(ValueError("boom")) == "ValueError: boom"
    assert not is_database_error(ValueError("boom"))


def test_a_redacted_chain_keeps_its_shape() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        copy, frames = redacted(outer), outer.__traceback__
    assert str(copy) == "RuntimeError: outer"
    assert isinstance(copy.__cause__, RedactedError) and str(copy.__cause__) == "KeyError: 'inner'"
    assert copy.__traceback__ is frames
