"""Tests of the synthetic registry: deterministic, valid, loadable, varied enough for policies,
with facts for every year and outcomes for every period the reference pack covers."""

from __future__ import annotations

import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from enterprise_registry import uscc
from enterprise_registry.clock import Clock
from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.derived import yearly_record_is_final
from enterprise_registry.importer import load_jsonl, load_records
from enterprise_registry.records import KINDS, parse_record
from enterprise_registry.synthetic import (
    EDGE_CYCLE,
    FACT_YEARS,
    HIRE_YEARS,
    PERIOD_YEARS,
    REGISTRY_AS_OF,
    WAN_FEN,
    generate,
    write_jsonl,
)
from rules.loader import PolicySet
from rules.values import Outcome
from service.cli.defaults import load_policies
from service.evaluation.period import evaluate_period

Records = list[dict[str, Any]]
Coverage = set[tuple[str, int]]

# As `make run` builds its registry (COUNT, SEED in the Makefile).
RUN_COUNT, RUN_SEED = 20_000, 7
STABLE_JOBS, JOB_EXPANSION = "stable-jobs-refund", "job-expansion-subsidy"


@pytest.fixture(scope="module")
def registry() -> Records:
    """One edge-case cycle of synthetic enterprises (every edge case in every period), generated
    once for the module."""
    return list(generate(EDGE_CYCLE, 20250101))


@pytest.fixture(scope="module")
def pack() -> PolicySet:
    return load_policies()


def pack_coverage(policies: PolicySet) -> Coverage:
    """Every (policy, period) the pack covers: each policy's periods within the span its policies
    name (an open-ended policy counts up to the last period any policy names)."""
    named = {year for policy in policies for year in policy.model.effective.listed()}
    span = range(min(named), max(named) + 1)
    return {(policy.id, year) for policy in policies for year in span if policy.covers(year)}


def test_periods_and_fact_years_are_the_packs(pack: PolicySet) -> None:
    coverage = pack_coverage(pack)
    assert {period for _, period in coverage} == set(PERIOD_YEARS)
    read = {pack.get(policy_id).fact_year(period) for policy_id, period in coverage}
    assert read == set(FACT_YEARS)
    assert set(HIRE_YEARS) >= read
    assert date(max(FACT_YEARS), 12, 31) < REGISTRY_AS_OF


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    first, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    written = write_jsonl(first, EDGE_CYCLE, 7)
    assert write_jsonl(again, EDGE_CYCLE, 7) == written
    assert first.read_bytes() == again.read_bytes()
    assert len(first.read_bytes().splitlines()) == written
    write_jsonl(other, EDGE_CYCLE, 8)
    assert other.read_bytes() != first.read_bytes()


def test_a_larger_registry_starts_with_the_smaller_one() -> None:
    # Draws depend on the unit's index and the stream so far, not on the count (but for names,
    # which grow a character for very large registries).
    small = list(generate(300, 7))
    assert list(islice(generate(3000, 7), len(small))) == small


def test_generation_streams() -> None:
    # A million enterprises must be possible: nothing is drawn before it is asked for.
    started = time.perf_counter()
    head = list(islice(generate(1_000_000, 3), 100))
    assert len(head) == 100
    assert time.perf_counter() - started < 2


def _peak_bytes(count: int) -> int:
    tracemalloc.start()
    try:
        for _ in generate(count, 5):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_count() -> None:
    small, large = _peak_bytes(500), _peak_bytes(4000)  # the ring of recent hires is full by 500
    assert large < 1.5 * small + 100_000, (small, large)


def test_every_record_validates_and_enterprises_are_grouped() -> None:
    seen: set[str] = set()
    names: set[str] = set()
    current = None
    kinds: Counter[str] = Counter()
    for record in generate(3000, 11):
        parse_record(record)
        assert record["as_of"] <= REGISTRY_AS_OF.isoformat(), record
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


def test_every_fact_year_is_present(registry: Records) -> None:
    years: dict[str, Counter[int]] = defaultdict(Counter)
    for record in registry:
        kind = record["kind"]
        if kind in ("tax_year", "social_insurance_year", "hire"):
            years[kind][record["year"]] += 1
        elif kind == "qualification":
            years[kind][int(record["granted_on"][:4])] += 1
        elif kind == "credit_listing":
            years[kind][int(record["listed_on"][:4])] += 1
    for kind in ("tax_year", "social_insurance_year", "qualification", "credit_listing"):
        assert set(FACT_YEARS) <= set(years[kind]), kind
    assert set(years["hire"]) == set(HIRE_YEARS)
    # Most units have yearly records of every fact year (the younger ones not of the first).
    units = sum(1 for r in registry if r["kind"] == "enterprise")
    for year in FACT_YEARS:
        assert years["social_insurance_year"][year] > 0.6 * units, year
        assert years["tax_year"][year] > 0.6 * units, year


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


def _registry_features(found: Counter[str], by_kind: dict[str, Records], tax_years: dict[Any, Any]) -> None:
    si_years = {(s["uscc"], s["year"]) for s in by_kind["social_insurance_year"]}
    for e in by_kind["enterprise"]:
        found[f"org_type {e['org_type']}"] += 1
        found[f"status {e['status']}"] += 1
        found[f"section {e['industry_code'][0]}"] += 1
        found[f"industry {e['industry_code'][:3]}"] += 1
        found["labor dispatch"] += e["labor_dispatch"]
        found["no bank account"] += e["bank_account"] is None
        established = int(e["established_on"][:4])
        found[f"established {established}"] += 1
        for year in FACT_YEARS:
            if established <= year:
                taxed = e["org_type"] != "government"
                found[f"missing tax {year}"] += taxed and (e["uscc"], year) not in tax_years
                found[f"missing social insurance {year}"] += (e["uscc"], year) not in si_years


def _yearly_features(found: Counter[str], record: dict[str, Any], flags: dict[str, bool]) -> None:
    """Count each feature overall and in the record's year."""
    final = yearly_record_is_final(record["year"], date.fromisoformat(record["as_of"]))
    flags = {**flags, f"{record['kind']} stale": not final}
    for name, present in flags.items():
        found[name] += present
        found[f"{name} in {record['year']}"] += present


def _tax_features(found: Counter[str], tax_years: Records) -> None:
    for t in tax_years:
        _yearly_features(
            found,
            t,
            {
                f"credit {t['credit_rating']}": True,
                "staff on a threshold": t["employees"] in (10, 20, 50, 100, 200, 300, 1000),
                "staff just below a threshold": t["employees"] in (9, 19, 49, 99, 199, 299, 999),
                "revenue on a threshold": t["revenue_fen"] % WAN_FEN == 0,
                "revenue a fen below": t["revenue_fen"] % WAN_FEN == WAN_FEN - 1,
            },
        )


def _insurance_features(found: Counter[str], years: Records) -> None:
    for s in years:
        start, avg = s["insured_start"], s["insured_avg_monthly"]
        claimants = s["ui_benefit_claimants"]
        # Rates compared exactly, as the policy says: claimants * 1000 <= 55 * average.
        within = claimants * 1000 <= 55 * avg
        small = start <= 30
        within_20 = claimants * 5 <= avg
        _yearly_features(
            found,
            s,
            {
                f"size class {s['size_class']}": True,
                "ui paid < 12 months": s["ui_months_paid"] < 12,
                "ui paid 11 months": s["ui_months_paid"] == 11,
                "ui paid >= 12 months": s["ui_months_paid"] >= 12,
                "ui arrears": s["ui_arrears"],
                "back payment": s["ui_back_payment_fen"] > 0,
                "late fee": s["ui_late_fee_fen"] > 0,
                "no insured": avg == 0,
                "layoffs <= 5.5%": avg > 0 and within,
                "layoffs exactly 5.5%": claimants > 0 and claimants * 1000 == 55 * avg,
                "small employer, 5.5% < layoffs <= 20%": small and not within and within_20,
                "small employer, layoffs exactly 20%": small and 0 < claimants * 5 == avg,
                "small employer, layoffs > 20%": small and not within_20,
                "larger employer, layoffs > 5.5%": not small and not within,
                "30 insured at start": start == 30,
                "31 insured at start": start == 31,
            },
        )


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


def _qualification_features(found: Counter[str], qualifications: Records, tax_years: dict[Any, Any]) -> None:
    granted: dict[tuple[str, str], set[str]] = defaultdict(set)
    for q in qualifications:
        year = q["granted_on"][:4]
        first = "first" if q["first_time"] else "renewed"
        found[f"{q['type']} {q['level']} {first} {year}"] += 1
        granted[(q["uscc"], year)].add(q["type"])
        if q["type"] == "high_tech" and q["first_time"]:
            revenue = tax_years.get((q["uscc"], int(year) - 1), {}).get("revenue_fen", -1)
            found[f"first high-tech, last year's revenue {_revenue_tier(revenue)}"] += 1
    for (_, year), types in granted.items():
        both = {"little_giant", "single_champion"} <= types
        found[f"little giant and single champion in {year}"] += both
        entry = {"above_designated_size", "strategic_emerging"} <= types
        found[f"above size and strategic emerging in {year}"] += entry


def _revenue_tier(revenue_fen: int) -> str:
    if revenue_fen < 0:
        return "unknown"
    if revenue_fen <= 5_000 * WAN_FEN:
        return "<= 50m"
    return "<= 200m" if revenue_fen <= 20_000 * WAN_FEN else "> 200m"


# Features of yearly records that some edge case puts in every fact year.
YEARLY_EDGE_FEATURES = [
    "staff on a threshold",
    "staff just below a threshold",
    "revenue on a threshold",
    "revenue a fen below",
    "credit D",
    "size class None",
    "ui paid 11 months",
    "ui arrears",
    "no insured",
    "layoffs exactly 5.5%",
    "small employer, layoffs exactly 20%",
    "30 insured at start",
    "31 insured at start",
]

EXPECTED_FEATURES = [
    *(
        f"org_type {t}"
        for t in (
            "enterprise",
            "individual_business",
            "farmer_cooperative",
            "social_organization",
            "foundation",
            "social_service_org",
            "law_firm",
            "accounting_firm",
            "public_institution",
            "government",
        )
    ),
    *(f"status {s}" for s in ("active", "suspended", "liquidating", "deregistered", "revoked")),
    *(f"section {s}" for s in "ABCDEFGHIKLM"),
    "industry C36",
    "industry C34",
    "industry C35",
    "industry C26",
    "industry C13",
    "industry C14",
    "industry C38",
    "industry F51",
    "industry F52",
    "industry G54",
    "industry G59",
    "industry H61",
    "industry H62",
    "industry I65",
    "industry K70",
    "industry L72",
    "labor dispatch",
    "no bank account",
    *(f"established {year}" for year in (*FACT_YEARS, REGISTRY_AS_OF.year)),  # the last: none yet
    *(f"missing {what} {year}" for what in ("tax", "social insurance") for year in FACT_YEARS),
    *(f"{name} in {year}" for name in YEARLY_EDGE_FEATURES for year in FACT_YEARS),
    *(f"credit {r}" for r in "ABMC"),
    *(f"size class {c}" for c in ("large", "medium", "small", "micro")),
    "ui paid < 12 months",
    "ui paid >= 12 months",
    "back payment",
    "late fee",
    "layoffs <= 5.5%",
    "small employer, 5.5% < layoffs <= 20%",
    "small employer, layoffs > 20%",
    "larger employer, layoffs > 5.5%",
    *(f"hire {c} in {y}" for c in ("graduate", "unemployed_youth", "other") for y in HIRE_YEARS),
    *(f"graduate of year - {gap}" for gap in range(4)),
    *(f"unemployed youth aged {age}" for age in (14, 15, 16, 24, 25, 30)),
    "hire without labour contract",
    "hire insured < 3 months",
    "hire insured 1 month",
    "absorption subsidy claimed",
    "person hired twice",
    "person hired twice, same day",
    *(f"high_tech national {first} {y}" for first in ("first", "renewed") for y in PERIOD_YEARS),
    "first high-tech, last year's revenue <= 50m",
    "first high-tech, last year's revenue <= 200m",
    "first high-tech, last year's revenue > 200m",
    *(f"{title} national first {y}" for title in ("little_giant", "single_champion") for y in PERIOD_YEARS),
    *(f"little_giant provincial first {y}" for y in PERIOD_YEARS),
    *(f"above_designated_size provincial first {y}" for y in PERIOD_YEARS),
    *(f"little giant and single champion in {y}" for y in PERIOD_YEARS),
    *(f"above size and strategic emerging in {y}" for y in PERIOD_YEARS),
    *(
        f"listed {name}"
        for name in ("serious_dishonesty", "judgment_defaulter", "wage_arrears", "abnormal_operation", "zombie")
    ),
    "listing removed",
    "listing current",
]


def test_every_outcome_relevant_feature_occurs(registry: Records) -> None:
    found = features(registry)
    missing = [name for name in EXPECTED_FEATURES if found[name] == 0]
    assert missing == []


def _previous_year_periods(pack: PolicySet) -> dict[int, int]:
    """Period -> the fact year its yearly records come from, for policies reading tax or si."""
    return {
        period: pack.get(policy_id).fact_year(period)
        for policy_id, period in pack_coverage(pack)
        if policy_id == STABLE_JOBS
    }


def test_stale_and_missing_records_in_every_year_a_period_reads(registry: Records, pack: PolicySet) -> None:
    found = features(registry)
    for period, year in _previous_year_periods(pack).items():
        for kind in ("tax_year", "social_insurance_year"):
            assert found[f"{kind} stale in {year}"] > 0, (period, kind)
        assert found[f"missing tax {year}"] > 0 and found[f"missing social insurance {year}"] > 0
    # A record extracted on its year's last day is final: the boundary itself occurs.
    on_the_day = [
        r for r in registry if r["kind"] in ("tax_year", "social_insurance_year") and r["as_of"] == f"{r['year']}-12-31"
    ]
    assert on_the_day and all(yearly_record_is_final(r["year"], date.fromisoformat(r["as_of"])) for r in on_the_day)


# The refund rate of each recorded size class (stable-jobs-refund's amount formula).
REFUND_RATES = {"large_rate": ("large",), "sme_rate": ("medium", "small", "micro")}


def test_refunds_tie_at_half_a_fen_in_every_period(registry: Records, pack: PolicySet) -> None:
    # The refund is the net premium times the period's rate, rounded half-up once: an edge case
    # lands exactly on half a fen under each period's rates - those that can leave half a fen
    # (an even denominator: 30%, 50%, 90%; never 60%).
    policy = pack.get(STABLE_JOBS)
    checked = 0
    for period, year in _previous_year_periods(pack).items():
        for name, classes in REFUND_RATES.items():
            rate = policy.params_for(period)[name]
            assert isinstance(rate, Fraction)
            if rate.denominator % 2:
                continue
            ties = [
                r
                for r in registry
                if r["kind"] == "social_insurance_year"
                and r["year"] == year
                and r["size_class"] in classes
                and (r["ui_premium_paid_fen"] - r["ui_back_payment_fen"] - r["ui_late_fee_fen"]) * rate % 1
                == Fraction(1, 2)
            ]
            assert ties, (period, name)
            checked += 1
    assert checked > len(PERIOD_YEARS)  # every period's large rate and at least one other


def test_hires_on_both_sides_of_each_periods_insured_months_minimum(registry: Records, pack: PolicySet) -> None:
    policy = pack.get(JOB_EXPANSION)
    months: dict[int, set[int]] = defaultdict(set)
    for record in registry:
        if record["kind"] == "hire" and record["labor_contract"]:
            months[record["year"]].add(record["insured_months"])
    periods = [period for policy_id, period in pack_coverage(pack) if policy_id == JOB_EXPANSION]
    assert len(periods) >= 2
    for period in periods:
        minimum = policy.params_for(period)["min_insured_months"]
        assert isinstance(minimum, int)
        assert {minimum - 1, minimum} <= months[policy.fact_year(period)], period


def test_shares_are_plausible(registry: Records) -> None:
    found = features(registry)
    enterprises = sum(1 for r in registry if r["kind"] == "enterprise")
    assert 0.80 <= found["org_type enterprise"] / enterprises <= 0.90
    assert 0.91 <= found["status active"] / enterprises <= 0.97
    assert 0.003 <= found["labor dispatch"] / enterprises <= 0.03
    assert 0.02 <= found["no bank account"] / enterprises <= 0.07
    assert found["section C"] > found["section F"] > found["section M"]
    si_records = sum(found[f"size class {c}"] for c in ("large", "medium", "small", "micro", None))
    assert 0.10 <= found["size class None"] / si_records <= 0.20
    assert 0.001 <= found["social_insurance_year stale"] / si_records <= 0.01
    assert found["ui paid >= 12 months"] > 4 * found["ui paid < 12 months"]
    assert found["credit A"] + found["credit B"] > 3 * (found["credit C"] + found["credit D"])


@pytest.fixture(scope="module")
def run_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """`make run`'s registry, loaded into SQLite as of the extract date (nothing is later)."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('run') / 'registry.db'}")
    create_schema(engine)
    report = load_records(generate(RUN_COUNT, RUN_SEED), engine, today=REGISTRY_AS_OF)
    assert report.by_kind["enterprise"] == RUN_COUNT
    yield engine
    engine.dispose()


@pytest.mark.slow
def test_every_policy_and_period_has_each_kind_of_outcome(run_registry: Engine, pack: PolicySet) -> None:
    coverage = pack_coverage(pack)
    outcomes: dict[tuple[str, int], dict[Outcome, int]] = {}
    for period in PERIOD_YEARS:
        summary = evaluate_period(pack, run_registry, period=period, today=REGISTRY_AS_OF)
        assert summary.error_samples == []
        for policy in summary.policies:
            outcomes[(policy.policy_id, period)] = policy.counts
    assert set(outcomes) == coverage
    lacking = {
        key: counts
        for key, counts in outcomes.items()
        if not (
            counts[Outcome.ELIGIBLE]
            and counts[Outcome.INELIGIBLE]
            and counts[Outcome.UNDETERMINED] + counts[Outcome.HELD]
        )
    }
    assert lacking == {}


@pytest.mark.slow
def test_loads_100k_enterprises_quickly(tmp_path: Path) -> None:
    path = tmp_path / "synth.jsonl"
    written = write_jsonl(path, 100_000, 1)
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    create_schema(engine)
    report = load_jsonl(path, engine)
    engine.dispose()
    assert report.records == written
    # The pace at which the 620,000 records 100,000 enterprises had with two fact years loaded
    # within a minute; with every fact year they are twice as many.
    assert report.rate > 10_000
