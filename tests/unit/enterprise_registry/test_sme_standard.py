"""Tests for the 300号 size classification: every bound of every row, on both sides."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from enterprise_registry.sme_standard import SizeClass, SizeClassification, classify, sector_of

WAN = 1_000_000  # fen in one 万元
CLASSES: tuple[SizeClass, ...] = ("large", "medium", "small", "micro")

# The table of 工信部联企业〔2011〕300号, copied here by hand (not imported) so a typo in
# the module cannot hide in its own tests. Each row: sector, a sample GB/T 4754-2017 code,
# then per indicator the lower bounds of large, medium and small. X is staff in persons,
# Y revenue and Z total assets in 万元. Micro is anything below the small bound.
STANDARD: dict[str, tuple[str, dict[str, tuple[int, int, int]]]] = {
    "agriculture": ("A0111", {"Y": (20000, 500, 50)}),
    "industry": ("C3484", {"X": (1000, 300, 20), "Y": (40000, 2000, 300)}),
    "construction": ("E4710", {"Y": (80000, 6000, 300), "Z": (80000, 5000, 300)}),
    "wholesale": ("F5111", {"X": (200, 20, 5), "Y": (40000, 5000, 1000)}),
    "retail": ("F5211", {"X": (300, 50, 10), "Y": (20000, 500, 100)}),
    "transport": ("G5431", {"X": (1000, 300, 20), "Y": (30000, 3000, 200)}),
    "warehousing": ("G5920", {"X": (200, 100, 20), "Y": (30000, 1000, 100)}),
    "postal": ("G6020", {"X": (1000, 300, 20), "Y": (30000, 2000, 100)}),
    "accommodation": ("H6110", {"X": (300, 100, 10), "Y": (10000, 2000, 100)}),
    "catering": ("H6210", {"X": (300, 100, 10), "Y": (10000, 2000, 100)}),
    "information_transmission": ("I6311", {"X": (2000, 100, 10), "Y": (100000, 1000, 100)}),
    "software_it": ("I6510", {"X": (300, 100, 10), "Y": (10000, 1000, 50)}),
    "real_estate_development": ("K7010", {"Y": (200000, 1000, 100), "Z": (10000, 5000, 2000)}),
    "property_management": ("K7020", {"X": (1000, 300, 100), "Y": (5000, 1000, 500)}),
    "leasing_business_services": ("L7212", {"X": (300, 100, 10), "Z": (120000, 8000, 100)}),
    "other": ("M7320", {"X": (300, 100, 10)}),
}

MAIN_BUSINESS_SECTORS = {"industry", "construction"}


def unit(indicator: str) -> int:
    """One step of an indicator in the input unit: one person, or one 万元 in fen."""
    return 1 if indicator == "X" else WAN


def figures(sector: str, **values: int | None) -> dict[str, int | None]:
    """classify() keyword arguments for a sector from X/Y/Z values in input units.

    Indicators the row does not list are None (they must not be needed), and the revenue
    field the row must NOT read is 0, so reading the wrong one changes the answer.
    """
    kwargs: dict[str, int | None] = {
        "employees": values.get("X"),
        "revenue_fen": 0,
        "main_business_revenue_fen": 0,
        "total_assets_fen": values.get("Z"),
    }
    revenue_field = "main_business_revenue_fen" if sector in MAIN_BUSINESS_SECTORS else "revenue_fen"
    kwargs[revenue_field] = values.get("Y")
    return kwargs


def at_large(sector: str) -> dict[str, int]:
    """Every listed indicator exactly at its large lower bound."""
    _, rows = STANDARD[sector]
    return {ind: bounds[0] * unit(ind) for ind, bounds in rows.items()}


def run(sector: str, values: dict[str, int]) -> SizeClassification:
    code, _ = STANDARD[sector]
    result = classify(code, **figures(sector, **values))
    assert result is not None
    assert result.sector == sector
    return result


# --- every bound, both sides ---------------------------------------------------------------


def boundary_cases() -> Iterator[Any]:
    """Per sector, indicator and bound: the value at the bound, and one unit (person/fen) below."""
    for sector, (_, rows) in STANDARD.items():
        for ind, bounds in rows.items():
            for level, bound in enumerate(bounds):
                at = bound * unit(ind)
                yield pytest.param(sector, ind, at, CLASSES[level], id=f"{sector}-{ind}{bound}-at")
                yield pytest.param(sector, ind, at - 1, CLASSES[level + 1], id=f"{sector}-{ind}{bound}-below")


@pytest.mark.parametrize(("sector", "indicator", "value", "expected"), list(boundary_cases()))
def test_bound(sector: str, indicator: str, value: int, expected: SizeClass) -> None:
    # The other indicators sit exactly at the large bound, so this one alone decides.
    values = at_large(sector) | {indicator: value}
    assert run(sector, values).size_class == expected


def test_boundary_table_covers_every_bound() -> None:
    indicators = sum(len(rows) for _, rows in STANDARD.values())
    assert indicators == 30
    assert len(list(boundary_cases())) == indicators * 3 * 2


# --- drop a level / micro needs only one -----------------------------------------------------


def representative(bounds: tuple[int, int, int], level: int, step: int) -> int:
    """A value in a class's band: its top edge (one unit below the next class up), or the large bound."""
    if level == 0:
        return bounds[0] * step
    return bounds[level - 1] * step - 1


def combination_cases() -> Iterator[Any]:
    for sector, (_, rows) in STANDARD.items():
        if len(rows) != 2:
            continue
        (first, first_bounds), (second, second_bounds) = rows.items()
        for a in range(4):
            for b in range(4):
                values = {
                    first: representative(first_bounds, a, unit(first)),
                    second: representative(second_bounds, b, unit(second)),
                }
                yield pytest.param(
                    sector,
                    values,
                    CLASSES[max(a, b)],
                    id=f"{sector}-{first}{CLASSES[a]}-{second}{CLASSES[b]}",
                )


@pytest.mark.parametrize(("sector", "values", "expected"), list(combination_cases()))
def test_lowest_indicator_decides(sector: str, values: dict[str, int], expected: SizeClass) -> None:
    # Large/medium/small need every indicator; otherwise drop a level, down to the level the
    # weakest indicator reaches. Micro needs just one indicator below the small bound.
    assert run(sector, values).size_class == expected


def test_one_indicator_short_drops_only_to_its_own_level() -> None:
    # Staff is large, main-business revenue only medium: medium, not large and not small.
    assert run("industry", {"X": 5000, "Y": 2000 * WAN}).size_class == "medium"


def test_micro_needs_only_one_indicator() -> None:
    assert run("industry", {"X": 19, "Y": 100_000 * WAN}).size_class == "micro"
    assert run("industry", {"X": 100_000, "Y": 300 * WAN - 1}).size_class == "micro"


# --- the boundary bugs of public scripts -----------------------------------------------------


@pytest.mark.parametrize("staff", [100, 150, 199])
def test_warehousing_medium_band_is_100_to_200(staff: int) -> None:
    assert run("warehousing", {"X": staff, "Y": 30000 * WAN}).size_class == "medium"


def test_warehousing_200_staff_is_large_and_99_is_small() -> None:
    assert run("warehousing", {"X": 200, "Y": 30000 * WAN}).size_class == "large"
    assert run("warehousing", {"X": 99, "Y": 30000 * WAN}).size_class == "small"


@pytest.mark.parametrize("revenue_fen", [1000 * WAN, 9999 * WAN, 10_000 * WAN, 50_000 * WAN, 100_000 * WAN - 1])
def test_information_transmission_medium_revenue_reaches_100000_wan(revenue_fen: int) -> None:
    values = {"X": 2000, "Y": revenue_fen}
    assert run("information_transmission", values).size_class == "medium"


@pytest.mark.parametrize(
    ("sector", "indicator", "small_bound"),
    [
        ("other", "X", 10),
        ("property_management", "X", 100),
        ("leasing_business_services", "X", 10),
        ("real_estate_development", "Z", 2000),
        ("industry", "X", 20),
        ("software_it", "Y", 50),
    ],
)
def test_micro_is_strictly_below_the_small_bound(sector: str, indicator: str, small_bound: int) -> None:
    at = small_bound * unit(indicator)
    assert run(sector, at_large(sector) | {indicator: at}).size_class == "small"
    assert run(sector, at_large(sector) | {indicator: at - 1}).size_class == "micro"


# --- which revenue ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["B0610", "C3484", "D4411", "E4710"])
def test_industry_and_construction_read_main_business_revenue(code: str) -> None:
    big = 100_000 * WAN
    staff_and_assets = {"employees": 5000, "total_assets_fen": big}
    main = classify(code, revenue_fen=0, main_business_revenue_fen=big, **staff_and_assets)
    assert main is not None and main.size_class == "large"
    operating = classify(code, revenue_fen=big, main_business_revenue_fen=0, **staff_and_assets)
    assert operating is not None and operating.size_class == "micro"
    missing = classify(code, revenue_fen=big, main_business_revenue_fen=None, **staff_and_assets)
    assert missing is None


@pytest.mark.parametrize("code", ["A0111", "F5211", "G5431", "I6510", "K7020"])
def test_other_rows_read_operating_revenue(code: str) -> None:
    big = 500_000 * WAN
    kwargs: dict[str, int | None] = {"employees": 5000, "total_assets_fen": big}
    operating = classify(code, revenue_fen=big, main_business_revenue_fen=0, **kwargs)
    assert operating is not None and operating.size_class == "large"
    main = classify(code, revenue_fen=0, main_business_revenue_fen=big, **kwargs)
    assert main is not None and main.size_class == "micro"
    assert classify(code, revenue_fen=None, main_business_revenue_fen=big, **kwargs) is None


# --- not covered, or not enough figures ------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "J6620",  # finance: its own standard (银发〔2015〕309号)
        "J6711",
        "G5310",  # railways: "交通运输业（不含铁路运输业）"
        "G5331",
        "K7040",  # 自有房地产经营活动 / 房地产租赁经营: excluded from the "other" row
        "P8331",  # education
        "Q8411",  # health
        "S9221",  # public administration
        "T9700",  # international organisations
    ],
)
def test_uncovered_sectors_give_none(code: str) -> None:
    assert sector_of(code) is None
    big = 10**15
    result = classify(code, employees=10**6, revenue_fen=big, main_business_revenue_fen=big, total_assets_fen=big)
    assert result is None


def missing_cases() -> Iterator[Any]:
    for sector, (_, rows) in STANDARD.items():
        for ind in rows:
            yield pytest.param(sector, ind, id=f"{sector}-no-{ind}")


@pytest.mark.parametrize(("sector", "indicator"), list(missing_cases()))
def test_missing_needed_indicator_gives_none(sector: str, indicator: str) -> None:
    code, _ = STANDARD[sector]
    values: dict[str, int | None] = {**at_large(sector), indicator: None}
    assert classify(code, **figures(sector, **values)) is None


def test_indicators_a_row_does_not_list_may_be_missing() -> None:
    only_revenue = classify(
        "A0111",
        employees=None,
        revenue_fen=50 * WAN,
        main_business_revenue_fen=None,
        total_assets_fen=None,
    )
    assert only_revenue == SizeClassification("small", "agriculture", ("营业收入 50 万元 ≥ 50 万元（小型下限）",))
    only_staff = classify(
        "R8810",
        employees=100,
        revenue_fen=None,
        main_business_revenue_fen=None,
        total_assets_fen=None,
    )
    assert only_staff == SizeClassification("medium", "other", ("从业人员 100 人 ≥ 100 人（中型下限）",))


@pytest.mark.parametrize("field", ["employees", "revenue_fen", "main_business_revenue_fen", "total_assets_fen"])
def test_negative_figures_are_rejected(field: str) -> None:
    kwargs: dict[str, int | None] = {
        "employees": 10,
        "revenue_fen": 0,
        "main_business_revenue_fen": 0,
        "total_assets_fen": 0,
    }
    kwargs[field] = -1
    with pytest.raises(ValueError, match=field):
        classify("C3484", **kwargs)


# --- sector_of -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("A0111", "agriculture"),
        ("A0511", "agriculture"),
        ("B0610", "industry"),
        ("C1311", "industry"),
        ("C3484", "industry"),
        ("C4320", "industry"),
        ("D4411", "industry"),
        ("D4620", "industry"),
        ("E4710", "construction"),
        ("E5010", "construction"),
        ("F5111", "wholesale"),
        ("F5199", "wholesale"),
        ("F5211", "retail"),
        ("F5299", "retail"),
        ("G5411", "transport"),
        ("G5431", "transport"),
        ("G5511", "transport"),
        ("G5611", "transport"),
        ("G5710", "transport"),
        ("G5810", "transport"),
        ("G5821", "transport"),
        ("G5910", "transport"),  # 装卸搬运: with transport, as it was under GB/T 4754-2011 G58
        ("G5920", "warehousing"),
        ("G5941", "warehousing"),
        ("G5990", "warehousing"),
        ("G6010", "postal"),
        ("G6020", "postal"),
        ("H6110", "accommodation"),
        ("H6130", "accommodation"),
        ("H6210", "catering"),
        ("H6241", "catering"),
        ("I6311", "information_transmission"),
        ("I6321", "information_transmission"),
        ("I6410", "information_transmission"),
        ("I6432", "information_transmission"),
        ("I6510", "software_it"),
        ("I6513", "software_it"),
        ("I6550", "software_it"),
        ("K7010", "real_estate_development"),
        ("K7020", "property_management"),
        ("K7030", "other"),
        ("K7090", "other"),
        ("L7111", "leasing_business_services"),
        ("L7212", "leasing_business_services"),
        ("L7299", "leasing_business_services"),
        ("M7320", "other"),
        ("N7721", "other"),
        ("O8010", "other"),
        ("Q8510", "other"),  # 社会工作, named in the "other" row
        ("R8610", "other"),
        ("R9090", "other"),
    ],
)
def test_sector_of_class_codes(code: str, expected: str) -> None:
    assert sector_of(code) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("c3484", "industry"),  # case and surrounding blanks do not matter
        (" F5211 ", "retail"),
        ("3484", "industry"),  # the section letter may be left off
        ("5920", "warehousing"),
        ("C", "industry"),  # a coarser code is fine when everything under it shares a row
        ("C34", "industry"),
        ("F51", "wholesale"),
        ("G592", "warehousing"),
        ("G591", "transport"),
        ("L", "leasing_business_services"),
        ("K702", "property_management"),
        ("Q85", "other"),
        ("F", None),  # ... and None when it spans rows
        ("G", None),
        ("G59", None),
        ("H", None),
        ("K70", None),
        ("K", None),
        ("Q", None),
        ("Q84", None),
        ("F3484", None),  # division 34 belongs to section C, not F
        ("", None),
        ("C34845", None),
        ("X1234", None),
        ("C3", None),
        ("9800", None),  # no such division
        ("00", None),
    ],
)
def test_sector_of_coarse_and_odd_codes(code: str, expected: str | None) -> None:
    assert sector_of(code) == expected


# --- reasons ---------------------------------------------------------------------------------


def test_reasons_name_each_indicator_and_the_bound_it_reaches() -> None:
    result = classify(
        "C3484",
        employees=350,
        revenue_fen=0,
        main_business_revenue_fen=2000 * WAN,
        total_assets_fen=None,
    )
    assert result == SizeClassification(
        size_class="medium",
        sector="industry",
        reasons=(
            "从业人员 350 人 ≥ 300 人（中型下限）",
            "主营业务收入 2000 万元 ≥ 2000 万元（中型下限）",
        ),
    )


def test_reasons_for_micro_cite_the_small_bound() -> None:
    result = classify(
        "F5211",
        employees=9,
        revenue_fen=20000 * WAN,
        main_business_revenue_fen=None,
        total_assets_fen=None,
    )
    assert result == SizeClassification(
        "micro",
        "retail",
        ("从业人员 9 人 < 10 人（小型下限）", "营业收入 20000 万元 ≥ 20000 万元（大型下限）"),
    )


def test_reasons_show_fen_exactly_in_wan() -> None:
    result = classify(
        "E4710",
        employees=None,
        revenue_fen=None,
        main_business_revenue_fen=300 * WAN - 1,
        total_assets_fen=1_500_000,
    )
    assert result == SizeClassification(
        "micro",
        "construction",
        (
            "主营业务收入 299.999999 万元 < 300 万元（小型下限）",
            "资产总额 1.5 万元 < 300 万元（小型下限）",
        ),
    )


def test_reasons_for_assets_rows() -> None:
    result = classify(
        "L7212",
        employees=300,
        revenue_fen=None,
        main_business_revenue_fen=None,
        total_assets_fen=120_000 * WAN,
    )
    assert result == SizeClassification(
        "large",
        "leasing_business_services",
        ("从业人员 300 人 ≥ 300 人（大型下限）", "资产总额 120000 万元 ≥ 120000 万元（大型下限）"),
    )


@pytest.mark.parametrize("sector", list(STANDARD))
def test_one_reason_per_listed_indicator(sector: str) -> None:
    _, rows = STANDARD[sector]
    assert len(run(sector, at_large(sector)).reasons) == len(rows)


def test_classification_is_immutable() -> None:
    result = run("other", {"X": 10})
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.size_class = "large"  # type: ignore[misc]  # a frozen field written on purpose


def test_reasons_stay_exact_for_amounts_a_float_would_round() -> None:
    result = classify(
        "F5211",
        employees=300,
        revenue_fen=123_456_789_012_345_678,
        main_business_revenue_fen=None,
        total_assets_fen=None,
    )
    assert result is not None
    assert result.reasons[1] == "营业收入 123456789012.345678 万元 ≥ 20000 万元（大型下限）"
