"""What an evaluation decided, without its explanation: the part an evaluation record stores.

The clause results are one string, the *mask*: one character per condition of the policy, in
the policy's order, then `/`, then one character per payable clause. `T` is true, `F` false,
`U` unknown. A policy with conditions (true, true, false, unknown) and one payable clause that
holds gives `TTFU/T`; the explanation of each clause is rendered on demand by replaying the
stored facts under the stored rule text (`service.audit.rendering`).

Nothing here imports the service: the evaluator's fast path and the records module both use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.engine import ENGINE_VERSION
from rules.evaluator import ClauseResult, Evaluation
from rules.values import Outcome, Truth

MASK_CODES = {Truth.TRUE: "T", Truth.FALSE: "F", Truth.UNKNOWN: "U"}
MASK_SEPARATOR = "/"
_MASK = re.compile(f"[{''.join(MASK_CODES.values())}]*{MASK_SEPARATOR}[{''.join(MASK_CODES.values())}]*")


def mask_of(conditions: list[ClauseResult], payable: list[ClauseResult]) -> str:
    """The mask of an evaluation's clause results (see the module docstring)."""
    return (
        "".join(MASK_CODES[c.result] for c in conditions)
        + MASK_SEPARATOR
        + "".join(MASK_CODES[c.result] for c in payable)
    )


def is_mask(text: object) -> bool:
    return isinstance(text, str) and _MASK.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Decision:
    """One (enterprise, policy, period) decided on `evaluated_on` (an ISO date)."""

    policy_id: str
    policy_version: str
    rule_sha256: str
    period: int
    fact_year: int
    uscc: str
    evaluated_on: str
    outcome: Outcome
    amount_fen: int
    mask: str
    engine: str = ENGINE_VERSION

    def __post_init__(self) -> None:
        if not is_mask(self.mask):
            raise ValueError(f"mask {self.mask!r} is not of the form [TFU]*/[TFU]*")
        # Integers only (fen, years): the record's JSON is written without the canonical walk
        # that refuses floats (`canonical_json_of_typed`), so the types are held here.
        for name in ("amount_fen", "period", "fact_year"):
            if type(getattr(self, name)) is not int:
                raise TypeError(f"{name} must be an int, got {type(getattr(self, name)).__name__}")

    @classmethod
    def of(cls, evaluation: Evaluation) -> Decision:
        return cls(
            evaluation.policy_id,
            evaluation.policy_version,
            evaluation.rule_sha256,
            evaluation.period,
            evaluation.fact_year,
            evaluation.uscc,
            evaluation.evaluated_on,
            evaluation.outcome,
            evaluation.amount_fen,
            mask_of(evaluation.conditions, evaluation.payable),
            evaluation.engine,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Decision:
        """The decision a stored record holds (its fields are named as the dataclass's); ValueError
        for an outcome that is none."""
        fields = {name: record[name] for name in DECISION_FIELDS}
        fields["outcome"] = Outcome(fields["outcome"])
        return cls(**fields)

    def shown(self, name: str) -> str:
        """A field's value as a message quotes it: the outcome as its stored word, not its enum repr."""
        value = getattr(self, name)
        return repr(str(value) if isinstance(value, Outcome) else value)


DECISION_FIELDS = tuple(Decision.__dataclass_fields__)
