"""A facts document as plain JSON data and back: the stored facts snapshot of an evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from rules.facts import Catalogue, Fact, FactsDocument, Record
from service.audit.canonical import canonical_json_of_typed, sha256_hex


def document_to_json(document: FactsDocument) -> dict[str, Any]:
    return document_json(
        document.uscc,
        document.fact_year,
        {name: fact_json(_plain(f.value), f.source, _plain(f.as_of)) for name, f in sorted(document.facts.items())},
        {
            name: [
                record_json(r.ref, {k: _plain(v) for k, v in r.fields.items()}, r.source, _plain(r.as_of))
                for r in records
            ]
            for name, records in sorted(document.collections.items())
        },
        dict(sorted(document.missing.items())),
    )


def snapshot_of(document: FactsDocument) -> tuple[str, str]:
    """The facts snapshot of a document: its canonical JSON text and that text's SHA-256."""
    return snapshot_of_json(document_to_json(document))


# The snapshot's JSON data, described once; `document_to_json` and the chunks' fast snapshots
# (`service.evaluation.columns.ChunkRows.snapshot`, which builds it from rows) both make it so.
# Values may stay dates there: orjson writes a date as ISO 8601, the very text `_plain` gives
# (tests/unit/audit/test_facts_json.py holds the two together for every date the registry holds).


def fact_json(value: Any, source: str, as_of: date | str | None) -> dict[str, Any]:  # a date or its ISO text
    return {"value": value, "source": source, "as_of": as_of}


def record_json(ref: str, fields: dict[str, Any], source: str, as_of: date | str | None) -> dict[str, Any]:
    return {"ref": ref, "fields": fields, "source": source, "as_of": as_of}


def document_json(
    uscc: str, fact_year: int, facts: dict[str, Any], collections: dict[str, Any], missing: dict[str, str]
) -> dict[str, Any]:
    return {"uscc": uscc, "fact_year": fact_year, "facts": facts, "collections": collections, "missing": missing}


def snapshot_of_json(data: dict[str, Any]) -> tuple[str, str]:
    """The facts snapshot of a document's JSON data (`document_json`): canonical JSON text
    (sorted keys, dates as ISO 8601) and that text's SHA-256."""
    text = canonical_json_of_typed(data)
    return text.decode(), sha256_hex(text)


def document_from_json(data: Mapping[str, Any], catalogue: Catalogue) -> FactsDocument:
    """The inverse of `document_to_json`: dates restored by the catalogue's types."""
    facts = {
        name: Fact(
            _typed(f["value"], catalogue.facts[name].kind if name in catalogue.facts else ""),
            f["source"],
            _date(f["as_of"]),
        )
        for name, f in data["facts"].items()
    }
    collections = {}
    for name, records in data["collections"].items():
        types = catalogue.collections.get(name, {})
        collections[name] = [
            Record(
                r["ref"],
                {k: _typed(v, types[k].kind if k in types else "") for k, v in r["fields"].items()},
                r["source"],
                _date(r["as_of"]),
            )
            for r in records
        ]
    return FactsDocument(data["uscc"], data["fact_year"], facts, collections, dict(data["missing"]))


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _typed(value: Any, kind: str) -> Any:
    return date.fromisoformat(value) if kind == "date" and isinstance(value, str) else value


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None
