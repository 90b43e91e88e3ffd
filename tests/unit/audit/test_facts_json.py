"""The snapshot's JSON data may hold dates as dates: orjson writes each as the very ISO 8601 text
`document_to_json` gives it, so a snapshot built from rows (`ChunkRows.snapshot`) has the bytes of
one built from a `FactsDocument`."""

from __future__ import annotations

from datetime import date, timedelta

import orjson

from enterprise_registry.kinds import MAX_YEAR
from enterprise_registry.records import MIN_DATE_YEAR
from rules.facts import Fact, FactsDocument, Record
from service.audit.facts_json import document_json, fact_json, record_json, snapshot_of, snapshot_of_json


def test_orjson_writes_every_date_the_registry_holds_as_its_isoformat() -> None:
    first, last = date(MIN_DATE_YEAR, 1, 1), date(MAX_YEAR, 12, 31)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    assert orjson.dumps(days) == orjson.dumps([day.isoformat() for day in days])
    assert orjson.dumps([date.min, date.max]) == b'["0001-01-01","9999-12-31"]'


def test_dates_left_as_dates_give_the_bytes_of_the_document() -> None:
    as_of = date(2025, 1, 31)
    document = FactsDocument(
        "91420600MA4K20001X",
        2024,
        {
            "enterprise.established_on": Fact(date(1999, 12, 31), "market_regulation", date(2025, 6, 30)),
            "derived.size_class": Fact("small", "derived", None),
            "si.ui_arrears": Fact(False, "human_resources", as_of),
        },
        {
            "hires": [
                Record(
                    "hire:P1@2024-03-01",
                    {"hired_on": date(2024, 3, 1), "age": None, "counts_for_enterprise": True},
                    "human_resources",
                    as_of,
                )
            ],
            "qualifications": [],
            "credit_listings": [],
        },
        {"tax": "no tax_year record for 2024", "enterprise.x": "测试"},
    )
    data = document_json(
        document.uscc,
        document.fact_year,
        {name: fact_json(f.value, f.source, f.as_of) for name, f in document.facts.items()},
        {
            name: [record_json(r.ref, dict(r.fields), r.source, r.as_of) for r in records]
            for name, records in document.collections.items()
        },
        dict(document.missing),
    )
    assert snapshot_of_json(data) == snapshot_of(document)
