"""Who may call what over a real socket: every method with every role (from METHOD_ROLES),
missing and malformed credentials, enterprise isolation, health and reflection."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import partial

import grpc
import pytest
from benefits.v1 import (
    audit_service_pb2,
    benefit_service_pb2,
    payout_service_pb2,
    policy_service_pb2,
    registry_service_pb2,
)
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from testkit.api_fixtures import (
    ALLOWED_CODES,
    HASHED_AUDITOR_TOKEN,
    METHOD_CALLS,
    ROLES,
    SEVENTEEN,
    SJR,
    TOKENS,
    UNKNOWN,
    WRONG_CHECK,
    WRONG_TOKEN,
    A,
    B,
    Stubs,
    as_role,
    bearer,
    call_code,
    field_violations,
    rpc_error,
)
from testkit.grpc_stubs import health_stub, reflection_stub

from service.api.auth import METHOD_ROLES
from service.server import SERVICE_NAMES

OUR_METHODS = sorted(m for m in METHOD_ROLES if m.startswith("/benefits.v1."))
BAD_CREDENTIALS: dict[str, list[tuple[str, str]]] = {
    "no-token": [],
    "wrong-token": bearer(WRONG_TOKEN),
    "bearer-missing": [("authorization", TOKENS["admin"])],
    "lower-case-bearer": [("authorization", f"bearer {TOKENS['admin']}")],
    "two-headers": [("authorization", f"Bearer {TOKENS['admin']}"), ("authorization", f"Bearer {TOKENS['admin']}")],
    "empty-bearer": [("authorization", "Bearer ")],
}


def _contract_methods() -> set[str]:
    found: set[str] = set()
    for module in (
        policy_service_pb2,
        registry_service_pb2,
        benefit_service_pb2,
        payout_service_pb2,
        audit_service_pb2,
    ):
        for service in module.DESCRIPTOR.services_by_name.values():
            found.update(f"/{service.full_name}/{m.name}" for m in service.methods)
    return found


def test_the_tables_cover_every_method_of_the_contract() -> None:
    contract = _contract_methods()
    assert len(contract) == 21
    assert set(OUR_METHODS) == contract, "METHOD_ROLES and the proto disagree"
    assert set(METHOD_CALLS) == contract, "a method has no call in api_fixtures.METHOD_CALLS"
    assert {m.split("/")[1] for m in contract} == set(SERVICE_NAMES)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method", OUR_METHODS)
def test_every_method_with_every_role(stubs: Stubs, method: str, role: str) -> None:
    code = call_code(METHOD_CALLS[method], stubs, as_role(role))
    if role not in METHOD_ROLES[method]:
        assert code == grpc.StatusCode.PERMISSION_DENIED
    elif method in ALLOWED_CODES:
        assert code == grpc.StatusCode[ALLOWED_CODES[method]]
    else:
        assert code == grpc.StatusCode.OK


def test_a_role_refusal_names_the_role_and_method(stubs: Stubs) -> None:
    err = rpc_error(lambda: METHOD_CALLS["/benefits.v1.RegistryService/ImportFacts"](stubs, as_role("enterprise")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "role enterprise may not call ImportFacts"


@pytest.mark.parametrize("credentials", sorted(BAD_CREDENTIALS))
@pytest.mark.parametrize("method", OUR_METHODS)
def test_missing_or_malformed_credentials_are_unauthenticated(stubs: Stubs, method: str, credentials: str) -> None:
    code = call_code(METHOD_CALLS[method], stubs, BAD_CREDENTIALS[credentials])
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_stored_only_as_its_sha256_is_accepted(stubs: Stubs) -> None:
    hashed = bearer(HASHED_AUDITOR_TOKEN)
    reply = stubs.registry.GetEnterprise(registry_service_pb2.GetEnterpriseRequest(uscc=B), metadata=hashed, timeout=10)
    assert reply.uscc == B
    # ... with the role of its entry (auditor): no feed imports.
    assert (
        call_code(METHOD_CALLS["/benefits.v1.RegistryService/ImportFacts"], stubs, hashed)
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # The digest itself is not a token.
    assert (
        call_code(
            METHOD_CALLS["/benefits.v1.PolicyService/ListPolicies"],
            stubs,
            bearer(hashlib.sha256(HASHED_AUDITOR_TOKEN.encode()).hexdigest()),
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )


# ---------------------------------------------------------------------------------------------
# Enterprise isolation: permission is checked before validity and existence (AIP-211).
FOREIGN_USCCS = {
    "other-existing": B,
    "valid-unknown": UNKNOWN,
    "wrong-check": WRONG_CHECK,
    "seventeen-chars": SEVENTEEN,
    "empty": "",
    "own-lower-case": A.lower(),
}
USCC_METHODS = ("ListMatchedBenefits", "ExplainEligibility", "GetEnterprise")


def _uscc_call(stubs: Stubs, method: str, uscc: str, metadata: list[tuple[str, str]]) -> object:
    if method == "ListMatchedBenefits":
        return stubs.benefit.ListMatchedBenefits(
            benefit_service_pb2.ListMatchedBenefitsRequest(uscc=uscc, period=2025), metadata=metadata, timeout=20
        )
    if method == "ExplainEligibility":
        return stubs.benefit.ExplainEligibility(
            benefit_service_pb2.ExplainEligibilityRequest(uscc=uscc, policy_id=SJR, period=2025),
            metadata=metadata,
            timeout=20,
        )
    return stubs.registry.GetEnterprise(
        registry_service_pb2.GetEnterpriseRequest(uscc=uscc), metadata=metadata, timeout=20
    )


@pytest.mark.parametrize("method", USCC_METHODS)
def test_an_enterprise_reads_only_its_own_uscc_and_learns_nothing_else(stubs: Stubs, method: str) -> None:
    answers = {}
    for case, uscc in FOREIGN_USCCS.items():
        err = rpc_error(partial(_uscc_call, stubs, method, uscc, as_role("enterprise")))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, case
        assert err.trailing_metadata() is not None
        answers[case] = (err.details(), field_violations_or_none(err))
    # Same message, no field details: nothing tells whether the USCC exists or is well formed.
    assert len(set(answers.values())) == 1, answers
    assert next(iter(answers.values())) == ("an enterprise may only read its own records", None)
    # Its own USCC works.
    assert _uscc_call(stubs, method, A, as_role("enterprise")) is not None


def field_violations_or_none(err: grpc.RpcError) -> dict[str, str] | None:
    try:
        return field_violations(err) or None
    except AssertionError:  # no google.rpc.Status details at all
        return None


def test_an_enterprise_gets_its_own_results(stubs: Stubs) -> None:
    own = as_role("enterprise")
    listed = stubs.benefit.ListMatchedBenefits(
        benefit_service_pb2.ListMatchedBenefitsRequest(uscc=A, period=2025), metadata=own
    )
    assert [b.policy_id for b in listed.benefits if b.amount_fen] == [SJR]
    explained = stubs.benefit.ExplainEligibility(
        benefit_service_pb2.ExplainEligibilityRequest(uscc=A, policy_id=SJR, period=2025), metadata=own
    )
    assert explained.evaluation.uscc == A
    record = stubs.registry.GetEnterprise(registry_service_pb2.GetEnterpriseRequest(uscc=A), metadata=own)
    assert record.uscc == A and record.name


@pytest.mark.parametrize("role", ["auditor", "admin"])
@pytest.mark.parametrize("method", USCC_METHODS)
def test_auditor_and_admin_read_any_uscc(stubs: Stubs, method: str, role: str) -> None:
    for uscc in (A, B):
        assert _uscc_call(stubs, method, uscc, as_role(role)) is not None
    err = rpc_error(lambda: _uscc_call(stubs, method, UNKNOWN, as_role(role)))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert UNKNOWN in (err.details() or "")
    err = rpc_error(lambda: _uscc_call(stubs, method, WRONG_CHECK, as_role(role)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err)) == {"uscc"}


@pytest.mark.parametrize("period", [2021, 2025, 2100])
def test_list_matched_benefits_is_not_found_for_an_unknown_uscc_in_any_period(stubs: Stubs, period: int) -> None:
    # 2021: no policy is in force, yet the USCC is still unknown (was OK with an empty list).
    err = rpc_error(
        lambda: stubs.benefit.ListMatchedBenefits(
            benefit_service_pb2.ListMatchedBenefitsRequest(uscc=UNKNOWN, period=period),
            metadata=as_role("auditor"),
            timeout=20,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # A known enterprise with no policy in force gets an empty list.
    reply = stubs.benefit.ListMatchedBenefits(
        benefit_service_pb2.ListMatchedBenefitsRequest(uscc=A, period=2021), metadata=as_role("auditor"), timeout=20
    )
    assert list(reply.benefits) == [] and reply.next_page_token == ""


# ---------------------------------------------------------------------------------------------
# Health (open to orchestrators) and reflection (needs a token).
@pytest.mark.parametrize("service", ["", "benefits.v1.BenefitService", *SERVICE_NAMES])
def test_health_is_serving_without_a_token(stubs: Stubs, service: str) -> None:
    health = health_stub(stubs.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_of_an_unknown_service_is_not_found(stubs: Stubs) -> None:
    health = health_stub(stubs.channel)
    err = rpc_error(
        lambda: health.Check(health_pb2.HealthCheckRequest(service="benefits.v1.NoSuchService"), timeout=10)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


def _list_services(stubs: Stubs, metadata: list[tuple[str, str]]) -> list[str]:
    reflection = reflection_stub(stubs.channel)
    requests: Iterator[reflection_pb2.ServerReflectionRequest] = iter(
        [reflection_pb2.ServerReflectionRequest(list_services="")]
    )
    # grpc's stubs type metadata as a tuple; the call takes any sequence of pairs.
    replies = list(reflection.ServerReflectionInfo(requests, metadata=tuple(metadata), timeout=10))
    assert len(replies) == 1
    return [s.name for s in replies[0].list_services_response.service]


@pytest.mark.parametrize("role", ROLES)
def test_reflection_lists_the_services_with_any_token(stubs: Stubs, role: str) -> None:
    names = _list_services(stubs, as_role(role))
    assert "benefits.v1.BenefitService" in names
    assert set(SERVICE_NAMES) <= set(names)
    assert "grpc.health.v1.Health" in names


def test_reflection_describes_a_service_from_the_contract(stubs: Stubs) -> None:
    reflection = reflection_stub(stubs.channel)
    replies = list(
        reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="benefits.v1.BenefitService")]),
            metadata=tuple(as_role("auditor")),
            timeout=10,
        )
    )
    assert replies[0].WhichOneof("message_response") == "file_descriptor_response"
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in replies[0].file_descriptor_response.file_descriptor_proto
    ]
    methods = {
        m.name
        for f in files
        if f.name == "benefits/v1/benefit_service.proto"
        for s in f.service
        if s.name == "BenefitService"
        for m in s.method
    }
    assert methods == {"ListMatchedBenefits", "ExplainEligibility"}


@pytest.mark.parametrize("credentials", ["no-token", "wrong-token", "two-headers"])
def test_reflection_without_a_valid_token_is_unauthenticated(stubs: Stubs, credentials: str) -> None:
    err = rpc_error(lambda: _list_services(stubs, BAD_CREDENTIALS[credentials]))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
