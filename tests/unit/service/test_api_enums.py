"""Our enums and the benefits.v1 enums (service/api/enums.py): every member maps to the proto value
of its name and back, no value is left out or shared, UNSPECIFIED is never produced, and a pair
that differs is refused when it is made."""

from __future__ import annotations

from enum import StrEnum

import pytest
from benefits.v1 import audit_service_pb2, evaluation_pb2, payout_service_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from rules.values import Outcome, Truth
from service.api import enums
from service.audit.ledger import Fault
from service.payouts.states import BatchState, LineState

PAIRS = [
    (enums.OUTCOMES, Outcome, evaluation_pb2.Outcome, "OUTCOME_"),
    (enums.TRUTHS, Truth, evaluation_pb2.ConditionResult, "CONDITION_RESULT_"),
    (enums.BATCH_STATES, BatchState, payout_service_pb2.BatchState, "BATCH_STATE_"),
    (enums.LINE_STATES, LineState, payout_service_pb2.LineState, "LINE_STATE_"),
    (enums.FAULTS, Fault, audit_service_pb2.LedgerFault, "LEDGER_FAULT_"),
]


@pytest.mark.parametrize(
    ("pair", "ours", "proto", "prefix"), PAIRS, ids=["outcomes", "truths", "batch-states", "line-states", "faults"]
)
def test_every_member_maps_to_the_proto_value_of_its_name_and_back(
    pair: enums.EnumPair[StrEnum, int], ours: type[StrEnum], proto: EnumTypeWrapper, prefix: str
) -> None:
    values = {name: number for name, number in proto.items() if name != f"{prefix}UNSPECIFIED"}
    assert {f"{prefix}{member.name}": number for member, number in pair.to_proto.items()} == values
    assert set(pair.to_proto) == set(ours)
    assert {number: member for member, number in pair.to_proto.items()} == pair.from_proto
    assert proto.Value(f"{prefix}UNSPECIFIED") == 0 and 0 not in pair.from_proto


def test_the_tables_give_what_the_proto_names() -> None:
    assert enums.OUTCOMES.to_proto[Outcome.HELD] == evaluation_pb2.OUTCOME_HELD
    assert enums.TRUTHS.to_proto[Truth.UNKNOWN] == evaluation_pb2.CONDITION_RESULT_UNKNOWN
    assert enums.FAULTS.to_proto[Fault.CHECKPOINT] == audit_service_pb2.LEDGER_FAULT_CHECKPOINT
    assert enums.OUTCOMES.from_proto[evaluation_pb2.OUTCOME_INELIGIBLE] is Outcome.INELIGIBLE
    assert enums.LINE_STATES.from_proto[payout_service_pb2.LINE_STATE_RETURN_PENDING] is LineState.RETURN_PENDING


class _Fewer(StrEnum):
    ELIGIBLE = "ELIGIBLE"
    INELIGIBLE = "INELIGIBLE"
    UNDETERMINED = "UNDETERMINED"


class _More(StrEnum):
    ELIGIBLE = "ELIGIBLE"
    INELIGIBLE = "INELIGIBLE"
    UNDETERMINED = "UNDETERMINED"
    HELD = "HELD"
    WITHDRAWN = "WITHDRAWN"


class _Renamed(StrEnum):
    ELIGIBLE = "ELIGIBLE"
    NOT_ELIGIBLE = "INELIGIBLE"  # the value is the proto's, the name is not: names are matched
    UNDETERMINED = "UNDETERMINED"
    HELD = "HELD"


@pytest.mark.parametrize(
    ("ours", "prefix", "message"),
    [
        (_Fewer, "OUTCOME_", "no _Fewer member for OUTCOME_HELD"),
        (_More, "OUTCOME_", "no benefits.v1.Outcome value for <_More.WITHDRAWN: 'WITHDRAWN'>"),
        (_Renamed, "OUTCOME_", "no _Renamed member for OUTCOME_INELIGIBLE"),
        (Outcome, "RESULT_", "no Outcome member for OUTCOME_ELIGIBLE"),
    ],
    ids=["a-proto-value-left-out", "a-new-member", "a-member-renamed", "the-wrong-prefix"],
)
def test_a_pair_that_differs_is_refused(ours: type[StrEnum], prefix: str, message: str) -> None:
    with pytest.raises(ValueError, match="differ") as raised:
        enums.pair(ours, evaluation_pb2.Outcome, prefix)
    assert message in str(raised.value)


def test_the_wrong_prefix_also_misses_unspecified() -> None:
    with pytest.raises(ValueError, match="has no RESULT_UNSPECIFIED = 0"):
        enums.pair(Outcome, evaluation_pb2.Outcome, "RESULT_")
