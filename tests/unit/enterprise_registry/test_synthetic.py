"""Tests of the synthetic registry: deterministic, valid, loadable, varied enough for policies."""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from enterprise_registry import uscc
from enterprise_registry.clock import Clock
from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_jsonl
from enterprise_registry.records import KINDS, parse_record
from enterprise_registry.synthetic import WAN_FEN, generate, write_jsonl

Records = list[dict[str, Any]]


@pytest.fixture(scope="module")
def registry() -> Records:
    """2,000 synthetic enterprises, generated once for the module."""
    return list(generate(2000, 20250101))


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    first, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    written = write_jsonl(first, 300, 7)
    assert write_jsonl(again, 300, 7) == written
    assert first.read_bytes() == again.read_bytes()
    assert len(first.read_bytes().splitlines()) == written
    write_jsonl(other, 300, 8)
    assert other.read_bytes() != first.read_bytes()


def test_generation_streams() -> None:
    # A million enterprises must be possible: nothing is drawn before it is asked for.
    started = time.perf_counter()
    head = list(islice(generate(1_000_000, 3), 100))
    assert len(head) == 100
    assert time.perf_counter() - started < 2


def test_every_record_validates_and_enterprises_are_grouped() -> None:
    seen: set[str] = set()
    names: set[str] = set()
    current = None
    kinds: Counter[str] = Counter()
    for record in generate(3000, 11):
        parse_record(record)
        kinds[record["kind"]] += 1
        if record["kind"] == "enterprise":
            assert record["uscc"] not in seen, "records of an enterprise come together"
            assert uscc.organisation_code_ok(record["uscc"])
            seen.add(record["uscc"])
            names.add(record["name"])
            current = record["uscc"]
        else:
            assert record["uscc"] == current
    assert len(seen) == len(names) == 3000
    assert set(kinds) == set(KINDS)


def test_synthetic_feed_loads(db_engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "synth.jsonl"
    written = write_jsonl(path, 300, 5)
    # As `benefits registry load` (and so `make run`) loads it: no record as of a day to come.
    report = load_jsonl(path, db_engine, today=Clock().today())
    assert (report.records, report.stored, report.stale) == (written, written, 0)
    assert report.by_kind["enterprise"] == 300
    assert report.warnings == []


def features(records: Records) -> Counter[str]:
    """How often each feature that some policy outcome turns on occurs."""
    by_kind: dict[str, Records] = defaultdict(list)
    for record in records:
        by_kind[record["kind"]].append(record)
    found: Counter[str] = Counter()
    tax_years = {(t["uscc"], t["year"]): t for t in by_kind["tax_year"]}
    _registry_features(found, by_kind, tax_years)
    _tax_features(found, by_kind["tax_year"])
    _insurance_features(found, by_kind["social_insurance_year"])
    _hire_features(found, by_kind["hire"])
    _qualification_features(found, by_kind["qualification"], tax_years)
    for listing in by_kind["credit_listing"]:
        found[f"listed {listing['list']}"] += 1
        found["listing removed" if listing["removed_on"] else "listing current"] += 1
    return found


def _registry_features(
    found: Counter[str], by_kind: dict[str, Records], tax_years: dict[Any, Any]
) -> None:
    si_years = {(s["uscc"], s["year"]) for s in by_kind["social_insurance_year"]}
    for e in by_kind["enterprise"]:
        found[f"org_type {e['org_type']}"] += 1
        found[f"status {e['status']}"] += 1
        found[f"section {e['industry_code'][0]}"] += 1
        found[f"industry {e['industry_code'][:3]}"] += 1
        found["labor dispatch"] += e["labor_dispatch"]
        found["no bank account"] += e["bank_account"] is None
        found["established 2025 (no fact year)"] += e["established_on"] >= "2025"
        old = e["established_on"] < "2023"
        found["missing tax 2024"] += old and (e["uscc"], 2024) not in tax_years
        found["missing social insurance 2024"] += old and (e["uscc"], 2024) not in si_years


def _tax_features(found: Counter[str], tax_years: Records) -> None:
    for t in tax_years:
        found[f"credit {t['credit_rating']}"] += 1
        found["staff on a threshold"] += t["employees"] in (10, 20, 50, 100, 200, 300, 1000)
        found["staff just below a threshold"] += t["employees"] in (9, 19, 49, 99, 199, 299, 999)
        found["revenue on a threshold"] += t["revenue_fen"] % WAN_FEN == 0
        found["revenue a fen below"] += t["revenue_fen"] % WAN_FEN == WAN_FEN - 1


def _insurance_features(found: Counter[str], years: Records) -> None:
    for s in years:
        start, avg = s["insured_start"], s["insured_avg_monthly"]
        claimants = s["ui_benefit_claimants"]
        found[f"size class {s['size_class']}"] += 1
        found["ui paid < 12 months"] += s["ui_months_paid"] < 12
        found["ui paid 11 months"] += s["ui_months_paid"] == 11
        found["ui paid >= 12 months"] += s["ui_months_paid"] >= 12
        found["ui arrears"] += s["ui_arrears"]
        found["back payment"] += s["ui_back_payment_fen"] > 0
        found["late fee"] += s["ui_late_fee_fen"] > 0
        found["no insured"] += avg == 0
        # Rates compared exactly, as the policy says: claimants * 1000 <= 55 * average.
        within = claimants * 1000 <= 55 * avg
        small = start <= 30
        found["layoffs <= 5.5%"] += avg > 0 and within
        found["layoffs exactly 5.5%"] += claimants > 0 and claimants * 1000 == 55 * avg
        within_20 = claimants * 5 <= avg
        found["small employer, 5.5% < layoffs <= 20%"] += small and not within and within_20
        found["small employer, layoffs exactly 20%"] += small and 0 < claimants * 5 == avg
        found["small employer, layoffs > 20%"] += small and not within_20
        found["larger employer, layoffs > 5.5%"] += not small and not within
        found["30 insured at start"] += start == 30
        found["31 insured at start"] += start == 31


def _hire_features(found: Counter[str], hires: Records) -> None:
    persons: dict[tuple[str, int], Records] = defaultdict(list)
    for h in hires:
        persons[(h["person_ref"], h["year"])].append(h)
        found[f"hire {h['category']} in {h['year']}"] += 1
        if h["category"] == "graduate":
            found[f"graduate of year - {h['year'] - h['graduation_year']}"] += 1
        if h["category"] == "unemployed_youth":
            found[f"unemployed youth aged {h['age']}"] += 1
        found["hire without labour contract"] += not h["labor_contract"]
        found["hire insured < 3 months"] += h["insured_months"] < 3
        found["hire insured 1 month"] += h["insured_months"] == 1
        found["absorption subsidy claimed"] += h["absorption_subsidy_claimed"]
    for same_person in persons.values():
        if len({h["uscc"] for h in same_person}) > 1:
            same_day = len({h["hired_on"] for h in same_person}) < len(same_person)
            found["person hired twice, same day" if same_day else "person hired twice"] += 1


def _qualification_features(
    found: Counter[str], qualifications: Records, tax_years: dict[Any, Any]
) -> None:
    granted: dict[tuple[str, str], set[str]] = defaultdict(set)
    for q in qualifications:
        year = q["granted_on"][:4]
        first = "first" if q["first_time"] else "renewed"
        found[f"{q['type']} {q['level']} {first} {year}"] += 1
        granted[(q["uscc"], year)].add(q["type"])
        if q["type"] == "high_tech" and q["first_time"]:
            revenue = tax_years.get((q["uscc"], int(year) - 1), {}).get("revenue_fen", -1)
            found[f"first high-tech, last year's revenue {_revenue_tier(revenue)}"] += 1
    for types in granted.values():
        both = {"little_giant", "single_champion"} <= types
        found["little giant and single champion in one year"] += both
        entry = {"above_designated_size", "strategic_emerging"} <= types
        found["above size and strategic emerging in one year"] += entry


def _revenue_tier(revenue_fen: int) -> str:
    if revenue_fen < 0:
        return "unknown"
    if revenue_fen <= 5_000 * WAN_FEN:
        return "<= 50m"
    return "<= 200m" if revenue_fen <= 20_000 * WAN_FEN else "> 200m"


EXPECTED_FEATURES = [
    *(f"org_type {t}" for t in ("enterprise", "individual_business", "farmer_cooperative",
                                "social_organization", "foundation", "social_service_org",
                                "law_firm", "accounting_firm", "public_institution", "government")),
    *(f"status {s}" for s in ("active", "suspended", "liquidating", "deregistered", "revoked")),
    *(f"section {s}" for s in "ABCDEFGHIKLM"),
    "industry C36", "industry C34", "industry C35", "industry C26", "industry C13", "industry C14",
    "industry C38", "industry F51", "industry F52", "industry G54", "industry G59", "industry H61",
    "industry H62", "industry I65", "industry K70", "industry L72",
    "labor dispatch", "no bank account", "established 2025 (no fact year)",
    "missing tax 2024", "missing social insurance 2024",
    *(f"credit {r}" for r in "ABMCD"),
    "staff on a threshold", "staff just below a threshold", "revenue on a threshold",
    "revenue a fen below",
    *(f"size class {c}" for c in ("large", "medium", "small", "micro", None)),
    "ui paid < 12 months", "ui paid 11 months", "ui paid >= 12 months", "ui arrears",
    "back payment", "late fee", "no insured", "layoffs <= 5.5%", "layoffs exactly 5.5%",
    "small employer, 5.5% < layoffs <= 20%", "small employer, layoffs exactly 20%",
    "small employer, layoffs > 20%", "larger employer, layoffs > 5.5%",
    "30 insured at start", "31 insured at start",
    *(f"hire {c} in {y}" for c in ("graduate", "unemployed_youth", "other") for y in (2024, 2025)),
    *(f"graduate of year - {gap}" for gap in range(4)),
    *(f"unemployed youth aged {age}" for age in (14, 15, 16, 24, 25, 30)),
    "hire without labour contract", "hire insured < 3 months", "hire insured 1 month",
    "absorption subsidy claimed", "person hired twice", "person hired twice, same day",
    *(f"high_tech national first {y}" for y in (2024, 2025)),
    *(f"high_tech national renewed {y}" for y in (2024, 2025)),
    "first high-tech, last year's revenue <= 50m", "first high-tech, last year's revenue <= 200m",
    "first high-tech, last year's revenue > 200m",
    *(f"little_giant national first {y}" for y in (2024, 2025)),
    *(f"single_champion national first {y}" for y in (2024, 2025)),
    "little_giant provincial first 2025",
    *(f"above_designated_size provincial first {y}" for y in (2024, 2025)),
    "little giant and single champion in one year", "above size and strategic emerging in one year",
    *(f"listed {name}" for name in ("serious_dishonesty", "judgment_defaulter", "wage_arrears",
                                    "abnormal_operation", "zombie")),
    "listing removed", "listing current",
]


def test_every_outcome_relevant_feature_occurs(registry: Records) -> None:
    found = features(registry)
    missing = [name for name in EXPECTED_FEATURES if found[name] == 0]
    assert missing == []


def test_shares_are_plausible(registry: Records) -> None:
    found = features(registry)
    enterprises = 2000
    assert 0.80 <= found["org_type enterprise"] / enterprises <= 0.90
    assert 0.91 <= found["status active"] / enterprises <= 0.97
    assert 0.003 <= found["labor dispatch"] / enterprises <= 0.03
    assert 0.02 <= found["no bank account"] / enterprises <= 0.07
    assert found["section C"] > found["section F"] > found["section M"]
    si_records = sum(found[f"size class {c}"] for c in ("large", "medium", "small", "micro", None))
    assert 0.10 <= found["size class None"] / si_records <= 0.20
    assert found["ui paid >= 12 months"] > 4 * found["ui paid < 12 months"]
    assert found["credit A"] + found["credit B"] > 3 * (found["credit C"] + found["credit D"])


@pytest.mark.slow
def test_loads_100k_enterprises_quickly(tmp_path: Path) -> None:
    path = tmp_path / "synth.jsonl"
    written = write_jsonl(path, 100_000, 1)
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    create_schema(engine)
    report = load_jsonl(path, engine)
    engine.dispose()
    assert report.records == written
    assert report.seconds < 60
