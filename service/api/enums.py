"""Our enums and the benefits.v1 enums, one to one, matched by name from the generated descriptors.

A member's proto value is the enum's AIP-126 prefix and the member's name (Outcome.ELIGIBLE is
OUTCOME_ELIGIBLE); the zero value, *_UNSPECIFIED, stands for none of ours and is never sent. The
pairs are checked when this module is imported: a member without a proto value, or a proto value
without a member, fails the import, so a new state cannot be forgotten on either side.

Always convert through these tables: a message's constructor also takes a str for an enum field
(the value's proto name), so passing a member itself (a str, "ELIGIBLE") type-checks but fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar, cast

from benefits.v1 import audit_service_pb2, evaluation_pb2, payout_service_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from rules.values import Outcome, Truth
from service.audit.ledger import Fault
from service.payouts.states import BatchState, LineState

E = TypeVar("E", bound=StrEnum)
P = TypeVar("P", bound=int)


@dataclass(frozen=True)
class EnumPair(Generic[E, P]):
    """One of our enums and its proto enum: `to_proto[member]`, `from_proto[number]` (no zero)."""

    to_proto: Mapping[E, P]
    from_proto: Mapping[int, E]


def pair(ours: type[E], proto: type[P], prefix: str) -> EnumPair[E, P]:
    """The pair of `ours` and the proto enum `proto` whose values are named `prefix` + a member's
    name; ValueError unless every member has a value and every value but `prefix`UNSPECIFIED
    (which must be zero) a member."""
    # protoc's stubs declare a proto enum as an int class; at run time it is its EnumTypeWrapper
    descriptor = cast(EnumTypeWrapper, proto).DESCRIPTOR
    numbers = {name: value.number for name, value in descriptor.values_by_name.items()}
    unspecified = numbers.pop(f"{prefix}UNSPECIFIED", None)
    members = {f"{prefix}{name}": member for name, member in ours.__members__.items()}
    problems = [
        f"no {descriptor.full_name} value for {member!r}" for name, member in members.items() if name not in numbers
    ]
    problems += [f"no {ours.__name__} member for {name}" for name in numbers if name not in members]
    if unspecified != 0:
        problems.append(f"{descriptor.full_name} has no {prefix}UNSPECIFIED = 0")
    if len(set(numbers.values())) < len(numbers):
        problems.append(f"{descriptor.full_name} gives two values one number")
    if problems:
        raise ValueError(f"{ours.__name__} and {descriptor.full_name} differ: {'; '.join(problems)}")
    # the message fields take the enum type; its values are these numbers
    to_proto = {member: cast(P, numbers[name]) for name, member in members.items()}
    return EnumPair(to_proto, {number: member for member, number in to_proto.items()})


OUTCOMES = pair(Outcome, evaluation_pb2.Outcome, "OUTCOME_")
TRUTHS = pair(Truth, evaluation_pb2.ConditionResult, "CONDITION_RESULT_")
BATCH_STATES = pair(BatchState, payout_service_pb2.BatchState, "BATCH_STATE_")
LINE_STATES = pair(LineState, payout_service_pb2.LineState, "LINE_STATE_")
FAULTS = pair(Fault, audit_service_pb2.LedgerFault, "LEDGER_FAULT_")
