"""Validation of one fact record (one JSON Lines object) into an immutable, typed model per kind."""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from enterprise_registry import uscc as uscc_codes
from enterprise_registry.errors import InvalidUsccError, RecordValidationError
from enterprise_registry.kinds import (
    DEPARTMENTS,
    KEY_FIELDS,
    KIND_NAMES,
    MAX_AGE,
    MAX_COUNT,
    MAX_FEN,
    MAX_MONTHS,
    MAX_TEXT,
    MAX_YEAR,
    MIN_AGE,
    MIN_YEAR,
    SOURCES_BY_KIND,
    CreditRating,
    HireCategory,
    ListName,
    OrgType,
    QualificationLevel,
    QualificationType,
    SizeClass,
    Status,
)

MIN_DATE_YEAR = 1900  # establishment dates may predate 1949; anything older is a typo
KINDS = KIND_NAMES

_DATE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# A PRC resident ID number (17 digits and a digit or X; 15 digits for the first generation).
_ID_NUMBER = re.compile(r"[0-9]{17}[0-9Xx]|[0-9]{15}")


class _FieldProblem(ValueError):
    """A cross-field check failed; carries the field to blame, as pydantic cannot know it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def _shown(value: object) -> str:
    """A value as it would appear in the JSON line, shortened for messages."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _to_date(value: object) -> object:
    """ISO `YYYY-MM-DD` text to a date. Date objects pass too: YAML test facts load them as such."""
    if isinstance(value, str):
        if not _DATE_SHAPE.fullmatch(value):
            raise ValueError(f"must be a date written YYYY-MM-DD, got {_shown(value)}")
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not a real date: {value}") from None
    elif isinstance(value, datetime) or not isinstance(value, date):
        # ValueError, not TypeError: pydantic reports only ValueError as a validation error.
        raise ValueError(f"must be a date written YYYY-MM-DD, got {_shown(value)}")
    if not MIN_DATE_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"year of {value.isoformat()} is outside {MIN_DATE_YEAR}..{MAX_YEAR}")
    return value


@lru_cache(maxsize=4096)
def _uscc_problem(code: str) -> str | None:
    # Cached: a feed repeats each enterprise's code on every one of its records.
    try:
        uscc_codes.validate(code)
    except InvalidUsccError as exc:
        return exc.reason
    return None


def _check_uscc(code: str) -> str:
    problem = _uscc_problem(code)
    if problem is not None:
        raise ValueError(problem)
    return code


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or blank")
    control = _CONTROL.search(text)
    if control:  # NUL in particular: PostgreSQL text cannot hold it
        raise ValueError(f"must not contain control characters, found U+{ord(control.group()):04X}")
    if text != text.strip():
        raise ValueError(f"must not start or end with white space, got {_shown(text)}")
    return text


def _check_person_ref(ref: str) -> str:
    if _ID_NUMBER.fullmatch(ref):
        raise ValueError("looks like a resident ID number: persons are identified only by a pseudonymous id")
    return ref


IsoDate = Annotated[date, BeforeValidator(_to_date)]
Uscc = Annotated[str, AfterValidator(_check_uscc)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_check_text)]
Fen = Annotated[int, Field(ge=0, lt=MAX_FEN)]
Count = Annotated[int, Field(ge=0, lt=MAX_COUNT)]
Months = Annotated[int, Field(ge=0, le=MAX_MONTHS)]
Year = Annotated[int, Field(ge=MIN_YEAR, le=MAX_YEAR)]
Age = Annotated[int, Field(ge=MIN_AGE, le=MAX_AGE)]
PersonRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{4,64}$"), AfterValidator(_check_person_ref)]

# strict: no "12" for 12, no 12.0 for 12, no true for 1; forbid: an unknown key is an error.
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class BankAccount(BaseModel):
    """The corporate account that apply-free payments go to."""

    model_config = _STRICT

    bank_name: Text
    account_no: Text
    account_name: Text


class RecordBase(BaseModel):
    """Fields every fact record carries: what it is, whose it is, who says so and as of when."""

    model_config = _STRICT
    KIND: ClassVar[str] = ""

    kind: str
    uscc: Uscc
    source: str
    as_of: IsoDate

    @field_validator("source")
    @classmethod
    def _department_holds_kind(cls, source: str) -> str:
        if source not in DEPARTMENTS:
            known = ", ".join(DEPARTMENTS)
            raise ValueError(f"unknown department {_shown(source)} (one of {known})")
        holders = SOURCES_BY_KIND[cls.KIND]
        if source not in holders:
            raise ValueError(f"department {source} does not hold {cls.KIND} records (expected {' or '.join(holders)})")
        return source


class EnterpriseRecord(RecordBase):
    """The market-regulation registry entry of one unit."""

    KIND = "enterprise"

    kind: Literal["enterprise"]
    name: Text
    org_type: OrgType
    region_code: Annotated[str, Field(pattern=r"^[0-9]{6}$")]
    industry_code: Annotated[str, Field(pattern=r"^[A-T][0-9]{2,4}$")]
    established_on: IsoDate
    status: Status
    labor_dispatch: bool
    bank_account: BankAccount | None = None


class TaxYearRecord(RecordBase):
    """One year of an enterprise's tax-bureau figures."""

    KIND = "tax_year"

    kind: Literal["tax_year"]
    year: Year
    employees: Count
    revenue_fen: Fen
    main_business_revenue_fen: Fen
    total_assets_fen: Fen
    tax_paid_fen: Fen
    rd_expense_fen: Fen
    credit_rating: CreditRating


class SocialInsuranceYearRecord(RecordBase):
    """One year of an employer's unemployment-insurance figures."""

    KIND = "social_insurance_year"

    kind: Literal["social_insurance_year"]
    year: Year
    insured_start: Count
    insured_end: Count
    insured_avg_monthly: Count
    ui_months_paid: Months
    ui_premium_paid_fen: Fen
    ui_back_payment_fen: Fen
    ui_late_fee_fen: Fen
    ui_arrears: bool
    layoffs: Count
    ui_benefit_claimants: Count
    size_class: SizeClass | None = None


class HireRecord(RecordBase):
    """One person hired by an employer, known only by a pseudonymous reference."""

    KIND = "hire"

    kind: Literal["hire"]
    year: Year
    hired_on: IsoDate
    person_ref: PersonRef
    category: HireCategory
    graduation_year: Year | None = None
    age: Age | None = None
    labor_contract: bool
    insured_months: Months
    absorption_subsidy_claimed: bool

    @model_validator(mode="after")
    def _consistent(self) -> HireRecord:
        if self.year != self.hired_on.year:
            raise _FieldProblem("year", f"must be the year of hired_on {self.hired_on.isoformat()}, got {self.year}")
        if self.category == "graduate" and self.graduation_year is None:
            raise _FieldProblem("graduation_year", "required for category graduate")
        if self.category == "unemployed_youth" and self.age is None:
            raise _FieldProblem("age", f"required for category {self.category}")
        return self


class QualificationRecord(RecordBase):
    """A certification or listing granted to an enterprise (high-tech, little giant, ...)."""

    KIND = "qualification"

    kind: Literal["qualification"]
    type: QualificationType
    level: QualificationLevel
    first_time: bool
    granted_on: IsoDate
    certificate_no: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_check_text)]


class CreditListingRecord(RecordBase):
    """An entry on a credit list (dishonesty, judgment defaulters, ...), removed or not."""

    KIND = "credit_listing"

    kind: Literal["credit_listing"]
    list: ListName
    listed_on: IsoDate
    removed_on: IsoDate | None = None

    @model_validator(mode="after")
    def _removed_after_listed(self) -> CreditListingRecord:
        if self.removed_on is not None and self.removed_on < self.listed_on:
            raise _FieldProblem(
                "removed_on",
                f"{self.removed_on.isoformat()} is before listed_on {self.listed_on.isoformat()}",
            )
        return self


Record = (
    EnterpriseRecord
    | TaxYearRecord
    | SocialInsuranceYearRecord
    | HireRecord
    | QualificationRecord
    | CreditListingRecord
)

RECORD_MODELS: dict[str, type[RecordBase]] = {
    "enterprise": EnterpriseRecord,
    "tax_year": TaxYearRecord,
    "social_insurance_year": SocialInsuranceYearRecord,
    "hire": HireRecord,
    "qualification": QualificationRecord,
    "credit_listing": CreditListingRecord,
}

_PATTERN_TEXT = {
    "region_code": "a six-digit GB/T 2260 code",
    "industry_code": "a GB/T 4754 code: section letter A-T and 2 to 4 digits, like C3484",
    "person_ref": "a pseudonymous id of 4-64 characters A-Z, a-z, 0-9, _ or -",
}


def parse_record(obj: object) -> Record:
    """Validate one record; raise RecordValidationError naming the field of its first problem."""
    if isinstance(obj, RecordBase):
        return obj  # type: ignore[return-value]  # already validated: models are immutable
    if not isinstance(obj, dict):
        raise RecordValidationError(None, f"must be a JSON object, got {_json_type(obj)}")
    if "kind" not in obj:
        raise RecordValidationError("kind", "missing required field")
    kind = obj["kind"]
    model = RECORD_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise RecordValidationError("kind", f"unknown kind {_shown(kind)} (one of {', '.join(KINDS)})")
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        field, reason = _first_problem(exc)
        raise RecordValidationError(field, reason) from exc


def record_key(record: Record) -> tuple[Any, ...]:
    """The natural key of a record within its kind (see KEY_FIELDS)."""
    return tuple(getattr(record, name) for name in KEY_FIELDS[record.kind])


def _first_problem(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors(include_url=False)
    # An unknown key is usually a misspelt one: name it rather than the "missing" field it hides.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, _FieldProblem):
        return cause.field, str(cause)
    field = ".".join(str(part) for part in error["loc"]) or "record"
    return field, _reason(error, field)


# Money and bank accounts never appear in a message (it may reach a log): only their JSON type.
_PRIVATE_FIELDS = frozenset({"account_no", "account_name", "bank_account"})


def _reason(error: ErrorDetails, field: str) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    leaf = field.rsplit(".", 1)[-1]
    private = leaf.endswith("_fen") or bool(_PRIVATE_FIELDS & set(field.split(".")))

    def _show(value: object) -> str:
        return f"{_json_type(value)} (not repeated)" if private else _shown(value)

    if kind == "missing":
        return "missing required field"
    if kind == "extra_forbidden":
        return f"unknown field {leaf!r}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        noun = "an integer number of fen" if leaf.endswith("_fen") else "an integer"
        return f"must be {noun}, got {_show(value)}"
    if kind == "bool_type":
        return f"must be true or false, got {_show(value)}"
    if kind == "string_type":
        return f"must be a string, got {_show(value)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {_show(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {_show(value)}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}, got {_show(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {_show(value)}"
    if kind == "string_pattern_mismatch":
        shape = _PATTERN_TEXT.get(leaf, f"of the form {ctx.get('pattern')}")
        return f"must be {shape}, got {_show(value)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        if leaf == "bank_account":
            shape = "an object {bank_name, account_no, account_name} or null"
            return f"must be {shape}, got {_show(value)}"
        return f"must be an object, got {_show(value)}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return str(error["msg"])
