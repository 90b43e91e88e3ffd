"""A facts document as plain JSON data and back: the stored facts snapshot of an evaluation."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from rules.facts import Catalogue, Fact, FactsDocument, Record
from service.audit.canonical import canonical_json_of_typed, sha256_hex


def document_to_json(document: FactsDocument) -> dict[str, Any]:
    return {"uscc": document.uscc, "fact_year": document.fact_year,
            "facts": {name: {"value": _plain(f.value), "source": f.source, "as_of": _plain(f.as_of)}
                      for name, f in sorted(document.facts.items())},
            "collections": {name: [{"ref": r.ref, "fields": {k: _plain(v) for k, v in r.fields.items()},
                                    "source": r.source, "as_of": _plain(r.as_of)} for r in records]
                            for name, records in sorted(document.collections.items())},
            "missing": dict(sorted(document.missing.items()))}


def snapshot_of(document: FactsDocument) -> tuple[str, str]:
    """The facts snapshot of a document: its canonical JSON text and that text's SHA-256."""
    text = canonical_json_of_typed(document_to_json(document))
    return text.decode(), sha256_hex(text)


def document_from_json(data: Mapping[str, Any], catalogue: Catalogue) -> FactsDocument:
    """The inverse of `document_to_json`: dates restored by the catalogue's types."""
    facts = {name: Fact(_typed(f["value"], catalogue.facts[name].kind if name in catalogue.facts else ""),
                        f["source"], _date(f["as_of"]))
             for name, f in data["facts"].items()}
    collections = {}
    for name, records in data["collections"].items():
        types = catalogue.collections.get(name, {})
        collections[name] = [Record(r["ref"], {k: _typed(v, types[k].kind if k in types else "")
                                               for k, v in r["fields"].items()},
                                    r["source"], _date(r["as_of"])) for r in records]
    return FactsDocument(data["uscc"], data["fact_year"], facts, collections, dict(data["missing"]))


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value


def _typed(value: Any, kind: str) -> Any:
    return date.fromisoformat(value) if kind == "date" and isinstance(value, str) else value


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None
