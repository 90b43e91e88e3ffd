"""A small gRPC client for enterprises: `benefits lookup`."""

from __future__ import annotations

import sys

import grpc
from benefits.v1 import benefit_service_pb2, benefit_service_pb2_grpc
from grpc_status import rpc_status

from rules.money import format_yuan
from rules.values import Outcome
from service.api.enums import OUTCOMES
from service.explain import OUTCOME_ZH
from service.tls import Endpoint, open_channel


def lookup(target: str | Endpoint, token: str, *, uscc: str, policy_id: str | None, period: int) -> int:
    """Print an enterprise's matched benefits, or one explanation, in Chinese."""
    metadata = (("authorization", f"Bearer {token}"),)
    with open_channel(target) as channel:
        stub = benefit_service_pb2_grpc.BenefitServiceStub(channel)
        try:
            if policy_id:
                response = stub.ExplainEligibility(
                    benefit_service_pb2.ExplainEligibilityRequest(uscc=uscc, policy_id=policy_id, period=period),
                    metadata=metadata,
                    timeout=30,
                )
                print(response.explanation)
                return 0
            listing = stub.ListMatchedBenefits(
                benefit_service_pb2.ListMatchedBenefitsRequest(uscc=uscc, period=period), metadata=metadata, timeout=60
            )
        except grpc.RpcError as exc:
            print_error(exc)
            return 1
    print(f"企业 {uscc} 在 {period} 年度的免申即享匹配结果：")
    for benefit in listing.benefits:
        outcome = OUTCOMES.from_proto.get(benefit.outcome, Outcome.UNDETERMINED)
        amount = f"  {format_yuan(benefit.amount_fen)}" if benefit.amount_fen else ""
        print(f"- {benefit.title}（{benefit.policy_id}）：{OUTCOME_ZH[outcome]}{amount}")
        if benefit.summary and outcome != Outcome.ELIGIBLE:
            print(f"    {benefit.summary}")
    print(f"详细说明：benefits lookup --uscc {uscc} --policy <policy_id> --period {period}")
    return 0


def print_error(exc: grpc.RpcError) -> None:
    print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is None:
        return
    from google.rpc import error_details_pb2

    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for violation in bad.field_violations:
                print(f"  {violation.field}: {violation.description}", file=sys.stderr)
