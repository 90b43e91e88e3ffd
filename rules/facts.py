"""What an evaluation reads: the fact catalogue (names and types) and one enterprise's facts document.

The rules package does not know where facts come from; the service builds documents from the
registry and passes the catalogue in, so that policies can be checked against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

ScalarKind = Literal["int", "bool", "str", "date"]
# The magnitude assumed of an integer nothing bounds more tightly (a count over records, a term):
# the catalogue gives each registry fact its own bound, from the registry's description.
DEFAULT_MAX_ABS = 10**15
FactValue = int | bool | str | date


@dataclass(frozen=True)
class FactType:
    kind: ScalarKind
    label: str  # Chinese name shown in explanations
    values: tuple[str, ...] | None = None  # allowed values of an enumeration
    max_abs: int = DEFAULT_MAX_ABS  # largest magnitude the registry accepts (int facts)


@dataclass(frozen=True)
class Catalogue:
    """Every name a policy may read: scalar facts, and collections of records with their fields."""

    facts: Mapping[str, FactType]
    collections: Mapping[str, Mapping[str, FactType]]
    collection_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fact:
    value: FactValue
    source: str  # the department that holds it, or "derived"
    as_of: date | None  # the date the department's data is true for


@dataclass(frozen=True)
class Record:
    """One record of a collection (a hire, a qualification, a credit listing)."""

    ref: str  # e.g. "hire:P000123@2025-03-01", for traces
    fields: Mapping[str, FactValue | None]
    source: str
    as_of: date | None


@dataclass(frozen=True)
class FactsDocument:
    """Everything known about one enterprise for one fact year. Missing facts are absent, and
    `missing` says why a whole group is absent (e.g. `si`: no 2024 social-insurance record)."""

    uscc: str
    fact_year: int
    facts: Mapping[str, Fact]
    collections: Mapping[str, Sequence[Record]]
    missing: Mapping[str, str] = field(default_factory=dict)

    def why_missing(self, name: str) -> str:
        group = name.split(".", 1)[0]
        return self.missing.get(name) or self.missing.get(group) or "no value on record"
