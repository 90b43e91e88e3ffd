"""Derived facts, computed in this one place: size class, industry section, bank account on
record, staleness of yearly records, and which hire counts for a person in a year."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from enterprise_registry.sme_standard import SizeClassification, classify

SIZE_CLASS_RECORDED = "social_insurance"  # the class recorded by the social-insurance office
SIZE_CLASS_DERIVED = "sme_standard"  # derived by 工信部联企业〔2011〕300号


@dataclass(frozen=True)
class SizeClassFact:
    size_class: str
    basis: str  # SIZE_CLASS_RECORDED or SIZE_CLASS_DERIVED
    reasons: tuple[str, ...]


def size_class(
    recorded: str | None,
    industry_code: str | None,
    *,
    employees: int | None,
    revenue_fen: int | None,
    main_business_revenue_fen: int | None,
    total_assets_fen: int | None,
) -> SizeClassFact | None:
    """The social-insurance office's class where recorded; else derived by the SME standard;
    None when neither is possible (the policy decides what that means, e.g. HELD)."""
    if recorded is not None:
        return SizeClassFact(recorded, SIZE_CLASS_RECORDED, ("社会保险经办机构登记的企业规模",))
    if industry_code is None:
        return None
    derived: SizeClassification | None = classify(
        industry_code,
        employees=employees,
        revenue_fen=revenue_fen,
        main_business_revenue_fen=main_business_revenue_fen,
        total_assets_fen=total_assets_fen,
    )
    if derived is None:
        return None
    return SizeClassFact(derived.size_class, SIZE_CLASS_DERIVED, derived.reasons)


def industry_section(industry_code: str) -> str:
    """GB/T 4754-2017 section letter of an industry code (`C3484` -> `C`)."""
    return industry_code[:1].upper()


def has_bank_account(bank_account_no: str | None) -> bool:
    return bool(bank_account_no)


def yearly_record_is_final(year: int, as_of: date) -> bool:
    """A yearly record describes the whole year only if its data is as of the year's end or
    later; an earlier extract is stale for a policy that reads the full year."""
    return as_of >= date(year, 12, 31)


@dataclass(frozen=True)
class HireKey:
    uscc: str
    person_ref: str
    year: int
    hired_on: date


def counting_hires(hires: Iterable[HireKey]) -> set[HireKey]:
    """A person counts for one enterprise only in a year: the earliest hire (by `hired_on`,
    ties by USCC) among every enterprise that reported that person in that year."""
    winners: dict[tuple[str, int], HireKey] = {}
    for hire in hires:
        key = (hire.person_ref, hire.year)
        best = winners.get(key)
        if best is None or (hire.hired_on, hire.uscc) < (best.hired_on, best.uscc):
            winners[key] = hire
    return set(winners.values())
