"""SQLModel tables of the registry's facts, one per record kind, and the record-to-row mapping."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import BigInteger, Index, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from enterprise_registry.kinds import KEY_FIELDS, KINDS
from enterprise_registry.records import Record

# No foreign keys between the tables: departments feed independently, and a tax or hire record
# may well arrive before the market-regulation record of its enterprise.
# Each table's unique key starts with uscc, so it also serves lookups by uscc (and the hire
# index (person_ref, year) lookups by person): no separate single-column indexes to maintain.


class Enterprise(SQLModel, table=True):
    """The registry entry of one unit; the bank account columns are all null or all set."""

    __tablename__ = "enterprise"

    uscc: str = Field(primary_key=True, max_length=18)
    name: str
    org_type: str
    region_code: str
    industry_code: str
    established_on: date
    status: str
    labor_dispatch: bool
    bank_name: str | None = None
    bank_account_no: str | None = None
    bank_account_name: str | None = None
    source: str
    as_of: date


class TaxYear(SQLModel, table=True):
    """One year of tax-bureau figures; money in fen (BigInteger: fen overflow int32 quickly)."""

    __tablename__ = "tax_year"
    __table_args__ = (UniqueConstraint(*KINDS["tax_year"].key, name="uq_tax_year_key"),)

    id: int | None = Field(default=None, primary_key=True)
    uscc: str = Field(max_length=18)
    year: int
    employees: int
    revenue_fen: int = Field(sa_type=BigInteger)
    main_business_revenue_fen: int = Field(sa_type=BigInteger)
    total_assets_fen: int = Field(sa_type=BigInteger)
    tax_paid_fen: int = Field(sa_type=BigInteger)
    rd_expense_fen: int = Field(sa_type=BigInteger)
    credit_rating: str
    source: str
    as_of: date


class SocialInsuranceYear(SQLModel, table=True):
    """One year of unemployment-insurance figures of an employer."""

    __tablename__ = "social_insurance_year"
    __table_args__ = (UniqueConstraint(*KINDS["social_insurance_year"].key, name="uq_social_insurance_year_key"),)

    id: int | None = Field(default=None, primary_key=True)
    uscc: str = Field(max_length=18)
    year: int
    insured_start: int
    insured_end: int
    insured_avg_monthly: int
    ui_months_paid: int
    ui_premium_paid_fen: int = Field(sa_type=BigInteger)
    ui_back_payment_fen: int = Field(sa_type=BigInteger)
    ui_late_fee_fen: int = Field(sa_type=BigInteger)
    ui_arrears: bool
    layoffs: int
    ui_benefit_claimants: int
    size_class: str | None = None
    source: str
    as_of: date


class Hire(SQLModel, table=True):
    """One hire; (person_ref, year) is indexed to find a person hired by several employers."""

    __tablename__ = "hire"
    __table_args__ = (
        UniqueConstraint(*KINDS["hire"].key, name="uq_hire_key"),
        Index("ix_hire_person_ref_year", "person_ref", "year"),
    )

    id: int | None = Field(default=None, primary_key=True)
    uscc: str = Field(max_length=18)
    year: int
    hired_on: date
    person_ref: str = Field(max_length=64)
    category: str
    graduation_year: int | None = None
    age: int | None = None
    labor_contract: bool
    insured_months: int
    absorption_subsidy_claimed: bool
    source: str
    as_of: date


class Qualification(SQLModel, table=True):
    """A certification granted to an enterprise."""

    __tablename__ = "qualification"
    __table_args__ = (UniqueConstraint(*KINDS["qualification"].key, name="uq_qualification_key"),)

    id: int | None = Field(default=None, primary_key=True)
    uscc: str = Field(max_length=18)
    type: str
    level: str
    first_time: bool
    granted_on: date
    certificate_no: str = Field(max_length=64)
    source: str
    as_of: date


class CreditListing(SQLModel, table=True):
    """An entry on a credit list; removed_on is null while the enterprise is still listed."""

    __tablename__ = "credit_listing"
    __table_args__ = (UniqueConstraint(*KINDS["credit_listing"].key, name="uq_credit_listing_key"),)

    id: int | None = Field(default=None, primary_key=True)
    uscc: str = Field(max_length=18)
    list: str
    listed_on: date
    removed_on: date | None = None
    source: str
    as_of: date


MODEL_BY_KIND: dict[str, type[SQLModel]] = {
    "enterprise": Enterprise,
    "tax_year": TaxYear,
    "social_insurance_year": SocialInsuranceYear,
    "hire": Hire,
    "qualification": Qualification,
    "credit_listing": CreditListing,
}


def table_for(kind: str) -> Table:
    """The SQLAlchemy Core table that stores records of `kind`."""
    table: Table = MODEL_BY_KIND[kind].__table__  # type: ignore[attr-defined]
    return table


def key_columns(kind: str) -> tuple[str, ...]:
    """The columns of the unique key that a newer record of `kind` supersedes on."""
    return KEY_FIELDS[kind]


def to_row(record: Record) -> dict[str, Any]:
    """The column values of `record` for its table (the bank account is flattened)."""
    # The validated model's __dict__ holds exactly its fields: copying it is several times
    # faster than model_dump, which matters at millions of rows.
    row = dict(record.__dict__)
    del row["kind"]
    if "bank_account" in row:
        account = row.pop("bank_account")
        row["bank_name"] = account.bank_name if account is not None else None
        row["bank_account_no"] = account.account_no if account is not None else None
        row["bank_account_name"] = account.account_name if account is not None else None
    return row
