"""The policy file format (one policy version per YAML file) and its test-case format, strictly validated."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from rules.errors import PolicySchemaError
from rules.values import Outcome, Truth
from rules.yaml_source import Located

_ID = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def _policy_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError("ids are lower-case words joined by '-'")
    return value


# A policy id: `id`, and each entry of `excludes` (validated per item, so an error names its line).
PolicyId = Annotated[str, AfterValidator(_policy_id)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LegalBasis(_Strict):
    """One published document the policy rests on."""

    document: str = Field(min_length=1)  # 文号, e.g. 人社部发〔2025〕18号
    title: str = Field(min_length=1)
    article: str | None = None
    url: str | None = None
    periods: list[int] | None = None  # the periods this document governs, if not all


class Effective(_Strict):
    """The periods the policy is in force: a span, or the list of periods the text gives figures for."""

    first_period: int | None = Field(default=None, ge=2000, le=2100)
    last_period: int | None = Field(default=None, ge=2000, le=2100)
    periods: list[int] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Effective:
        if (self.periods is None) == (self.first_period is None):
            raise ValueError("give either first_period (and last_period) or a list of periods")
        if self.periods is not None and self.last_period is not None:
            raise ValueError("last_period goes with first_period, not with periods")
        if self.last_period is not None and self.first_period is not None and self.last_period < self.first_period:
            raise ValueError("last_period is before first_period")
        return self

    def covers(self, period: int) -> bool:
        if self.periods is not None:
            return period in self.periods
        assert self.first_period is not None
        return self.first_period <= period and (self.last_period is None or period <= self.last_period)

    def listed(self) -> list[int]:
        """The periods named explicitly (all of them for a closed span)."""
        if self.periods is not None:
            return sorted(self.periods)
        assert self.first_period is not None
        return list(range(self.first_period, (self.last_period or self.first_period) + 1))


class Tier(_Strict):
    """One step of a tier table: applies to values up to `up_to` (inclusive); null = no upper bound."""

    up_to: str | int | None
    value: str | int


ParameterValue = str | int | bool | list[Tier]


class Parameter(_Strict):
    """A named figure of the policy. `values` are by period: each applies from its year on."""

    description: str = Field(min_length=1)
    value: ParameterValue | None = None
    values: dict[int, ParameterValue] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Parameter:
        if (self.value is None) == (self.values is None):
            raise ValueError("give exactly one of `value` or `values` (by period)")
        if self.values is not None and not self.values:
            raise ValueError("`values` is empty")
        return self


class Condition(_Strict):
    """A named clause: its Chinese text, where the policy says it, and its expression."""

    id: str
    text: str = Field(min_length=1)
    citation: str = Field(min_length=1)
    expr: str = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError("ids are lower-case words joined by '-'")
        return value


class Definition(_Strict):
    """A named term (`definitions:`): an expression written once and used by name in the
    conditions, the payable clauses, the amount and other definitions (rules.definitions)."""

    text: str = Field(min_length=1)  # what it is, in words, for explanations
    expr: str = Field(min_length=1)


class Amount(_Strict):
    formula: str = Field(min_length=1)
    text: str = Field(min_length=1)  # the rule in words, for explanations
    rounding: Literal["half_up", "down"] = "half_up"  # to the fen, once per payee
    cap: str | int | None = None  # per-enterprise maximum (money)


class Policy(_Strict):
    id: PolicyId
    version: str = Field(min_length=1)
    title: str = Field(min_length=1)
    authority: str = Field(min_length=1)
    description: str | None = None
    legal_basis: list[LegalBasis] = Field(min_length=1)
    apply_free: Literal[True] | str  # true, or the reason an application is needed
    funding: Literal["unemployment_insurance_fund", "treasury"]
    effective: Effective
    fact_year: Literal["previous", "period"]  # which year's yearly records `tax`/`si` read
    conflict_group: str | None = None  # 就高不重复: one award per group and period
    # `excludes: [other-policy-id, ...]`: programmes an enterprise may not hold in the same period
    # together with this one; symmetric (B need not name A), never the policy itself nor twice,
    # every id a policy of the same directory, never one of the same conflict group (checked by
    # rules.loader, which has the lines and the other files). Unlike a conflict group, which pays
    # the higher award, an exclusion pays nothing once the other programme is held.
    excludes: list[PolicyId] = Field(default_factory=list)
    budget: str | int | None = None  # money available per period (for payout batches)
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    definitions: dict[str, Definition] = Field(default_factory=dict)  # name -> named term
    conditions: list[Condition] = Field(min_length=1)
    payable: list[Condition] = Field(default_factory=list)
    amount: Amount


class Expectation(_Strict):
    # the words as a YAML file gives them (strict mode would take only members)
    outcome: Annotated[Outcome, Strict(False)]
    amount_fen: int | None = None
    conditions: dict[str, Annotated[Truth, Strict(False)]] | None = None
    missing: list[str] | None = None
    held: list[str] | None = None


class PolicyTestCase(_Strict):
    """One example: registry records (as fed), a period, an evaluation date, and what must come out."""

    name: str = Field(min_length=1)
    period: int
    as_of: date
    uscc: str | None = None
    facts: list[dict[str, Any]]
    expect: Expectation


def validate_policy(doc: Located) -> Policy:
    """Validate a loaded policy document, naming the line of the first problems."""
    return _validate(Policy, doc.data, doc)


def validate_test_cases(doc: Located) -> list[PolicyTestCase]:
    if not isinstance(doc.data, list) or not doc.data:
        raise PolicySchemaError(doc.file, 1, "a policy test file is a non-empty list of cases")
    return [_validate(PolicyTestCase, case, doc, (i,)) for i, case in enumerate(doc.data)]


_Model = TypeVar("_Model", bound=BaseModel)


def _validate(model: type[_Model], data: Any, doc: Located, prefix: tuple[str | int, ...] = ()) -> _Model:
    if not isinstance(data, dict):
        raise PolicySchemaError(doc.file, doc.line_of(prefix), "expected a mapping of keys")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = _data_path(data, first["loc"])
        path = (*prefix, *loc)
        field = ".".join(str(p) for p in loc) or None
        reason = _reason(first)
        more = len(exc.errors()) - 1
        if more:
            reason += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise PolicySchemaError(doc.file, doc.line_of(path), reason, field=field) from None


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Keep the parts of pydantic's error location that are real keys of the document
    (drop the union-member names it inserts), and keep an unknown key itself."""
    path: list[str | int] = []
    node = data
    for part in loc:
        in_mapping = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            node = node[part]
        elif isinstance(node, dict) and part == loc[-1]:
            pass  # a missing key: report it at its parent mapping
        else:
            continue
        path.append(part)
    return tuple(path)


def _reason(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (not part of the policy format)"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
