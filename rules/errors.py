"""Errors raised while loading, compiling and evaluating policies.

RuleError
├── PolicyFileError                  a policy or policy-test file is refused (file, line, column)
│   ├── PolicySyntaxError            the YAML itself does not parse
│   ├── PolicySchemaError            a key is unknown, missing or of the wrong kind
│   ├── ExpressionSyntaxError        an expression does not parse in our language
│   ├── ExpressionTypeError          an expression parses but mixes types or names unknown facts
│   ├── EngineLimitError             the expression would crash or mislead durable-rules
│   │   └── VectorisedLimitError     the vectorised trace cannot compute it exactly (rules.vectorised)
│   └── MissingPolicyTestsError      a policy has no test cases beside it
├── PolicyNotFoundError              no loaded policy has that id
├── PeriodNotCoveredError            the policy is not in force for that period
└── EvaluationError                  an evaluation could not be completed
    ├── EngineError                  durable-rules failed (wrapped from its bare Exception)
    └── EngineDisagreementError      the engine's decision and the independent trace differ
"""

from __future__ import annotations


class RuleError(Exception):
    """Base of every error of the rules package."""


class PolicyFileError(RuleError):
    """A policy (or policy-test) file is refused; nothing of it is loaded."""

    def __init__(
        self, file: str, line: int | None, reason: str, *, column: int | None = None, field: str | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.reason}"


class PolicySyntaxError(PolicyFileError):
    """Raised when the YAML text of a policy file cannot be parsed."""


class PolicySchemaError(PolicyFileError):
    """Raised when a key is unknown, missing, duplicated or holds the wrong kind of value."""


class ExpressionSyntaxError(PolicyFileError):
    """Raised when an expression does not parse; line and column point into the policy file."""


class ExpressionTypeError(PolicyFileError):
    """Raised when an expression names an unknown fact or parameter, or mixes types."""


class EngineLimitError(PolicyFileError):
    """Raised when a construct would crash or silently mislead durable-rules (docs/durable-rules-limits.md)."""


class VectorisedLimitError(EngineLimitError):
    """Raised at load when the vectorised trace cannot compute an expression exactly in 64-bit
    integers (its bound from the facts' declared ranges is too large) or does not support it."""


class MissingPolicyTestsError(PolicyFileError):
    """Raised when a policy file has no `<id>.test.yaml` with at least one case beside it."""


class PolicyNotFoundError(RuleError):
    """Raised when a policy id is not among the loaded policies."""

    def __init__(self, policy_id: str) -> None:
        self.policy_id = policy_id
        super().__init__(f"unknown policy {policy_id!r}")


class PeriodNotCoveredError(RuleError):
    """Raised when a policy is evaluated for a period outside its effective years."""

    def __init__(self, policy_id: str, period: int, periods: list[int], open_ended: bool) -> None:
        self.policy_id = policy_id
        self.period = period
        span = ", ".join(str(p) for p in periods) + (" onwards" if open_ended else "")
        super().__init__(f"policy {policy_id!r} is not in force for period {period} (in force: {span})")


class EvaluationError(RuleError):
    """Raised when an evaluation cannot be completed."""


class EngineError(EvaluationError):
    """Raised when durable-rules reports an error; the original is chained as __cause__."""


class EngineDisagreementError(EvaluationError):
    """Raised when durable-rules and the independent trace evaluation disagree on a decision."""

    def __init__(self, policy_id: str, uscc: str, details: list[str]) -> None:
        self.policy_id = policy_id
        self.uscc = uscc
        self.details = details
        super().__init__(f"engine and trace disagree for {uscc} under {policy_id}: " + "; ".join(details))
