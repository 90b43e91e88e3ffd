"""Derived facts: who a shared hire counts for, staleness, size class recorded vs derived."""

from __future__ import annotations

from datetime import date

from enterprise_registry.derived import (
    SIZE_CLASS_DERIVED,
    SIZE_CLASS_RECORDED,
    HireKey,
    counting_hires,
    industry_section,
    size_class,
    yearly_record_is_final,
)


def test_earliest_hire_counts_and_ties_go_to_the_lower_uscc() -> None:
    early = HireKey("914206000000000002", "P1", 2025, date(2025, 2, 1))
    late = HireKey("914206000000000001", "P1", 2025, date(2025, 3, 1))
    tie_low = HireKey("914206000000000003", "P2", 2025, date(2025, 5, 1))
    tie_high = HireKey("914206000000000004", "P2", 2025, date(2025, 5, 1))
    other_year = HireKey("914206000000000001", "P1", 2024, date(2024, 7, 1))
    assert counting_hires([late, early, tie_high, tie_low, other_year]) == {early, tie_low, other_year}


def test_a_yearly_record_is_final_only_from_the_last_day_of_its_year() -> None:
    assert yearly_record_is_final(2024, date(2024, 12, 31))
    assert yearly_record_is_final(2024, date(2025, 1, 31))
    assert not yearly_record_is_final(2024, date(2024, 12, 30))


def test_recorded_size_class_wins_over_the_standard() -> None:
    fact = size_class(
        "micro", "C3670", employees=5000, revenue_fen=10**12, main_business_revenue_fen=10**12, total_assets_fen=10**12
    )
    assert fact is not None and (fact.size_class, fact.basis) == ("micro", SIZE_CLASS_RECORDED)


def test_size_class_derived_by_the_standard_when_not_recorded() -> None:
    fact = size_class(
        None,
        "C3670",
        employees=300,
        revenue_fen=None,
        main_business_revenue_fen=2000 * 1_000_000,
        total_assets_fen=None,
    )
    assert fact is not None and (fact.size_class, fact.basis) == ("medium", SIZE_CLASS_DERIVED)
    assert fact.reasons


def test_size_class_unknown_without_the_figures_the_standard_needs() -> None:
    assert (
        size_class(
            None, "C3670", employees=None, revenue_fen=None, main_business_revenue_fen=None, total_assets_fen=None
        )
        is None
    )
    assert (
        size_class(None, "J6620", employees=10, revenue_fen=1, main_business_revenue_fen=1, total_assets_fen=1) is None
    )


def test_industry_section() -> None:
    assert industry_section("C3484") == "C"
