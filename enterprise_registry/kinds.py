"""Every kind of fact record, described once: its fields (type, bound, allowed values, Chinese
label), the departments that hold it, its natural key and where policies read it.

The feed records (`records`), the registry tables (`models`, checked against this), the fact
catalogue policies are type-checked against (`service.catalogue`) and the facts documents
(`service.facts_documents`) all take their knowledge of a kind from here. The bounds matter
beyond validation: the rules compiler proves from them that no arithmetic of a policy can
overflow the engine's 64-bit integers, so the registry must never accept more than they say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

MAX_FEN = 10**15  # 10 trillion yuan: far above any real amount, far below int64
MAX_COUNT = 10**7  # people, records
MAX_MONTHS = 600
MIN_YEAR, MAX_YEAR = 1949, 2100
MIN_AGE, MAX_AGE = 14, 100
MAX_TEXT = 200  # a name, an account number, a bank

Department = Literal["market_regulation", "tax", "human_resources", "science_technology", "industry_it", "credit"]
OrgType = Literal[
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
]
Status = Literal["active", "suspended", "liquidating", "deregistered", "revoked"]
CreditRating = Literal["A", "B", "M", "C", "D"]
SizeClass = Literal["large", "medium", "small", "micro"]
HireCategory = Literal["graduate", "unemployed_youth", "other"]
QualificationType = Literal[
    "high_tech", "little_giant", "single_champion", "above_designated_size", "strategic_emerging"
]
QualificationLevel = Literal["national", "provincial", "city"]
ListName = Literal["serious_dishonesty", "judgment_defaulter", "wage_arrears", "abnormal_operation", "zombie"]

DEPARTMENTS: tuple[str, ...] = get_args(Department)

ValueType = Literal["str", "int", "bool", "date"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: ValueType
    label: str  # Chinese, as explanations show it
    values: tuple[str, ...] | None = None  # the allowed values of an enumeration
    max_abs: int | None = None  # ints: the largest magnitude the registry accepts
    optional: bool = False  # may be null
    fact: bool = True  # policies may read it (a bank account is not a fact)


@dataclass(frozen=True)
class KindSpec:
    kind: str
    label: str
    sources: tuple[str, ...]  # the departments that hold it; any other is refused
    key: tuple[str, ...]  # a later record with the same key supersedes the stored one
    group: str  # policies read it as `<group>.<field>` or collection `<group>`
    collection: bool  # many records per enterprise (hires), or one per fact year
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    @property
    def fact_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.fact)


def _text(name: str, label: str, *, optional: bool = False, fact: bool = True) -> FieldSpec:
    return FieldSpec(name, "str", label, optional=optional, fact=fact)


def _code(name: str, label: str, values: type | object) -> FieldSpec:
    return FieldSpec(name, "str", label, values=get_args(values))


def _money(name: str, label: str) -> FieldSpec:
    return FieldSpec(name, "int", label, max_abs=MAX_FEN)


def _count(name: str, label: str) -> FieldSpec:
    return FieldSpec(name, "int", label, max_abs=MAX_COUNT)


def _year(name: str, label: str, *, optional: bool = False) -> FieldSpec:
    return FieldSpec(name, "int", label, max_abs=MAX_YEAR, optional=optional)


def _flag(name: str, label: str) -> FieldSpec:
    return FieldSpec(name, "bool", label)


def _date(name: str, label: str, *, optional: bool = False) -> FieldSpec:
    return FieldSpec(name, "date", label, optional=optional)


KINDS: dict[str, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            "enterprise",
            "登记信息",
            ("market_regulation",),
            ("uscc",),
            "enterprise",
            False,
            (
                _text("uscc", "统一社会信用代码"),
                _text("name", "名称"),
                _code("org_type", "组织类型", OrgType),
                _text("region_code", "登记机关行政区划代码"),
                _text("industry_code", "国民经济行业代码"),
                _date("established_on", "成立日期"),
                _code("status", "登记状态", Status),
                _flag("labor_dispatch", "劳务派遣单位"),
                _text("bank_account", "对公银行账户", optional=True, fact=False),
            ),
        ),
        KindSpec(
            "tax_year",
            "纳税年度数据",
            ("tax",),
            ("uscc", "year"),
            "tax",
            False,
            (
                _year("year", "纳税年度"),
                _count("employees", "年末从业人员数"),
                _money("revenue_fen", "营业收入（分）"),
                _money("main_business_revenue_fen", "主营业务收入（分）"),
                _money("total_assets_fen", "资产总额（分）"),
                _money("tax_paid_fen", "纳税额（分）"),
                _money("rd_expense_fen", "研发费用（分）"),
                _code("credit_rating", "纳税信用级别", CreditRating),
            ),
        ),
        KindSpec(
            "social_insurance_year",
            "社保年度数据",
            ("human_resources",),
            ("uscc", "year"),
            "si",
            False,
            (
                _year("year", "社保年度"),
                _count("insured_start", "年初参保人数"),
                _count("insured_end", "年末参保人数"),
                _count("insured_avg_monthly", "月均参保人数"),
                FieldSpec("ui_months_paid", "int", "截至上年末连续足额缴纳失业保险月数", max_abs=MAX_MONTHS),
                _money("ui_premium_paid_fen", "上年度实际缴纳失业保险费（分）"),
                _money("ui_back_payment_fen", "补缴以前年度失业保险费（分）"),
                _money("ui_late_fee_fen", "滞纳金（分）"),
                _flag("ui_arrears", "欠缴失业保险费"),
                _count("layoffs", "裁员人数"),
                _count("ui_benefit_claimants", "上年度领取失业保险金人数"),
                FieldSpec("size_class", "str", "社保登记企业规模", values=get_args(SizeClass), optional=True),
            ),
        ),
        KindSpec(
            "hire",
            "招用人员",
            ("human_resources",),
            ("uscc", "person_ref", "hired_on"),
            "hires",
            True,
            (
                _year("year", "招用年度"),
                _date("hired_on", "招用日期"),
                _text("person_ref", "人员编号（化名）"),
                _code("category", "人员类别", HireCategory),
                _year("graduation_year", "毕业年份", optional=True),
                FieldSpec("age", "int", "年龄", max_abs=MAX_AGE, optional=True),
                _flag("labor_contract", "签订劳动合同"),
                FieldSpec("insured_months", "int", "参保月数", max_abs=MAX_MONTHS),
                _flag("absorption_subsidy_claimed", "已享受一次性吸纳就业补贴"),
            ),
        ),
        KindSpec(
            "qualification",
            "资质认定",
            ("science_technology", "industry_it"),
            ("uscc", "certificate_no"),
            "qualifications",
            True,
            (
                _code("type", "资质类型", QualificationType),
                _code("level", "认定层级", QualificationLevel),
                _flag("first_time", "首次认定"),
                _date("granted_on", "认定日期"),
                _text("certificate_no", "证书编号"),
            ),
        ),
        KindSpec(
            "credit_listing",
            "信用名单",
            ("credit",),
            ("uscc", "list", "listed_on"),
            "credit_listings",
            True,
            (
                _code("list", "名单", ListName),
                _date("listed_on", "列入日期"),
                _date("removed_on", "移出日期", optional=True),
            ),
        ),
    )
}

KIND_NAMES: tuple[str, ...] = tuple(KINDS)
SOURCES_BY_KIND: dict[str, tuple[str, ...]] = {kind: spec.sources for kind, spec in KINDS.items()}
KEY_FIELDS: dict[str, tuple[str, ...]] = {kind: spec.key for kind, spec in KINDS.items()}
