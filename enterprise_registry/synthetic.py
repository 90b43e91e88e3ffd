"""A deterministic synthetic registry of Xiangyang units, streamed as JSON-ready fact records.

Everything is invented: codes are synthetic (valid GB 32100 and GB 11714 checks), names are
built from word lists, and no fact is attached to a real company. Output depends only on
(count, seed): one `random.Random(seed)` drives every draw, in a fixed order, and memory stays
constant (counters and a small ring buffer), so a million enterprises stream as easily as ten.

The data is meant to exercise every reference policy for every period the pack covers
(PERIOD_YEARS) and so holds yearly facts, hires and grants for every year those periods read
(FACT_YEARS). Besides the ordinary spread, one enterprise in 25 is an "edge case" built to sit
on a boundary a policy tests (a layoff rate of exactly 5.5%, 30 insured at the start of the
year, revenue one fen below a threshold, a refund ending in half a fen, a record extracted a day
before its year ended, little giant and single champion in one year, ...); successive
occurrences of each edge case take the periods in turn.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

import orjson

from enterprise_registry import uscc as uscc_codes
from enterprise_registry.regions import XIANGYANG

T = TypeVar("T")

# The policy periods the data is made for: the reference pack's coverage (rules/policies/*.yaml,
# `effective:`): every policy from 2022, and 2025 the last period any of them names
# (stable-jobs-refund's last_period, job-expansion-subsidy's periods). The registry cannot read
# the pack (it knows nothing of rules); test_synthetic.py checks these against it.
PERIOD_YEARS: tuple[int, ...] = tuple(range(2022, 2026))
# The years those periods read: `fact_year: previous` the year before the first period,
# `fact_year: period` up to the last. Tax, social insurance, hires and grants exist for each.
FACT_YEARS: tuple[int, ...] = tuple(range(PERIOD_YEARS[0] - 1, PERIOD_YEARS[-1] + 1))
HIRE_YEARS = FACT_YEARS
# Headcount is drawn from the year before the first fact year: its year-end is that year's start.
FIGURE_YEARS: tuple[int, ...] = (FACT_YEARS[0] - 1, *FACT_YEARS)
# The extract date: after the last fact year's tax settlement (as of 31 May the year after).
REGISTRY_AS_OF = date(FACT_YEARS[-1] + 1, 6, 30)
WAN_FEN = 1_000_000  # 1 万元 = 10,000 yuan = 1,000,000 fen
EDGE_EVERY = 25  # one enterprise in EDGE_EVERY is an edge case
MAX_COUNT = 31**5  # distinct post-2015 organisation codes MA4xxxxx: 28.6 million

# org_type -> (weight, USCC registration authority + organisation type prefix)
_ORG_TYPES: dict[str, tuple[float, str]] = {
    "enterprise": (85.0, "91"),
    "individual_business": (6.0, "92"),
    "farmer_cooperative": (2.5, "93"),
    "social_organization": (1.5, "51"),
    "social_service_org": (1.5, "52"),
    "foundation": (0.5, "53"),
    "law_firm": (0.8, "31"),
    "accounting_firm": (0.7, "91"),
    "public_institution": (1.0, "12"),
    "government": (0.5, "11"),
}

# Enterprise industries (GB/T 4754-2017): code, weight, revenue per employee in yuan, name words.
# Weighted toward Xiangyang's manufacturing: automotive (C36), machinery (C34/C35), chemicals
# (C26), food (C13/C14), electrical (C38).
_INDUSTRIES: tuple[tuple[str, float, int, tuple[str, ...]], ...] = (
    ("C3660", 8.0, 900_000, ("汽车零部件", "汽车配件", "车桥")),
    ("C3650", 1.0, 800_000, ("专用车", "挂车")),
    ("C3612", 0.5, 1_500_000, ("新能源汽车",)),
    ("C3611", 0.3, 2_000_000, ("汽车",)),
    ("C3451", 1.5, 700_000, ("轴承",)),
    ("C3484", 4.0, 600_000, ("机械", "精密机械", "机械加工")),
    ("C3421", 0.8, 600_000, ("机床",)),
    ("C3441", 0.6, 600_000, ("泵业",)),
    ("C3511", 0.6, 700_000, ("矿山机械", "重工")),
    ("C3572", 0.8, 600_000, ("农业机械", "农机")),
    ("C3599", 1.0, 600_000, ("专用设备", "装备")),
    ("C2614", 0.8, 1_500_000, ("化工",)),
    ("C2621", 0.5, 1_500_000, ("化肥",)),
    ("C2631", 0.4, 1_200_000, ("农化",)),
    ("C2641", 0.5, 1_000_000, ("涂料",)),
    ("C2669", 0.8, 1_000_000, ("精细化工", "新材料")),
    ("C1311", 1.0, 1_200_000, ("粮油", "米业")),
    ("C1331", 0.7, 1_500_000, ("油脂",)),
    ("C1353", 0.8, 1_000_000, ("肉类食品",)),
    ("C1329", 0.6, 1_200_000, ("饲料",)),
    ("C1411", 0.6, 500_000, ("食品",)),
    ("C1432", 0.4, 600_000, ("速冻食品",)),
    ("C1469", 0.4, 600_000, ("调味品",)),
    ("C1512", 0.5, 800_000, ("酒业",)),
    ("C1711", 0.8, 400_000, ("纺织", "棉纺")),
    ("C2720", 0.4, 1_000_000, ("药业", "制药")),
    ("C2740", 0.4, 900_000, ("药业",)),
    ("C2929", 0.8, 600_000, ("塑业", "塑料制品")),
    ("C3021", 0.6, 700_000, ("建材",)),
    ("C3011", 0.2, 1_500_000, ("水泥",)),
    ("C3311", 0.8, 700_000, ("钢结构",)),
    ("C3360", 0.5, 500_000, ("热处理", "表面处理")),
    ("C3812", 0.6, 700_000, ("电机",)),
    ("C3821", 0.5, 800_000, ("电气",)),
    ("C3831", 0.5, 1_200_000, ("电缆",)),
    ("C3841", 0.6, 1_500_000, ("新能源科技", "电池")),
    ("C3982", 0.4, 600_000, ("电子",)),
    ("B1011", 0.4, 800_000, ("矿业",)),
    ("B1020", 0.4, 1_000_000, ("磷化", "矿业")),
    ("D4413", 0.2, 3_000_000, ("水电",)),
    ("D4416", 0.3, 3_000_000, ("光伏", "新能源")),
    ("D4420", 0.2, 3_000_000, ("电力",)),
    ("D4610", 0.2, 1_000_000, ("水务",)),
    ("E4710", 2.0, 700_000, ("建筑工程", "建设")),
    ("E4812", 0.8, 900_000, ("路桥",)),
    ("E4910", 0.6, 500_000, ("机电安装",)),
    ("E5011", 0.8, 400_000, ("装饰工程",)),
    ("F5123", 1.0, 2_500_000, ("农产品",)),
    ("F5165", 1.5, 3_000_000, ("建材贸易",)),
    ("F5161", 0.5, 4_000_000, ("能源贸易",)),
    ("F5162", 0.3, 5_000_000, ("石化贸易",)),
    ("F5211", 0.8, 800_000, ("百货",)),
    ("F5212", 1.5, 700_000, ("超市", "商贸")),
    ("F5261", 1.0, 2_000_000, ("汽车销售",)),
    ("F5251", 1.0, 600_000, ("大药房",)),
    ("F5221", 0.5, 600_000, ("粮油商行",)),
    ("G5431", 2.0, 500_000, ("物流", "运输")),
    ("G5821", 0.6, 800_000, ("货运代理",)),
    ("G5920", 0.6, 400_000, ("仓储",)),
    ("G6020", 0.3, 300_000, ("快递",)),
    ("H6110", 0.5, 200_000, ("酒店",)),
    ("H6121", 0.5, 150_000, ("宾馆",)),
    ("H6210", 1.5, 150_000, ("餐饮",)),
    ("H6220", 0.8, 150_000, ("快餐",)),
    ("I6513", 1.2, 400_000, ("软件", "信息技术")),
    ("I6531", 0.8, 500_000, ("信息科技",)),
    ("I6550", 0.3, 500_000, ("数据科技",)),
    ("I6429", 0.2, 600_000, ("网络科技",)),
    ("K7010", 1.2, 3_000_000, ("房地产开发", "置业")),
    ("K7020", 1.0, 100_000, ("物业服务",)),
    ("L7111", 0.3, 500_000, ("汽车租赁",)),
    ("L7212", 0.5, 800_000, ("投资",)),
    ("L7224", 0.4, 2_000_000, ("供应链管理",)),
    ("L7263", 0.3, 100_000, ("人力资源",)),
    ("M7320", 0.6, 300_000, ("技术研究",)),
    ("M7483", 0.5, 400_000, ("工程设计",)),
    ("M7519", 0.5, 300_000, ("科技",)),
    ("A0111", 0.4, 300_000, ("农业",)),
    ("A0141", 0.4, 300_000, ("农业开发",)),
    ("A0313", 0.5, 800_000, ("养殖",)),
    ("A0164", 0.3, 300_000, ("茶业",)),
    ("O8111", 0.6, 200_000, ("汽车维修",)),
)
_INDUSTRY = {entry[0]: entry for entry in _INDUSTRIES}

# Units that are not enterprises: industry choices and the shape of their names.
_OTHER_UNITS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "individual_business": (
        ("F5212", "F5221", "H6210", "H6220", "O8111", "O8040"),
        ("超市", "粮油店", "饭店", "小吃店", "汽车修理部", "理发店"),
    ),
    "farmer_cooperative": (
        ("A0111", "A0141", "A0313", "A0164"),
        ("水稻种植专业合作社", "蔬菜种植专业合作社", "生猪养殖专业合作社", "茶叶专业合作社"),
    ),
    "social_organization": (("S9522", "S9521"), ("机械行业协会", "企业商会", "科技学会")),
    "social_service_org": (("P8391", "P8310", "Q8411"), ("职业培训学校", "幼儿园", "医院")),
    "foundation": (("S9530",), ("慈善基金会", "教育基金会")),
    "law_firm": (("L7231",), ("律师事务所",)),
    "accounting_firm": (("L7241",), ("会计师事务所有限公司",)),
    "public_institution": (("P8336", "Q8411", "M7320"), ("职业技术学校", "医院", "研究所")),
    "government": (("S9221",), ("街道办事处", "管理委员会")),
}

_PLACE = {
    "420624": "南漳县",
    "420625": "谷城县",
    "420626": "保康县",
    "420682": "老河口市",
    "420683": "枣阳市",
    "420684": "宜城市",
}  # the rest register as 襄阳市

_TRADE_CHARS = (
    "华鑫博恒盛泰达兴隆昌瑞祥宏远锦程嘉信诚安康宇航汉江岘鹿檀樊襄荆楚凯丰润德源聚创新"
    "科力精工鼎峰豪振飞腾云龙凤翔金玉银海天正弘毅"
)
_BANKS = (
    "中国工商银行股份有限公司",
    "中国农业银行股份有限公司",
    "中国银行股份有限公司",
    "中国建设银行股份有限公司",
    "交通银行股份有限公司",
    "湖北银行股份有限公司",
    "襄阳农村商业银行股份有限公司",
    "中国邮政储蓄银行股份有限公司",
)
_BRANCHES = ("分行", "樊城支行", "襄城支行", "高新支行")

# Thresholds of the SME standard (staff; revenue and assets in 万元) for edge cases to sit on.
_STAFF_EDGES = (5, 10, 20, 50, 100, 200, 300, 1000)
_MONEY_EDGES_WAN = (50, 100, 300, 500, 1000, 2000, 5000, 20000, 40000)
# Insured months on both sides of job-expansion-subsidy's minimum (1 in 2023, 3 from 2025).
_INSURED_MONTHS_EDGES = (0, 1, 2, 3)
# Early extracts of a yearly record, in days before its year's last day: mid-year and the day
# before (stale: the record does not yet describe the whole year), and the last day itself.
_EARLY_EXTRACT_DAYS = (184, 1, 0)
_STALE_EXTRACT_DAYS = _EARLY_EXTRACT_DAYS[:2]

# Edge cases in turn, one unit in EDGE_EVERY (new ones go last: small registries that tests
# build keep the first ones).
_EDGE_CASES = (
    "size_boundary",
    "layoff_exactly_5_5",
    "small_employer_20pct",
    "small_employer_31",
    "ui_months_11",
    "ui_arrears",
    "zero_insured",
    "labor_dispatch",
    "no_bank_account",
    "missing_record",
    "si_class_missing",
    "high_tech_first_big",
    "high_tech_first_50m",
    "high_tech_recert",
    "little_giant_and_champion",
    "above_size_emerging",
    "listed_current",
    "listed_removed",
    "tax_credit_d",
    "youth_hires",
    "shared_hire",
    "stale_record",
    "refund_half_fen",
    "hire_insured_months",
    "size_boundary",
)
# Consecutive units holding every edge case once for every period.
EDGE_CYCLE = EDGE_EVERY * len(_EDGE_CASES) * len(PERIOD_YEARS)
# Without a bank account every policy's conditions hold but nothing is payable (HELD): the edge
# case carries the titles, the first entry, a first high-tech grant and hires of its period.
_INDUSTRIAL_EDGES = ("above_size_emerging", "little_giant_and_champion", "size_boundary", "no_bank_account")
_HIRING_EDGES = ("youth_hires", "shared_hire", "hire_insured_months", "no_bank_account")
_GRADUATE_EDGES = ("hire_insured_months", "no_bank_account")  # hires that otherwise qualify

# The as_of of each yearly record: the departments' year-end extracts.
_TAX_AS_OF = {year: f"{year + 1}-05-31" for year in FACT_YEARS}
_SI_AS_OF = {year: f"{year + 1}-01-31" for year in FACT_YEARS}
_HIRE_AS_OF = {year: date(year + 1, 1, 31) for year in HIRE_YEARS}

Gaps = dict[tuple[str, int], str | None]  # (department, year) -> None: no record; else its as_of


@dataclass
class _Unit:
    """What was drawn for one unit, before it is written out as records."""

    index: int
    edge: str | None
    org_type: str
    uscc: str
    region: str
    industry: str
    established: date
    edge_year: int  # the period an edge case is built for
    employees: dict[int, int] = field(default_factory=dict)  # year-end headcount, FIGURE_YEARS
    revenue: dict[int, int] = field(default_factory=dict)  # fen
    assets: dict[int, int] = field(default_factory=dict)  # fen
    coverage: float = 1.0  # share of the staff insured


@dataclass(frozen=True)
class _Person:
    ref: str
    year: int
    hired_on: date
    category: str
    graduation_year: int | None
    age: int | None
    uscc: str


class _Generator:
    """Holds the random stream, counters and permutations of one (count, seed) registry."""

    def __init__(self, count: int, seed: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        self.edge_phase = rng.randrange(EDGE_EVERY)
        # Affine bijections (a*i + b mod m, a coprime to m) make codes and names unique by
        # construction while looking random, with no set of used values to keep.
        if count > MAX_COUNT:
            raise ValueError(f"at most {MAX_COUNT:,} units, got {count:,}")
        self.name_length = 3  # trade names of 3 characters, 4 for very large registries
        while len(_TRADE_CHARS) ** self.name_length < count:
            self.name_length += 1
        self.name_perm = _affine(rng, len(_TRADE_CHARS) ** self.name_length)
        self.new_code_perm = _affine(rng, 31**5)
        self.old_code_perm = _affine(rng, 10**8)
        self.person_perm = _affine(rng, 2**40)
        self.persons = 0
        self.certificates = 0
        self.recent_hires: deque[_Person] = deque(maxlen=512)

    # -- one unit -------------------------------------------------------------------------

    def unit(self, index: int) -> Iterator[dict[str, Any]]:
        rng = self.rng
        edge = None
        edge_year = PERIOD_YEARS[-1]
        if index % EDGE_EVERY == self.edge_phase:
            # Successive occurrences of one edge case take the periods in turn, each edge case
            # from its own starting period: a small registry has edge cases in every period.
            occurrence, kind = divmod(index // EDGE_EVERY, len(_EDGE_CASES))
            edge = _EDGE_CASES[kind]
            edge_year = PERIOD_YEARS[(kind + occurrence) % len(PERIOD_YEARS)]
        org_type = _ORG_TYPE_CHOICE.draw(rng)
        if edge is not None:
            org_type = "enterprise"  # edge cases test enterprise rules
        region = _REGION_CHOICE.draw(rng)
        if org_type in _OTHER_UNITS:
            industries, words = _OTHER_UNITS[org_type]
            choice = _below(rng, len(industries))
            industry, word = industries[choice], words[choice]
        else:
            industry = _INDUSTRY_CHOICE.draw(rng)
            if edge == "labor_dispatch":
                industry = "L7263"
            elif edge in _INDUSTRIAL_EDGES:
                industry = _pick(rng, ("C3660", "C3484", "C3841", "C2669"))
            word = _pick(rng, _INDUSTRY[industry][3])
        established = self._established(org_type, edge)
        uscc = self._uscc(index, org_type, region, established)
        unit = _Unit(index, edge, org_type, uscc, region, industry, established, edge_year)
        self._figures(unit)

        yield self._enterprise(unit, word)
        gaps = self._gaps(unit)
        for year in FACT_YEARS:
            if year < established.year:
                continue
            as_of = gaps.get(("tax", year), _TAX_AS_OF[year]) if org_type != "government" else None
            if as_of is not None:
                yield self._tax_year(unit, year, as_of)
            as_of = gaps.get(("si", year), _SI_AS_OF[year])
            if as_of is not None:
                yield self._social_insurance_year(unit, year, as_of)
        if org_type not in ("government", "public_institution") and (rng.random() < 0.30 or edge in _HIRING_EDGES):
            yield from self._hires(unit)
        yield from self._qualifications(unit)
        yield from self._credit_listings(unit)

    def _established(self, org_type: str, edge: str | None) -> date:
        rng = self.rng
        if org_type == "government":
            year = _between(rng, 1950, 2000)
        elif org_type == "public_institution":
            year = _between(rng, 1960, 2015)
        elif edge is not None:
            year = _between(rng, 1995, FACT_YEARS[0] - 1)  # old enough to have every fact year
        elif rng.random() < 0.01:  # registered this year: no fact year yet
            return date(REGISTRY_AS_OF.year, 1, 1) + timedelta(days=_below(rng, 180))
        else:
            year = max(1985, FACT_YEARS[-1] - int(rng.expovariate(1 / 12)))
        return date(year, 1, 1) + timedelta(days=_below(rng, 365))

    def _uscc(self, index: int, org_type: str, region: str, established: date) -> str:
        # Codes issued since the 2015 reform carry organisation codes like MA4xxxxx; older
        # units kept their eight-digit organisation code.
        if established >= date(2015, 10, 1):
            body = "MA4" + _encode(self.new_code_perm(index), uscc_codes.CHARSET, 5)
        else:
            body = _encode(self.old_code_perm(index), "0123456789", 8)
        organisation = body + uscc_codes.organisation_check_character(body)
        return uscc_codes.make(_ORG_TYPES[org_type][1] + region + organisation)

    def _name(self, unit: _Unit, word: str) -> str:
        trade = _encode(self.name_perm(unit.index), _TRADE_CHARS, self.name_length)
        place = _PLACE.get(unit.region, "襄阳市")
        org_type = unit.org_type
        if org_type == "enterprise":
            suffix = _SUFFIX_CHOICE.draw(self.rng)
            return f"{place}{trade}{word}{suffix}"
        if org_type in ("law_firm", "accounting_firm"):
            return f"湖北{trade}{word}"
        if org_type == "individual_business":
            return f"{place}{XIANGYANG[unit.region].removeprefix(place)}{trade}{word}"
        return f"{place}{trade}{word}"

    # -- figures ----------------------------------------------------------------------------

    def _figures(self, unit: _Unit) -> None:
        """Headcount, revenue and assets for FIGURE_YEARS, correlated and size-spread."""
        rng = self.rng
        if unit.org_type in ("government", "public_institution"):
            staff = float(_between(rng, 20, 600))
        else:
            segment = rng.random()
            if segment < 0.74:
                staff = rng.lognormvariate(math.log(7), 1.0)
            elif segment < 0.95:
                staff = rng.lognormvariate(math.log(60), 0.9)
            else:
                staff = rng.lognormvariate(math.log(600), 0.8)
        per_head = _INDUSTRY[unit.industry][2] if unit.industry in _INDUSTRY else 150_000
        productivity = rng.lognormvariate(0, 0.5)
        unit.coverage = rng.uniform(0.55, 1.0)
        asset_ratio = rng.lognormvariate(math.log(3.0 if unit.industry == "K7010" else 0.8), 0.5)
        established = unit.established
        # The hot loop (every unit, every year): lognormals from `gauss`, which draws normals in
        # pairs, a quarter cheaper than `lognormvariate`.
        gauss, random_, exp = rng.gauss, rng.random, math.exp
        for year in FIGURE_YEARS:
            staff *= exp(0.03 + 0.12 * gauss())
            employees = min(5000, max(1, round(staff)))
            revenue = int(employees * per_head * productivity * exp(0.02 + 0.1 * gauss()) * 100)
            if year == established.year:  # a first, partial year
                revenue = revenue * (13 - established.month) // 12
            unit.employees[year] = employees
            unit.revenue[year] = revenue + int(random_() * 100)
            unit.assets[year] = int(revenue * asset_ratio) + int(random_() * 100)
        if unit.edge == "size_boundary":
            for year in FACT_YEARS:
                unit.employees[year] = _pick(rng, _STAFF_EDGES) - _below(rng, 2)
                unit.revenue[year] = _pick(rng, _MONEY_EDGES_WAN) * WAN_FEN - _below(rng, 2)
                unit.assets[year] = _pick(rng, _MONEY_EDGES_WAN) * WAN_FEN - _below(rng, 2)
        elif unit.edge == "high_tech_first_big":
            for year in FACT_YEARS:
                unit.revenue[year] = _between(rng, 20_000, 80_000) * WAN_FEN + _below(rng, WAN_FEN)
                unit.employees[year] = _between(rng, 300, 2000)
        elif unit.edge == "high_tech_first_50m":
            for year in FACT_YEARS:
                unit.revenue[year] = 5_000 * WAN_FEN + _below(rng, 3) - 1

    def _gaps(self, unit: _Unit) -> Gaps:
        """Yearly records a department does not (yet) have, or has only as extracted early:
        ~6.5% of units, in any fact year; the missing- and stale-record edge cases in the year
        their period reads (yearly records are read for the previous year)."""
        rng = self.rng
        if unit.edge is None:
            draw = rng.random()
            if draw >= 0.065:
                return {}
            year = _pick(rng, FACT_YEARS)
        elif unit.edge == "missing_record":
            draw, year = rng.random() * 0.05, unit.edge_year - 1
        elif unit.edge == "stale_record":  # both records of the year, extracted before it ended
            year = unit.edge_year - 1
            return {(department, year): _early_extract(rng, year, _STALE_EXTRACT_DAYS) for department in ("tax", "si")}
        else:
            return {}
        if draw < 0.02:
            return {("tax", year): None}
        if draw < 0.04:
            return {("si", year): None}
        if draw < 0.05:
            return {("tax", year): None, ("si", year): None}
        department = "si" if draw < 0.06 else "tax"
        return {(department, year): _early_extract(rng, year, _EARLY_EXTRACT_DAYS)}

    # -- records ----------------------------------------------------------------------------

    def _enterprise(self, unit: _Unit, word: str) -> dict[str, Any]:
        rng = self.rng
        name = self._name(unit, word)
        status = _STATUS_CHOICE.draw(rng)
        if unit.edge is not None:
            status = "active"
        # Labour-dispatch agencies: about half the L7263 firms, and a few registered elsewhere.
        dispatch_odds = 0.5 if unit.industry == "L7263" else 0.006
        dispatch = unit.edge == "labor_dispatch" or (unit.org_type == "enterprise" and rng.random() < dispatch_odds)
        account: dict[str, str] | None = {
            "bank_name": f"{_pick(rng, _BANKS)}襄阳{_pick(rng, _BRANCHES)}",
            "account_no": f"{rng.getrandbits(64) % 10**19:019d}",  # 19 digits, one draw
            "account_name": name,
        }
        if rng.random() < 0.04 or unit.edge == "no_bank_account":
            account = None
        return {
            "kind": "enterprise",
            "uscc": unit.uscc,
            "source": "market_regulation",
            "as_of": _REGISTRY_AS_OF,
            "name": name,
            "org_type": unit.org_type,
            "region_code": unit.region,
            "industry_code": unit.industry,
            "established_on": unit.established.isoformat(),
            "status": status,
            "labor_dispatch": dispatch,
            "bank_account": account,
        }

    def _tax_year(self, unit: _Unit, year: int, as_of: str) -> dict[str, Any]:
        rng = self.rng
        edge = unit.edge
        revenue = unit.revenue[year]
        industrial = unit.industry[0] in "BCD"
        main = revenue if not industrial else revenue * _between(rng, 82, 100) // 100
        if edge in ("size_boundary", "high_tech_first_50m"):
            main = revenue  # industry is classed by main-business revenue: keep it on the edge
        researching = unit.industry[0] in "CIM" and rng.random() < 0.5
        rating = _RATING_CHOICE.draw(rng)
        if unit.established.year >= year and rating in ("A", "B"):
            rating = "M"  # a taxpayer new in the year is rated M
        if edge == "tax_credit_d":
            rating = "D"
        elif edge is not None and rating == "D":
            rating = "B"  # keep other edge cases about their own boundary
        return {
            "kind": "tax_year",
            "uscc": unit.uscc,
            "source": "tax",
            "as_of": as_of,
            "year": year,
            "employees": unit.employees[year],
            "revenue_fen": revenue,
            "main_business_revenue_fen": main,
            "total_assets_fen": unit.assets[year],
            "tax_paid_fen": revenue * _between(rng, 5, 50) // 1000,
            "rd_expense_fen": revenue * _between(rng, 1, 60) // 1000 if researching else 0,
            "credit_rating": rating,
        }

    def _social_insurance_year(self, unit: _Unit, year: int, as_of: str) -> dict[str, Any]:
        rng = self.rng
        random_ = rng.random  # the record drawn most often: uniform draws inlined
        edge = unit.edge
        established = unit.established
        new = year == established.year
        start = 0 if new else round(unit.employees[year - 1] * unit.coverage)
        end = round(unit.employees[year] * unit.coverage)
        average = max(1, round((start + end) / 2 * (0.95 + 0.1 * random_()))) if start + end else 0
        draw = 0.0 if edge == "refund_half_fen" else random_()  # that edge is about the amount
        if draw < 0.84:
            claimants = int(average * 0.05 * random_())
        elif draw < 0.96:
            claimants = max(1, round(average * (0.056 + 0.144 * random_())))
        else:
            claimants = max(1, round(average * (0.2 + 0.2 * random_())))
        claimants = min(claimants, average)
        exact = self._exact_layoffs(edge)
        if exact is not None:
            start, average, per_mille = exact
            end = average
            claimants = average * per_mille // 1000
        layoffs = claimants + int(random_() * (claimants + 1))
        months_this_year = 12 if year > established.year else 12 - established.month
        months_paid = min(600, (year - established.year) * 12 + months_this_year)
        gap = random_() < 0.07  # contributions interrupted: the run restarted this year
        if edge == "ui_months_11":
            months_paid = min(months_paid, 11)
        elif gap and edge is None:
            months_paid = min(months_paid, int(random_() * 12))
        wage_fen = 350_000 + int(random_() * 550_001)  # monthly contribution base per person
        premium = average * months_this_year * wage_fen * 7 // 1000  # employer rate 0.7%
        premium += int(random_() * 100) if premium else 0
        back = _between(rng, 1, premium // 5) if premium > 5 and random_() < 0.05 else 0
        late = _between(rng, 1, max(1, premium // 50)) if premium and random_() < 0.03 else 0
        size_class: str | None = _rough_size_class(unit.industry, unit.employees[year], unit.revenue[year])
        if random_() < 0.15 or edge == "si_class_missing":
            size_class = None
        if edge == "refund_half_fen":
            # The refundable premium ends in 5 fen: times a rate of a half or of an odd number of
            # tenths (30%, 50%, 90%) it leaves exactly half a fen, the rounding tie.
            premium, back, late = premium - premium % 10 + 5, 0, 0
            size_class = _pick(rng, ("large", "small"))
        return {
            "kind": "social_insurance_year",
            "uscc": unit.uscc,
            "source": "human_resources",
            "as_of": as_of,
            "year": year,
            "insured_start": start,
            "insured_end": end,
            "insured_avg_monthly": average,
            "ui_months_paid": months_paid,
            "ui_premium_paid_fen": premium,
            "ui_back_payment_fen": back,
            "ui_late_fee_fen": late,
            "ui_arrears": edge == "ui_arrears" or (edge is None and random_() < 0.03),
            "layoffs": layoffs,
            "ui_benefit_claimants": claimants,
            "size_class": size_class,
        }

    def _exact_layoffs(self, edge: str | None) -> tuple[int, int, int] | None:
        """Insured at the start, average insured and claimants per mille of the layoff edges."""
        if edge == "layoff_exactly_5_5":  # 5.5% exactly: still within the limit
            average = _pick(self.rng, (200, 400, 1000))
            return average, average, 55
        if edge == "small_employer_20pct":  # 30 insured at the start: the 20% limit applies
            return 30, _pick(self.rng, (25, 30)), 200
        if edge == "small_employer_31":  # 31 at the start: 10% is over the 5.5% limit
            return 31, 30, 100
        if edge == "zero_insured":  # nobody insured: a rate with a zero denominator
            return 0, 0, 0
        return None

    def _hires(self, unit: _Unit) -> Iterator[dict[str, Any]]:
        rng = self.rng
        edge = unit.edge
        used: set[str] = set()
        for year in HIRE_YEARS:
            if year < unit.established.year or (rng.random() < 0.3 and edge is None):
                continue
            count = 1 + min(40, int(rng.expovariate(1 / (1 + unit.employees[year] / 40))))
            for number in range(count):
                person = None
                if (edge == "shared_hire" and number == 0) or rng.random() < 0.02:
                    person = self._shared_person(unit, year, used)
                if person is None:
                    person = self._new_person(unit, year)
                    self.recent_hires.append(person)
                used.add(person.ref)
                yield self._hire_record(unit, person)

    def _new_person(self, unit: _Unit, year: int) -> _Person:
        rng = self.rng
        self.persons += 1
        ref = f"P{self.person_perm(self.persons):010x}"
        hired_on = _day_in_year(rng, year, unit.established)
        draw = rng.random()
        graduation_year: int | None = None
        age: int | None
        youth_edges = unit.edge == "youth_hires"
        if youth_edges:
            draw = _pick(rng, (0.1, 0.6))
        elif unit.edge in _GRADUATE_EDGES:
            draw = 0.1
        if draw < 0.45:
            category = "graduate"
            graduation_year = year - _pick(rng, (0, 0, 0, 1, 1, 2, 3))
            age = _between(rng, 20, 25) + (year - graduation_year)
        elif draw < 0.70:
            category = "unemployed_youth"
            age = _pick(rng, (15, 16, 24, 25)) if youth_edges else _between(rng, 14, 30)
            graduation_year = year - _between(rng, 1, 5) if rng.random() < 0.3 else None
        else:
            category = "other"
            age = _between(rng, 18, 59) if rng.random() < 0.9 else None
        return _Person(ref, year, hired_on, category, graduation_year, age, unit.uscc)

    def _shared_person(self, unit: _Unit, year: int, used: set[str]) -> _Person | None:
        """The same person hired in the same year by an earlier enterprise: both report them."""
        rng = self.rng
        candidates = [p for p in self.recent_hires if p.year == year and p.uscc != unit.uscc and p.ref not in used]
        if not candidates:
            return None
        earlier = _pick(rng, candidates)
        hired_on = earlier.hired_on
        if rng.random() < 0.6 or hired_on < unit.established:
            hired_on = _day_in_year(rng, year, unit.established)
        return _Person(earlier.ref, year, hired_on, earlier.category, earlier.graduation_year, earlier.age, unit.uscc)

    def _hire_record(self, unit: _Unit, person: _Person) -> dict[str, Any]:
        rng = self.rng
        as_of = _HIRE_AS_OF[person.year]
        covered = min(12, (as_of.year - person.hired_on.year) * 12 + as_of.month - person.hired_on.month)
        if unit.edge == "hire_insured_months":
            insured = min(covered, _pick(rng, _INSURED_MONTHS_EDGES))
        else:
            insured = covered if rng.random() < 0.7 else _below(rng, covered + 1)
        return {
            "kind": "hire",
            "uscc": unit.uscc,
            "source": "human_resources",
            "as_of": as_of.isoformat(),
            "year": person.year,
            "hired_on": person.hired_on.isoformat(),
            "person_ref": person.ref,
            "category": person.category,
            "graduation_year": person.graduation_year,
            "age": person.age,
            "labor_contract": rng.random() < 0.9,
            "insured_months": insured,
            "absorption_subsidy_claimed": rng.random() < 0.08,
        }

    def _qualifications(self, unit: _Unit) -> Iterator[dict[str, Any]]:
        rng = self.rng
        if unit.org_type != "enterprise":
            return
        edge = unit.edge
        section = unit.industry[0]
        granted: list[tuple[str, str, bool, int]] = []  # type, level, first_time, year
        tech_odds = 0.06 if section in "CIM" else 0.01
        if edge in ("high_tech_first_big", "high_tech_first_50m", "no_bank_account"):
            granted.append(("high_tech", "national", True, unit.edge_year))
        elif edge == "high_tech_recert":
            granted.append(("high_tech", "national", False, unit.edge_year))
        elif edge is None and rng.random() < tech_odds:
            first = rng.random() < 0.6
            granted.append(("high_tech", "national", first, _pick(rng, FACT_YEARS)))
        titled = edge in ("little_giant_and_champion", "no_bank_account")
        champion = titled or (edge is None and section == "C" and rng.random() < 0.004)
        giant_draw = rng.random()
        year = unit.edge_year if edge else _pick(rng, FACT_YEARS)
        if champion:
            granted.append(("single_champion", "national", True, year))
        if titled or (champion and rng.random() < 0.4):
            granted.append(("little_giant", "national", True, year))
        elif edge is None and giant_draw < 0.005:
            granted.append(("little_giant", "national", rng.random() < 0.9, year))
        elif edge is None and giant_draw < 0.025:
            granted.append(("little_giant", "provincial", True, year))
        entry_edge = edge in ("above_size_emerging", "no_bank_account")
        entering = entry_edge or (edge is None and rng.random() < 0.04)
        if section in "BCD" and entering:
            granted.append(("above_designated_size", "provincial", True, year))
            if entry_edge or rng.random() < 0.3:
                granted.append(("strategic_emerging", "provincial", True, year))
        if edge is None and rng.random() < 0.025:
            level = _pick(rng, ("provincial", "city"))
            granted.append(("strategic_emerging", level, rng.random() < 0.7, _pick(rng, FACT_YEARS)))
        for kind, level, first_time, granted_year in granted:
            self.certificates += 1
            granted_on = (date(granted_year, 1, 1) + timedelta(days=_below(rng, 365))).isoformat()
            yield {
                "kind": "qualification",
                "uscc": unit.uscc,
                "source": "science_technology" if kind == "high_tech" else "industry_it",
                "as_of": granted_on,
                "type": kind,
                "level": level,
                "first_time": first_time,
                "granted_on": granted_on,
                "certificate_no": _certificate_no(kind, granted_year, self.certificates),
            }

    def _credit_listings(self, unit: _Unit) -> Iterator[dict[str, Any]]:
        rng = self.rng
        edge = unit.edge
        if edge == "listed_current":
            lists = [_pick(rng, _EXCLUDING_LISTS)]
        elif edge == "listed_removed":
            lists = [_pick(rng, _LIST_CHOICE.items)]
        elif edge is None and rng.random() < 0.02:
            drawn = {_LIST_CHOICE.draw(rng) for _ in range(_pick(rng, (1, 1, 1, 2)))}
            lists = sorted(drawn)
        else:
            return
        for name in lists:
            listed_on = _LISTINGS_FROM + timedelta(days=_below(rng, _LISTING_DAYS))
            removed_on: date | None = None
            if edge == "listed_removed" or (edge is None and rng.random() < 0.45):
                room = (REGISTRY_AS_OF - listed_on).days
                removed_on = listed_on + timedelta(days=_below(rng, room + 1))
            yield {
                "kind": "credit_listing",
                "uscc": unit.uscc,
                "source": "credit",
                "as_of": _REGISTRY_AS_OF,
                "list": name,
                "listed_on": listed_on.isoformat(),
                "removed_on": removed_on.isoformat() if removed_on else None,
            }


# Lists that exclude an enterprise from every policy while it is on them.
_EXCLUDING_LISTS = ("serious_dishonesty", "judgment_defaulter", "wage_arrears", "zombie")
_LISTINGS_FROM = date(2019, 1, 1)
_LISTING_DAYS = (REGISTRY_AS_OF - _LISTINGS_FROM).days
_REGISTRY_AS_OF = REGISTRY_AS_OF.isoformat()
_CERTIFICATE_PREFIX = {
    "high_tech": "GR",
    "little_giant": "XJR",
    "single_champion": "DXGJ",
    "above_designated_size": "GS",
    "strategic_emerging": "ZX",
}


def generate(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """Records of `count` synthetic units, unit by unit; the same (count, seed), the same data."""
    generator = _Generator(count, seed)
    for index in range(count):
        yield from generator.unit(index)


def write_jsonl(path: Path, count: int, seed: int) -> int:
    """Write `generate(count, seed)` as JSON Lines; the number of records written."""
    written = 0
    with open(path, "wb") as out:
        for record in generate(count, seed):
            out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            written += 1
    return written


def _day_in_year(rng: random.Random, year: int, not_before: date) -> date:
    """A day of `year`, not before `not_before` (nobody is hired before the employer exists)."""
    first = max(date(year, 1, 1), not_before)
    return first + timedelta(days=_below(rng, (date(year, 12, 31) - first).days + 1))


def _early_extract(rng: random.Random, year: int, days_before_end: Sequence[int]) -> str:
    """The as_of of a yearly record extracted that many days before its year's last day."""
    return (date(year, 12, 31) - timedelta(days=_pick(rng, days_before_end))).isoformat()


# Uniform draws from one `random()` each: `randrange`, `randint` and `choice` cost several
# times as much, and records are drawn by the million.
def _below(rng: random.Random, n: int) -> int:
    """An integer in range(n), n >= 1."""
    return int(rng.random() * n)


def _between(rng: random.Random, low: int, high: int) -> int:
    """An integer from low to high, both included."""
    return low + int(rng.random() * (high - low + 1))


def _pick(rng: random.Random, items: Sequence[T]) -> T:
    return items[int(rng.random() * len(items))]


def _certificate_no(kind: str, year: int, serial: int) -> str:
    """Like GR202442001234: a type prefix, the year, Hubei's province code 42, a serial."""
    return f"{_CERTIFICATE_PREFIX[kind]}{year}42{serial:07d}"


class _Weighted:
    """Items drawn by weight; the cumulative weights are computed once, not on every draw."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.items = tuple(weights)
        self.cumulative = tuple(accumulate(weights.values()))
        self.total = self.cumulative[-1]
        self.last = len(self.items) - 1

    def draw(self, rng: random.Random) -> str:
        # What `rng.choices(items, cum_weights=...)` does, without its per-call set-up.
        return self.items[bisect(self.cumulative, rng.random() * self.total, 0, self.last)]


_ORG_TYPE_CHOICE = _Weighted({name: weight for name, (weight, _) in _ORG_TYPES.items()})
_INDUSTRY_CHOICE = _Weighted({code: weight for code, weight, _, _ in _INDUSTRIES})
_REGION_CHOICE = _Weighted(dict(zip(XIANGYANG, (30.0, 8, 14, 12, 5, 6, 3, 6, 10, 6))))
_SUFFIX_CHOICE = _Weighted({"有限公司": 7.0, "有限责任公司": 2.0, "股份有限公司": 1.0})
_STATUS_CHOICE = _Weighted({"active": 94.0, "suspended": 2.0, "liquidating": 1.5, "deregistered": 1.5, "revoked": 1.0})
_RATING_CHOICE = _Weighted({"A": 38.0, "B": 42.0, "M": 8.0, "C": 7.0, "D": 5.0})
_LIST_CHOICE = _Weighted(
    {
        "abnormal_operation": 40.0,
        "judgment_defaulter": 20.0,
        "wage_arrears": 15.0,
        "serious_dishonesty": 10.0,
        "zombie": 15.0,
    }
)


def _affine(rng: random.Random, modulus: int) -> Any:
    """A random bijection of range(modulus) of the form i -> (a*i + b) mod modulus."""
    while True:
        a = rng.randrange(modulus // 3, modulus)
        if math.gcd(a, modulus) == 1:
            break
    b = rng.randrange(modulus)
    return lambda i: (a * i + b) % modulus


def _encode(number: int, alphabet: str, width: int) -> str:
    """`number` written in base len(alphabet) with exactly `width` characters."""
    base = len(alphabet)
    chars = []
    for _ in range(width):
        number, digit = divmod(number, base)
        chars.append(alphabet[digit])
    return "".join(reversed(chars))


def _rough_size_class(industry: str, employees: int, revenue_fen: int) -> str:
    """The class a social-insurance office might have recorded: a rough reading of the standard.

    Deliberately not the SME-standard classifier (that is `sme_standard`): the office's record is
    a separate fact and may disagree with the derived class.
    """
    revenue_wan = revenue_fen // WAN_FEN
    bounds = ((1000, 40000), (300, 2000), (20, 300)) if industry[0] in "BCD" else ((300, 10000), (100, 1000), (10, 100))
    for size, (staff, revenue) in zip(("large", "medium", "small"), bounds):
        if employees >= staff and revenue_wan >= revenue:
            return size
    return "micro"
