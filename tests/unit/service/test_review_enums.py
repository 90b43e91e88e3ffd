"""Independent review of service/api/enums.py against what the API said before the pairs were read
from the descriptors: the same numbers on the wire for the same words (clients, stored page
tokens), lookups by the plain words the database gives back, and the zero value never read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import pytest
from benefits.v1 import audit_service_pb2, evaluation_pb2, payout_service_pb2

from rules.values import Outcome, Truth
from service.api import enums
from service.audit.ledger import Fault
from service.payouts.states import BatchState, LineState

# The hand-written tables the pairs replaced (service/api/servicers.py, service/client.py and
# service/api/convert.py before 6b493ef), by stored word.
OLD_OUTCOME_NAMES = {1: "ELIGIBLE", 2: "INELIGIBLE", 3: "UNDETERMINED", 4: "HELD"}
OLD_RESULTS = {
    "true": evaluation_pb2.CONDITION_RESULT_TRUE,
    "false": evaluation_pb2.CONDITION_RESULT_FALSE,
    "unknown": evaluation_pb2.CONDITION_RESULT_UNKNOWN,
}
OLD_FAULTS = {
    "none": audit_service_pb2.LEDGER_FAULT_NONE,
    "edited": audit_service_pb2.LEDGER_FAULT_EDITED,
    "deleted": audit_service_pb2.LEDGER_FAULT_DELETED,
    "inserted": audit_service_pb2.LEDGER_FAULT_INSERTED,
    "reordered": audit_service_pb2.LEDGER_FAULT_REORDERED,
    "checkpoint": audit_service_pb2.LEDGER_FAULT_CHECKPOINT,
}


def test_outcomes_keep_their_wire_numbers() -> None:
    assert {number: str(member) for number, member in enums.OUTCOMES.from_proto.items()} == OLD_OUTCOME_NAMES
    assert {str(member): number for member, number in enums.OUTCOMES.to_proto.items()} == {
        word: number for number, word in OLD_OUTCOME_NAMES.items()
    }


def test_truths_and_faults_keep_their_wire_numbers() -> None:
    assert {str(member): number for member, number in enums.TRUTHS.to_proto.items()} == OLD_RESULTS
    assert {str(member): number for member, number in enums.FAULTS.to_proto.items()} == OLD_FAULTS


def test_states_keep_the_numbers_of_their_names() -> None:
    """The old tables were built from BATCH_STATE_<value>: value and name must stay one."""
    for state in BatchState:
        assert enums.BATCH_STATES.to_proto[state] == payout_service_pb2.BatchState.Value(f"BATCH_STATE_{state.value}")
    for line in LineState:
        assert enums.LINE_STATES.to_proto[line] == payout_service_pb2.LineState.Value(f"LINE_STATE_{line.value}")


@pytest.mark.parametrize(
    ("table", "word"),
    [
        (enums.OUTCOMES.to_proto, "HELD"),
        (enums.TRUTHS.to_proto, "unknown"),
        (enums.FAULTS.to_proto, "checkpoint"),
        (enums.BATCH_STATES.to_proto, "DRAFT"),
        (enums.LINE_STATES.to_proto, "RETURN_PENDING"),
    ],
)
def test_a_plain_word_read_back_from_the_database_finds_its_number(table: Mapping[object, int], word: str) -> None:
    """A row read back gives a str, not a member: the member's hash is its word's."""
    assert table[word] == next(number for member, number in table.items() if str(member) == word)


def test_the_zero_value_is_never_a_member() -> None:
    for pair in (enums.OUTCOMES, enums.TRUTHS, enums.BATCH_STATES, enums.LINE_STATES, enums.FAULTS):
        assert 0 not in cast(Mapping[int, object], pair.from_proto)
    # what the client and ListEvaluations do with an outcome they do not know
    assert enums.OUTCOMES.from_proto.get(evaluation_pb2.OUTCOME_UNSPECIFIED, Outcome.UNDETERMINED) is (
        Outcome.UNDETERMINED
    )


def test_a_filter_by_outcome_is_fingerprinted_by_its_word() -> None:
    """ListEvaluations puts the outcome in its page token's query: the word, as before."""
    outcome: str = enums.OUTCOMES.from_proto.get(evaluation_pb2.OUTCOME_HELD, "")
    assert f"evaluations:::0::{outcome}" == "evaluations:::0::HELD"
    none: str = enums.OUTCOMES.from_proto.get(evaluation_pb2.OUTCOME_UNSPECIFIED, "")
    assert f"evaluations:::0::{none}" == "evaluations:::0::"


def test_a_message_built_through_the_tables_reads_back_as_the_member() -> None:
    message = evaluation_pb2.ConditionTrace(id="c0", result=enums.TRUTHS.to_proto[Truth.FALSE])
    assert enums.TRUTHS.from_proto[message.result] is Truth.FALSE
    listed = audit_service_pb2.AuditProblem(fault=enums.FAULTS.to_proto[Fault.REORDERED])
    assert enums.FAULTS.from_proto[listed.fault] is Fault.REORDERED


def test_a_member_given_to_a_message_as_itself_is_refused() -> None:
    """Why the tables exist: a member is a str, which protobuf reads as an enum value's name."""
    with pytest.raises((ValueError, TypeError)):
        evaluation_pb2.Evaluation(outcome=cast(evaluation_pb2.Outcome, Outcome.ELIGIBLE))
