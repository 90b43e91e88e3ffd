"""Hostile requests over a real socket: a NUL in any string field, or an enum number that its
enum does not define, is INVALID_ARGUMENT naming the field (its path in the request), before a
servicer or the database sees it (service/api/requests.py, applied by the interceptor)."""

from __future__ import annotations

from typing import cast

import grpc
import pytest
from benefits.v1 import (
    audit_service_pb2,
    benefit_service_pb2,
    evaluation_pb2,
    payout_service_pb2,
    policy_service_pb2,
    registry_service_pb2,
)
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from testkit.api_fixtures import (
    ROLES,
    UNKNOWN,
    Stubs,
    as_role,
    enterprise_record,
    field_violations,
    import_facts,
    rpc_error,
)

from service.api.auth import METHOD_ROLES

_MODULES = (policy_service_pb2, registry_service_pb2, benefit_service_pb2, payout_service_pb2, audit_service_pb2)
METHODS: dict[str, MethodDescriptor] = {
    f"/{service.full_name}/{method.name}": method
    for module in _MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}


# (method, field) for every string field of every single-request method: a client stream
# (ImportFacts) carries JSON text whose records the importer judges one by one.
NUL_CASES = [
    (name, field.name)
    for name, method in METHODS.items()
    if not method.client_streaming
    for field in method.input_type.fields
    if field.type == FieldDescriptor.TYPE_STRING
]


def _call(stubs: Stubs, method: str, request: Message) -> object:
    """`request` sent to `method` as a caller whose role may call it."""
    role = next(r for r in ROLES if r in METHOD_ROLES[method])
    metadata = tuple(as_role(role))
    encode = type(request).SerializeToString
    if METHODS[method].server_streaming:
        stream: grpc.UnaryStreamMultiCallable[Message, bytes] = stubs.channel.unary_stream(
            method, request_serializer=encode
        )
        return list(stream(request, metadata=metadata, timeout=20))
    unary: grpc.UnaryUnaryMultiCallable[Message, bytes] = stubs.channel.unary_unary(method, request_serializer=encode)
    return unary(request, metadata=metadata, timeout=20)


def _request(method: str, **fields: object) -> Message:
    return message_factory.GetMessageClass(METHODS[method].input_type)(**fields)


def test_every_single_request_method_has_string_fields_to_check() -> None:
    """The table below is built from the descriptors; it must not come out empty."""
    assert len({method for method, _ in NUL_CASES}) >= 15


@pytest.mark.parametrize(("method", "field"), NUL_CASES, ids=[f"{m.rsplit('/', 1)[1]}.{f}" for m, f in NUL_CASES])
def test_a_nul_in_any_string_field_is_invalid_argument_naming_it(stubs: Stubs, method: str, field: str) -> None:
    value = "b1\x00; drop"
    repeated = METHODS[method].input_type.fields_by_name[field].is_repeated
    request = _request(method, **{field: ["ok", value] if repeated else value})
    err = rpc_error(lambda: _call(stubs, method, request))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert field_violations(err) == {f"{field}[1]" if repeated else field: "must not contain a NUL character"}


def test_a_hostile_request_without_a_token_is_unauthenticated_first(stubs: Stubs) -> None:
    """The checks run inside the interceptor's admission: nothing about a request is judged for
    a caller who is not known."""
    request = audit_service_pb2.ListEvaluationsRequest(policy_id="\x00", outcome=cast(evaluation_pb2.Outcome, 99))
    err = rpc_error(lambda: stubs.audit.ListEvaluations(request, timeout=20))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_nul_in_a_return_reason_names_its_result(stubs: Stubs) -> None:
    """PostgreSQL text cannot hold NUL: before this check the write of the result failed there."""
    results = [
        payout_service_pb2.PayoutResult(line_id="b1-000001", state=payout_service_pb2.LINE_STATE_PAID),
        payout_service_pb2.PayoutResult(
            line_id="b1-000002", state=payout_service_pb2.LINE_STATE_RETURNED, return_reason="AC04\x00closed"
        ),
    ]
    request = payout_service_pb2.RecordPayoutResultsRequest(batch_id="b1", results=results)
    err = rpc_error(lambda: _call(stubs, "/benefits.v1.PayoutService/RecordPayoutResults", request))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err) == {"results[1].return_reason": "must not contain a NUL character"}


def test_an_outcome_no_enum_value_has_is_invalid_argument(stubs: Stubs) -> None:
    """An unknown number meant "every outcome" before: a filter that silently filtered nothing."""
    err = rpc_error(
        lambda: stubs.audit.ListEvaluations(
            audit_service_pb2.ListEvaluationsRequest(outcome=cast(evaluation_pb2.Outcome, 99)),
            metadata=as_role("auditor"),
            timeout=20,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err) == {"outcome": "99 is not a value of benefits.v1.Outcome"}


def test_an_unspecified_outcome_still_lists_every_outcome(stubs: Stubs) -> None:
    reply = stubs.audit.ListEvaluations(
        audit_service_pb2.ListEvaluationsRequest(outcome=evaluation_pb2.OUTCOME_UNSPECIFIED),
        metadata=as_role("auditor"),
        timeout=20,
    )
    assert isinstance(reply, audit_service_pb2.ListEvaluationsResponse)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            payout_service_pb2.ExportPayoutBatchRequest(batch_id="b1", format=cast(payout_service_pb2.ExportFormat, 7)),
            "format",
        ),
        (
            payout_service_pb2.RecordPayoutResultsRequest(
                batch_id="b1",
                results=[
                    payout_service_pb2.PayoutResult(line_id="b1-000001", state=cast(payout_service_pb2.LineState, -3))
                ],
            ),
            "results[0].state",
        ),
    ],
    ids=["export-format", "result-state"],
)
def test_every_other_request_enum_refuses_an_undefined_number(stubs: Stubs, request_: Message, field: str) -> None:
    method = {
        "ExportPayoutBatchRequest": "/benefits.v1.PayoutService/ExportPayoutBatch",
        "RecordPayoutResultsRequest": "/benefits.v1.PayoutService/RecordPayoutResults",
    }[type(request_).__name__]
    err = rpc_error(lambda: _call(stubs, method, request_))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == [field]


def test_import_facts_rejects_a_record_with_nul_by_index_and_field_and_keeps_the_good_one(stubs: Stubs) -> None:
    """ImportFacts is a stream: it is not refused whole; the importer names the bad record (the
    NUL arrives JSON-escaped, so only the record's own check can see it)."""
    records = [enterprise_record(UNKNOWN, name="襄阳\x00有限公司"), enterprise_record(UNKNOWN)]
    reply = import_facts(stubs, records, as_role("registry_feed"))
    assert [(r.record_index, r.field) for r in reply.rejects] == [(1, "name")]
    assert (reply.received_count, reply.stored_count) == (2, 1)
    enterprise = stubs.registry.GetEnterprise(
        registry_service_pb2.GetEnterpriseRequest(uscc=UNKNOWN), metadata=as_role("admin"), timeout=20
    )
    assert "\x00" not in enterprise.name
