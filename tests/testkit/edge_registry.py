"""A synthetic registry and hand-made rows at its edges, on SQLite and PostgreSQL (one per test
module), for the tests holding the chunk reader (`service.evaluation.columns`) to the facts
documents: a stale yearly record, an enterprise with nothing but its registry row, one person hired
by two enterprises, NULL fields, enterprises with rows of one kind only and none in the registry's
own table, and one with nothing on record at all."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_records
from enterprise_registry.models import table_for
from enterprise_registry.synthetic import generate
from service.facts_documents import DocumentSource, EnterpriseRows
from testkit.databases import BACKENDS, fresh_database

REGISTRY_SIZE, REGISTRY_SEED = 3000, 23
FACT_YEARS = range(2021, 2026)
CHUNK = 1100  # more than two IN lists of in_lists, not a divisor of the registry

STALE = "EDGE00000000000001"  # tax 2024 as of mid-2024: stale; social insurance 2024 final
BARE = "EDGE00000000000002"  # the registry row only, no bank account
HIRER_A = "EDGE00000000000003"  # hires a person later than B in 2024, the same day as B another
HIRER_B = "EDGE00000000000004"
NULLS = "EDGE00000000000005"  # NULL size class, age, graduation year, removal date
ORPHAN = "EDGE00000000000006"  # a hire on record, no registry row
NOWHERE = "EDGE00000000000007"  # nothing on record at all
TAX_ONLY = "EDGE00000000000008"  # a final tax record of 2024, nothing else
LISTED_ONLY = "EDGE00000000000009"  # a credit listing, nothing else
UNREGISTERED = (ORPHAN, TAX_ONLY, LISTED_ONLY)  # on record, but not in the registry's own table
EDGES = (STALE, BARE, HIRER_A, HIRER_B, NULLS, *UNREGISTERED)


def _enterprise(uscc: str, *, industry_code: str = "C3484", bank: bool = True) -> dict[str, Any]:
    return {
        "uscc": uscc,
        "name": f"测试{uscc[-2:]}有限公司",
        "org_type": "enterprise",
        "region_code": "420600",
        "industry_code": industry_code,
        "established_on": date(2010, 5, 4),
        "status": "active",
        "labor_dispatch": False,
        "bank_name": "测试银行" if bank else None,
        "bank_account_no": f"62{uscc[-6:]}" if bank else None,
        "bank_account_name": uscc if bank else None,
        "source": "market_regulation",
        "as_of": date(2025, 6, 30),
    }


def _tax(uscc: str, year: int, as_of: date) -> dict[str, Any]:
    # C (industry): 50 employees and 5,000万元 main-business revenue make a small enterprise
    return {
        "uscc": uscc,
        "year": year,
        "employees": 50,
        "revenue_fen": 6_000 * 10**6,
        "main_business_revenue_fen": 1_000 * 10**6,
        "total_assets_fen": 9_000 * 10**6,
        "tax_paid_fen": 12_345_678,
        "rd_expense_fen": 0,
        "credit_rating": "B",
        "source": "tax",
        "as_of": as_of,
    }


def _si(uscc: str, year: int, as_of: date, size_class: str | None) -> dict[str, Any]:
    return {
        "uscc": uscc,
        "year": year,
        "insured_start": 40,
        "insured_end": 45,
        "insured_avg_monthly": 42,
        "ui_months_paid": 60,
        "ui_premium_paid_fen": 500_000,
        "ui_back_payment_fen": 0,
        "ui_late_fee_fen": 0,
        "ui_arrears": False,
        "layoffs": 0,
        "ui_benefit_claimants": 0,
        "size_class": size_class,
        "source": "human_resources",
        "as_of": as_of,
    }


def _hire(
    uscc: str, person: str, hired_on: date, *, age: int | None = 23, graduation_year: int | None = 2023
) -> dict[str, Any]:
    return {
        "uscc": uscc,
        "year": hired_on.year,
        "hired_on": hired_on,
        "person_ref": person,
        "category": "graduate",
        "graduation_year": graduation_year,
        "age": age,
        "labor_contract": True,
        "insured_months": 6,
        "absorption_subsidy_claimed": False,
        "source": "human_resources",
        "as_of": date(2025, 12, 31),
    }


EDGE_ROWS: dict[str, list[dict[str, Any]]] = {
    "enterprise": [
        _enterprise(STALE),
        _enterprise(BARE, bank=False),
        _enterprise(HIRER_A),
        _enterprise(HIRER_B),
        _enterprise(NULLS),
    ],
    "tax_year": [
        _tax(STALE, 2024, date(2024, 6, 30)),
        _tax(STALE, 2025, date(2026, 3, 31)),
        _tax(NULLS, 2024, date(2025, 4, 30)),
        _tax(TAX_ONLY, 2024, date(2025, 3, 31)),
    ],
    "social_insurance_year": [_si(STALE, 2024, date(2025, 1, 31), "medium"), _si(NULLS, 2024, date(2025, 1, 31), None)],
    "hire": [
        _hire(HIRER_A, "PX-SHARED", date(2024, 3, 1)),
        _hire(HIRER_B, "PX-SHARED", date(2024, 2, 1)),
        _hire(HIRER_A, "PX-TIE", date(2024, 5, 6)),
        _hire(HIRER_B, "PX-TIE", date(2024, 5, 6)),
        _hire(HIRER_A, "PX-YEARS", date(2023, 9, 1)),
        _hire(HIRER_B, "PX-YEARS", date(2024, 1, 2)),
        _hire(NULLS, "PX-NULLS", date(2024, 7, 1), age=None, graduation_year=None),
        _hire(ORPHAN, "PX-ORPHAN", date(2024, 8, 1)),
    ],
    "qualification": [
        {
            "uscc": NULLS,
            "type": "high_tech",
            "level": "national",
            "first_time": True,
            "granted_on": date(2023, 12, 1),
            "certificate_no": "GR202342000099",
            "source": "science_technology",
            "as_of": date(2023, 12, 1),
        }
    ],
    "credit_listing": [
        {
            "uscc": NULLS,
            "list": "abnormal_operation",
            "listed_on": date(2022, 3, 1),
            "removed_on": None,
            "source": "credit",
            "as_of": date(2025, 6, 30),
        },
        {
            "uscc": NULLS,
            "list": "wage_arrears",
            "listed_on": date(2021, 1, 5),
            "removed_on": date(2021, 9, 1),
            "source": "credit",
            "as_of": date(2025, 6, 30),
        },
        {
            "uscc": LISTED_ONLY,
            "list": "zombie",
            "listed_on": date(2023, 2, 28),
            "removed_on": None,
            "source": "credit",
            "as_of": date(2025, 6, 30),
        },
    ],
}


@pytest.fixture(scope="module", params=BACKENDS)
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The synthetic registry and the edge rows, on each database (one per module)."""
    with fresh_database(request.param, tmp_path_factory.mktemp("columns")) as url:
        yield from _filled(url)


def _filled(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    create_schema(engine)
    load_records(list(generate(REGISTRY_SIZE, REGISTRY_SEED)), engine)
    with engine.begin() as conn:
        for kind, rows in EDGE_ROWS.items():
            conn.execute(insert(table_for(kind)), rows)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def reference_rows(registry: Engine) -> dict[str, EnterpriseRows]:
    """Every enterprise's rows as the documents read them, the unregistered and the nowhere one too."""
    source = DocumentSource(registry)
    rows = {r.uscc: r for r in source.all_rows(chunk_size=CHUNK)}
    for uscc in UNREGISTERED:
        unregistered = source.rows(uscc)
        assert unregistered is not None and unregistered.enterprise is None, uscc
        rows[uscc] = unregistered
    assert source.rows(NOWHERE) is None
    nowhere = EnterpriseRows(NOWHERE)
    nowhere.counting_hires = rows[ORPHAN].counting_hires
    rows[NOWHERE] = nowhere
    return rows
