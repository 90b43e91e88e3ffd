"""Tests of record validation: one strict model per kind, clear reasons, natural keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pydantic import ValidationError

from enterprise_registry.errors import RecordValidationError
from enterprise_registry.records import (
    KINDS,
    CreditListingRecord,
    EnterpriseRecord,
    HireRecord,
    TaxYearRecord,
    parse_record,
    record_key,
)

DATA = Path(__file__).parent / "data"


def good_records() -> dict[str, dict[str, Any]]:
    """The good record of each kind in data/good.jsonl, by kind."""
    lines = (DATA / "good.jsonl").read_bytes().splitlines()
    return {record["kind"]: record for record in map(orjson.loads, lines)}


@dataclass(frozen=True)
class BadCase:
    name: str
    record: object  # the object to validate, or None when the case is raw text
    raw: str | None
    field: str | None
    reason: str


def bad_cases() -> list[BadCase]:
    """The cases of data/bad_records.yaml, with their records built from the good ones."""
    good = good_records()
    cases = []
    for entry in yaml.safe_load((DATA / "bad_records.yaml").read_text(encoding="utf-8")):
        record: object = None
        if "base" in entry:
            built = dict(good[entry["base"]])
            for key in entry.get("drop", []):
                del built[key]
            built.update(entry.get("set", {}))
            record = built
        raw = entry.get("raw")
        cases.append(BadCase(entry["name"], record, raw, entry["field"], entry["reason"]))
    return cases


BAD_CASES = bad_cases()


def test_every_kind_has_a_good_record() -> None:
    assert set(good_records()) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_good_record_parses(kind: str) -> None:
    record = parse_record(good_records()[kind])
    assert record.kind == kind
    assert record.uscc == "91420600MA4T00019H"
    assert record.as_of.year in (2024, 2025)


def test_enterprise_fields_are_typed() -> None:
    record = parse_record(good_records()["enterprise"])
    assert isinstance(record, EnterpriseRecord)
    assert record.established_on == date(2012, 3, 15)
    assert record.bank_account is not None
    assert record.bank_account.account_no == "1804020109200012345"
    assert record.labor_dispatch is False


def test_bank_account_may_be_null() -> None:
    record = parse_record({**good_records()["enterprise"], "bank_account": None})
    assert isinstance(record, EnterpriseRecord)
    assert record.bank_account is None


def test_nullable_fields_accept_null() -> None:
    good = good_records()
    parse_record({**good["social_insurance_year"], "size_class": None})
    parse_record({**good["credit_listing"], "removed_on": None})
    parse_record({**good["hire"], "category": "other", "graduation_year": None, "age": None})
    parse_record({**good["hire"], "category": "unemployed_youth", "graduation_year": None})


def test_removed_on_the_day_listed_is_allowed() -> None:
    record = parse_record({**good_records()["credit_listing"], "removed_on": "2023-04-01"})
    assert isinstance(record, CreditListingRecord)
    assert record.removed_on == record.listed_on


def test_date_objects_are_accepted_but_not_datetimes() -> None:
    # Facts written in YAML (policy tests) arrive with dates already parsed.
    record = parse_record({**good_records()["hire"], "hired_on": date(2024, 7, 8)})
    assert isinstance(record, HireRecord)
    assert record.hired_on == date(2024, 7, 8)
    with pytest.raises(RecordValidationError) as info:
        parse_record({**good_records()["hire"], "hired_on": datetime(2024, 7, 8, 9, 30)})
    assert info.value.field == "hired_on"


def test_leap_day_is_a_real_date() -> None:
    parse_record({**good_records()["enterprise"], "established_on": "2024-02-29"})
    with pytest.raises(RecordValidationError, match="not a real date: 2023-02-29"):
        parse_record({**good_records()["enterprise"], "established_on": "2023-02-29"})


@pytest.mark.parametrize("case", [c for c in BAD_CASES if c.raw is None], ids=lambda c: c.name)
def test_bad_record_names_field_and_reason(case: BadCase) -> None:
    with pytest.raises(RecordValidationError) as info:
        parse_record(case.record)
    assert info.value.field == case.field
    assert case.reason in info.value.reason
    assert str(info.value) == f"{case.field}: {info.value.reason}"


@pytest.mark.parametrize("value", [[1, 2], "text", 42, None, 1.5, True])
def test_non_objects_are_refused(value: object) -> None:
    with pytest.raises(RecordValidationError, match="must be a JSON object") as info:
        parse_record(value)
    assert info.value.field is None


def test_parsed_records_are_immutable() -> None:
    record = parse_record(good_records()["tax_year"])
    assert isinstance(record, TaxYearRecord)
    with pytest.raises(ValidationError, match="frozen"):
        record.revenue_fen = 0


def test_parse_record_passes_a_parsed_record_through() -> None:
    record = parse_record(good_records()["tax_year"])
    assert parse_record(record) is record


def test_record_keys() -> None:
    good = good_records()
    keys = {kind: record_key(parse_record(record)) for kind, record in good.items()}
    uscc = "91420600MA4T00019H"
    assert keys == {
        "enterprise": (uscc,),
        "tax_year": (uscc, 2024),
        "social_insurance_year": (uscc, 2024),
        "hire": (uscc, "P00a1b2c3d4", date(2024, 7, 8)),
        "qualification": (uscc, "GR202442001234"),
        "credit_listing": (uscc, "abnormal_operation", date(2023, 4, 1)),
    }


def test_a_nullable_field_left_out_reads_as_null() -> None:
    """Feeds may omit what may be null (enterprise_registry/kinds.py: `removed_on` or null, `size_class` or null)."""
    from datetime import date

    from enterprise_registry.uscc import make

    code = make("91420600MA4T00019")
    listing = parse_record(
        {
            "kind": "credit_listing",
            "uscc": code,
            "source": "credit",
            "as_of": "2025-06-30",
            "list": "zombie",
            "listed_on": "2025-01-02",
        }
    )
    assert isinstance(listing, CreditListingRecord) and listing.removed_on is None
    hire = parse_record(
        {
            "kind": "hire",
            "uscc": code,
            "source": "human_resources",
            "as_of": "2025-06-30",
            "year": 2025,
            "hired_on": "2025-03-01",
            "person_ref": "P0001",
            "category": "graduate",
            "graduation_year": 2025,
            "labor_contract": True,
            "insured_months": 3,
            "absorption_subsidy_claimed": False,
        }
    )
    assert isinstance(hire, HireRecord) and hire.age is None and hire.hired_on == date(2025, 3, 1)
    with pytest.raises(RecordValidationError) as info:
        parse_record(
            {**hire.model_dump(mode="json"), "category": "unemployed_youth", "graduation_year": None, "age": None}
        )
    assert info.value.field == "age"
