"""The fact catalogue: every name a policy may read, its type and its Chinese label."""
from __future__ import annotations

from rules.facts import Catalogue, FactType

ORG_TYPES = ("enterprise", "individual_business", "farmer_cooperative", "social_organization",
             "foundation", "social_service_org", "law_firm", "accounting_firm",
             "public_institution", "government")
STATUSES = ("active", "suspended", "liquidating", "deregistered", "revoked")
SIZE_CLASSES = ("large", "medium", "small", "micro")
CREDIT_RATINGS = ("A", "B", "M", "C", "D")
SECTIONS = tuple("ABCDEFGHIJKLMNOPQRST")
COUNT_MAX = 10**7

_INT, _BOOL, _STR, _DATE = "int", "bool", "str", "date"


def _count(label: str) -> FactType:
    return FactType(_INT, label, max_abs=COUNT_MAX)


def _money(label: str) -> FactType:
    return FactType(_INT, label, max_abs=10**15)


FACTS: dict[str, FactType] = {
    # registry (market_regulation)
    "enterprise.uscc": FactType(_STR, "统一社会信用代码"),
    "enterprise.name": FactType(_STR, "名称"),
    "enterprise.org_type": FactType(_STR, "组织类型", ORG_TYPES),
    "enterprise.region_code": FactType(_STR, "登记机关行政区划代码"),
    "enterprise.industry_code": FactType(_STR, "国民经济行业代码"),
    "enterprise.industry_section": FactType(_STR, "行业门类", SECTIONS),
    "enterprise.established_on": FactType(_DATE, "成立日期"),
    "enterprise.status": FactType(_STR, "登记状态", STATUSES),
    "enterprise.labor_dispatch": FactType(_BOOL, "劳务派遣单位"),
    "enterprise.has_bank_account": FactType(_BOOL, "登记有对公银行账户"),
    # tax, for the fact year
    "tax.year": FactType(_INT, "纳税年度", max_abs=2100),
    "tax.employees": _count("年末从业人员数"),
    "tax.revenue_fen": _money("营业收入（分）"),
    "tax.main_business_revenue_fen": _money("主营业务收入（分）"),
    "tax.total_assets_fen": _money("资产总额（分）"),
    "tax.tax_paid_fen": _money("纳税额（分）"),
    "tax.rd_expense_fen": _money("研发费用（分）"),
    "tax.credit_rating": FactType(_STR, "纳税信用级别", CREDIT_RATINGS),
    # social insurance, for the fact year
    "si.year": FactType(_INT, "社保年度", max_abs=2100),
    "si.insured_start": _count("年初参保人数"),
    "si.insured_end": _count("年末参保人数"),
    "si.insured_avg_monthly": _count("月均参保人数"),
    "si.ui_months_paid": _count("截至上年末连续足额缴纳失业保险月数"),
    "si.ui_premium_paid_fen": _money("上年度实际缴纳失业保险费（分）"),
    "si.ui_back_payment_fen": _money("补缴以前年度失业保险费（分）"),
    "si.ui_late_fee_fen": _money("滞纳金（分）"),
    "si.ui_arrears": FactType(_BOOL, "欠缴失业保险费"),
    "si.layoffs": _count("裁员人数"),
    "si.ui_benefit_claimants": _count("上年度领取失业保险金人数"),
    "si.size_class": FactType(_STR, "社保登记企业规模", SIZE_CLASSES),
    # derived (enterprise_registry.derived)
    "derived.size_class": FactType(_STR, "企业规模（社保登记或按划型标准测算）", SIZE_CLASSES),
    "derived.size_class_basis": FactType(_STR, "企业规模依据", ("social_insurance", "sme_standard")),
}

COLLECTIONS: dict[str, dict[str, FactType]] = {
    "hires": {
        "year": FactType(_INT, "招用年度", max_abs=2100),
        "hired_on": FactType(_DATE, "招用日期"),
        "person_ref": FactType(_STR, "人员编号（化名）"),
        "category": FactType(_STR, "人员类别", ("graduate", "unemployed_youth", "other")),
        "graduation_year": FactType(_INT, "毕业年份", max_abs=2100),
        "age": FactType(_INT, "年龄", max_abs=200),
        "labor_contract": FactType(_BOOL, "签订劳动合同"),
        "insured_months": _count("参保月数"),
        "absorption_subsidy_claimed": FactType(_BOOL, "已享受一次性吸纳就业补贴"),
        "counts_for_enterprise": FactType(_BOOL, "该人员当年首次招用单位为本单位"),
    },
    "qualifications": {
        "type": FactType(_STR, "资质类型", ("high_tech", "little_giant", "single_champion",
                                          "above_designated_size", "strategic_emerging")),
        "level": FactType(_STR, "认定层级", ("national", "provincial", "city")),
        "first_time": FactType(_BOOL, "首次认定"),
        "granted_on": FactType(_DATE, "认定日期"),
        "certificate_no": FactType(_STR, "证书编号"),
    },
    "credit_listings": {
        "list": FactType(_STR, "名单", ("serious_dishonesty", "judgment_defaulter", "wage_arrears",
                                       "abnormal_operation", "zombie")),
        "listed_on": FactType(_DATE, "列入日期"),
        "removed_on": FactType(_DATE, "移出日期"),
    },
}

COLLECTION_LABELS = {"hires": "招用人员", "qualifications": "资质认定", "credit_listings": "信用名单"}

CATALOGUE = Catalogue(FACTS, COLLECTIONS, COLLECTION_LABELS)
