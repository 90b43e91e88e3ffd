"""Enterprise size classes (large/medium/small/micro) under 工信部联企业〔2011〕300号."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final, Literal

from enterprise_registry.kinds import SizeClass

__all__ = ["FEN_PER_WAN", "SizeClass", "SizeClassification", "classify", "sector_of"]

_Indicator = Literal["employees", "revenue", "total_assets"]

FEN_PER_WAN: Final = 1_000_000
"""1 万元 = 10,000 yuan = 1,000,000 fen. The table is in 万元; inputs are fen."""


@dataclass(frozen=True)
class SizeClassification:
    """The size class, the table row it came from, and one Chinese reason per indicator."""

    size_class: SizeClass
    sector: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class _Row:
    """One indicator line of the table: the lower bounds of large, medium and small.

    Persons for `employees`, 万元 for money, as printed in the standard, so the table
    below can be checked against the document by eye.
    """

    indicator: _Indicator
    large: int
    medium: int
    small: int


# The table of 300号 (Art. 4). Micro is everything below the small lower bound.
_THRESHOLDS: Final[dict[str, tuple[_Row, ...]]] = {
    "agriculture": (_Row("revenue", 20_000, 500, 50),),
    "industry": (_Row("employees", 1_000, 300, 20), _Row("revenue", 40_000, 2_000, 300)),
    "construction": (
        _Row("revenue", 80_000, 6_000, 300),
        _Row("total_assets", 80_000, 5_000, 300),
    ),
    "wholesale": (_Row("employees", 200, 20, 5), _Row("revenue", 40_000, 5_000, 1_000)),
    "retail": (_Row("employees", 300, 50, 10), _Row("revenue", 20_000, 500, 100)),
    "transport": (_Row("employees", 1_000, 300, 20), _Row("revenue", 30_000, 3_000, 200)),
    "warehousing": (_Row("employees", 200, 100, 20), _Row("revenue", 30_000, 1_000, 100)),
    "postal": (_Row("employees", 1_000, 300, 20), _Row("revenue", 30_000, 2_000, 100)),
    # 住宿业 and 餐饮业 are separate industries in the standard that share one set of bounds.
    "accommodation": (_Row("employees", 300, 100, 10), _Row("revenue", 10_000, 2_000, 100)),
    "catering": (_Row("employees", 300, 100, 10), _Row("revenue", 10_000, 2_000, 100)),
    "information_transmission": (
        _Row("employees", 2_000, 100, 10),
        _Row("revenue", 100_000, 1_000, 100),
    ),
    "software_it": (_Row("employees", 300, 100, 10), _Row("revenue", 10_000, 1_000, 50)),
    "real_estate_development": (
        _Row("revenue", 200_000, 1_000, 100),
        _Row("total_assets", 10_000, 5_000, 2_000),
    ),
    "property_management": (
        _Row("employees", 1_000, 300, 100),
        _Row("revenue", 5_000, 1_000, 500),
    ),
    "leasing_business_services": (
        _Row("employees", 300, 100, 10),
        _Row("total_assets", 120_000, 8_000, 100),
    ),
    "other": (_Row("employees", 300, 100, 10),),
}

# "营业收入" in the standard is main-business revenue for industry and construction
# (the standard's own note); every other row uses operating revenue.
_MAIN_BUSINESS_REVENUE_SECTORS: Final = frozenset({"industry", "construction"})

# Which table row a GB/T 4754-2017 code falls in, by the longest matching prefix of
# "section letter + digits". A prefix mapped to None is deliberately outside the standard.
_SECTOR_BY_PREFIX: Final[dict[str, str | None]] = {
    "A": "agriculture",
    "B": "industry",
    "C": "industry",
    "D": "industry",
    "E": "construction",
    "F51": "wholesale",
    "F52": "retail",
    # Art. 2 reads "交通运输业（不含铁路运输业）": railways have no row at all.
    "G53": None,
    "G54": "transport",
    "G55": "transport",
    "G56": "transport",
    "G57": "transport",
    "G58": "transport",
    # GB/T 4754-2017 moved 装卸搬运 (cargo handling) from G58 into G59 as G591. The
    # standard was written when it sat with 运输代理 under transport, and the statistical
    # method (国统字〔2017〕213号) keeps it under 交通运输业; the rest of G59 is 仓储业.
    "G591": "transport",
    "G59": "warehousing",
    "G60": "postal",
    "H61": "accommodation",
    "H62": "catering",
    "I63": "information_transmission",
    "I64": "information_transmission",
    "I65": "software_it",
    # Finance is outside Art. 2; financial firms are sized by 银发〔2015〕309号 instead.
    "J": None,
    "K701": "real_estate_development",
    "K702": "property_management",
    # 房地产中介服务 and 其他房地产业 are "其他未列明行业" in the statistical method.
    "K703": "other",
    "K709": "other",
    # The statistical method excludes 自有房地产经营活动 (2011 K7040), which the 2017
    # classification renamed 房地产租赁经营 under the same code.
    "K704": None,
    "L": "leasing_business_services",
    # The "其他未列明行业" row names M, N, O, social work and R "等". The statistical method
    # closes the "等": the standard spans 15 sections (A-I, K-O, R) plus the social-work
    # division, so education (P), health (Q84), public administration (S) and international
    # organisations (T) are not covered.
    "M": "other",
    "N": "other",
    "O": "other",
    "P": None,
    "Q84": None,
    "Q85": "other",
    "R": "other",
    "S": None,
    "T": None,
}

# GB/T 4754-2017 sections by their first and last two-digit division.
_SECTION_DIVISIONS: Final = {
    "A": (1, 5), "B": (6, 12), "C": (13, 43), "D": (44, 46), "E": (47, 50),
    "F": (51, 52), "G": (53, 60), "H": (61, 62), "I": (63, 65), "J": (66, 69),
    "K": (70, 70), "L": (71, 72), "M": (73, 75), "N": (76, 79), "O": (80, 82),
    "P": (83, 83), "Q": (84, 85), "R": (86, 90), "S": (91, 96), "T": (97, 97),
}  # fmt: skip

# Section only ("C"), or digits of division/group/class ("34", "348", "3484"), with or
# without the section letter.
_CODE_RE: Final = re.compile(r"([A-T])?(\d{2,4})?")

_LEVEL_NAMES: Final[dict[SizeClass, str]] = {
    "large": "大型",
    "medium": "中型",
    "small": "小型",
    "micro": "微型",
}
# From the highest class down; the index of a class in this tuple is its rank.
_CLASSES: Final[tuple[SizeClass, ...]] = ("large", "medium", "small", "micro")


@functools.lru_cache(maxsize=4096)  # a registry has a few hundred distinct codes; scanning the table is slow
def sector_of(industry_code: str) -> str | None:
    """The table row for a GB/T 4754-2017 code such as "C3484", or None when not covered.

    None also when the code is malformed, or too coarse to pick one row ("G59" holds both
    transport and warehousing; "K70" holds four rows).
    """
    code = _normalise(industry_code)
    if code is None:
        return None
    matching = [prefix for prefix in _SECTOR_BY_PREFIX if code.startswith(prefix)]
    if not matching:
        return None
    sector = _SECTOR_BY_PREFIX[max(matching, key=len)]
    finer = (
        _SECTOR_BY_PREFIX[prefix] for prefix in _SECTOR_BY_PREFIX if len(prefix) > len(code) and prefix.startswith(code)
    )
    if any(other != sector for other in finer):
        return None
    return sector


def classify(
    industry_code: str,
    *,
    employees: int | None,
    revenue_fen: int | None,
    main_business_revenue_fen: int | None,
    total_assets_fen: int | None,
) -> SizeClassification | None:
    """Classify an enterprise, or None when its sector is not covered or a needed figure is None.

    `employees` is the year-end headcount (annual average when that is missing). Large,
    medium and small need every indicator of the row at or above that class's lower bound,
    otherwise the enterprise drops a class; micro needs only one indicator below the small
    lower bound. So the class is the lowest class any single indicator reaches.
    Raises ValueError when a figure is negative.
    """
    figures = {
        "employees": employees,
        "revenue_fen": revenue_fen,
        "main_business_revenue_fen": main_business_revenue_fen,
        "total_assets_fen": total_assets_fen,
    }
    for name, figure in figures.items():
        if figure is not None and figure < 0:
            raise ValueError(f"{name} must not be negative, got {figure}")

    sector = sector_of(industry_code)
    if sector is None:
        return None
    main_business = sector in _MAIN_BUSINESS_REVENUE_SECTORS
    values: dict[_Indicator, int | None] = {
        "employees": employees,
        "revenue": main_business_revenue_fen if main_business else revenue_fen,
        "total_assets": total_assets_fen,
    }

    rank = 0
    reasons: list[str] = []
    for row in _THRESHOLDS[sector]:
        value = values[row.indicator]
        if value is None:
            return None
        row_rank = _rank(row, value)
        rank = max(rank, row_rank)
        reasons.append(_reason(row, value, row_rank, main_business))
    return SizeClassification(size_class=_CLASSES[rank], sector=sector, reasons=tuple(reasons))


def _normalise(industry_code: str) -> str | None:
    """Upper-case, trim and add the section letter ("3484" -> "C3484"); None if malformed."""
    match = _CODE_RE.fullmatch(industry_code.strip().upper())
    if match is None or match.group(0) == "":
        return None
    section, digits = match.group(1), match.group(2) or ""
    if digits:
        division = int(digits[:2])
        owner = next(
            (s for s, (first, last) in _SECTION_DIVISIONS.items() if first <= division <= last),
            None,
        )
        if owner is None or (section is not None and section != owner):
            return None
        section = owner
    return f"{section}{digits}"


def _bounds(row: _Row) -> tuple[int, int, int]:
    """The row's large, medium and small lower bounds in the input's unit (persons or fen)."""
    scale = 1 if row.indicator == "employees" else FEN_PER_WAN
    return row.large * scale, row.medium * scale, row.small * scale


def _rank(row: _Row, value: int) -> int:
    """The highest class this one indicator reaches: 0 large ... 3 micro."""
    for rank, bound in enumerate(_bounds(row)):
        if value >= bound:
            return rank
    return 3


def _reason(row: _Row, value: int, rank: int, main_business: bool) -> str:
    """e.g. "从业人员 350 人 ≥ 300 人（中型下限）", "营业收入 99.5 万元 < 100 万元（小型下限）"."""
    if row.indicator == "employees":
        label, unit, shown = "从业人员", "人", str(value)
    else:
        label = "资产总额" if row.indicator == "total_assets" else "主营业务收入" if main_business else "营业收入"
        unit, shown = "万元", _format_wan(value)
    bounds = (row.large, row.medium, row.small)
    if rank < 3:
        return f"{label} {shown} {unit} ≥ {bounds[rank]} {unit}（{_LEVEL_NAMES[_CLASSES[rank]]}下限）"
    return f"{label} {shown} {unit} < {row.small} {unit}（小型下限）"


def _format_wan(fen: int) -> str:
    """Fen as exact 万元 without floats: 1_999_999_999 -> "1999.999999", 5_000_000 -> "5"."""
    wan, rest = divmod(fen, FEN_PER_WAN)
    if rest == 0:
        return str(wan)
    return f"{wan}.{rest:06d}".rstrip("0")
