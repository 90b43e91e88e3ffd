"""The request checks of service/api/requests.py, on messages alone: NUL in any string field
(nested and repeated ones included) and enum numbers no enum defines are named by their path;
anything else passes."""

from __future__ import annotations

from typing import cast

import pytest
from benefits.v1 import audit_service_pb2, evaluation_pb2, payout_service_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.requests import check, violations
from service.errors import InvalidArgumentError

NUL = "must not contain a NUL character"


def test_a_clean_request_has_no_violations() -> None:
    request = payout_service_pb2.RecordPayoutResultsRequest(
        batch_id="b1",
        results=[
            payout_service_pb2.PayoutResult(line_id="b1-000001", state=payout_service_pb2.LINE_STATE_PAID),
            payout_service_pb2.PayoutResult(line_id="b1-000002", state=payout_service_pb2.LINE_STATE_RETURNED),
        ],
    )
    assert violations(request) == []
    check(request)


def test_nul_is_named_by_its_path_in_nested_and_repeated_fields() -> None:
    request = payout_service_pb2.RecordPayoutResultsRequest(
        batch_id="b\x001",
        results=[
            payout_service_pb2.PayoutResult(line_id="b1-000001"),
            payout_service_pb2.PayoutResult(line_id="b1-000002"),
            payout_service_pb2.PayoutResult(line_id="b1-000003"),
            payout_service_pb2.PayoutResult(line_id="\x00", return_reason="AC04\x00"),
        ],
    )
    assert violations(request) == [
        ("batch_id", NUL),
        ("results[3].line_id", NUL),
        ("results[3].return_reason", NUL),
    ]
    with pytest.raises(InvalidArgumentError) as raised:
        check(request)
    assert [field for field, _ in raised.value.violations] == [
        "batch_id",
        "results[3].line_id",
        "results[3].return_reason",
    ]


def test_nul_in_a_repeated_string_names_its_index() -> None:
    request = payout_service_pb2.WithdrawPayoutLinesRequest(batch_id="b1", line_ids=["a", "b", "c\x00"], reason="r")
    assert violations(request) == [("line_ids[2]", NUL)]


def test_an_enum_number_no_value_has_is_named_and_unspecified_passes() -> None:
    """Numbers as a client with another .proto (or none) sends them: proto3 keeps them as ints."""
    assert violations(audit_service_pb2.ListEvaluationsRequest(outcome=evaluation_pb2.OUTCOME_UNSPECIFIED)) == []
    assert violations(audit_service_pb2.ListEvaluationsRequest(outcome=cast(evaluation_pb2.Outcome, 99))) == [
        ("outcome", "99 is not a value of benefits.v1.Outcome")
    ]
    result = payout_service_pb2.PayoutResult(state=cast(payout_service_pb2.LineState, -1))
    request = payout_service_pb2.RecordPayoutResultsRequest(results=[result])
    assert violations(request) == [("results[0].state", "-1 is not a value of benefits.v1.LineState")]


def test_bytes_fields_may_hold_nul() -> None:
    """A bank's status report is bytes: its own parser judges them."""
    request = payout_service_pb2.ImportPaymentStatusReportRequest(batch_id="b1", data=b"<\x00>")
    assert violations(request) == []


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=4), st.text(max_size=20))
def test_any_text_is_refused_exactly_when_it_holds_nul(line_ids: list[str], reason: str) -> None:
    request = payout_service_pb2.WithdrawPayoutLinesRequest(batch_id="b1", line_ids=line_ids, reason=reason)
    expected = [(f"line_ids[{i}]", NUL) for i, line in enumerate(line_ids) if "\x00" in line]
    expected += [("reason", NUL)] if "\x00" in reason else []
    assert violations(request) == expected
