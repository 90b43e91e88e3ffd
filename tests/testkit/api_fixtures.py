"""Helpers of the gRPC API tests: a small registry, an auth file with one principal per role,
a real server on a loopback port, stubs and call helpers."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from benefits.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    benefit_service_pb2,
    benefit_service_pb2_grpc,
    payout_service_pb2,
    payout_service_pb2_grpc,
    policy_service_pb2,
    policy_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
)
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy.engine import Engine

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import load_records
from enterprise_registry.kinds import DEPARTMENTS
from enterprise_registry.uscc import make
from service.config import ServeConfig
from service.payouts.batches import create_payout_schema
from service.server import RunningServer, create_server
from testkit.databases import private_schema
from testkit.paths import RULES_DIR

CLIENT_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
TIMEOUT = 20.0

# ---------------------------------------------------------------------------------------------
# The registry: synthetic USCCs (GB 32100 check characters computed, never I O S V Z).
A = make("91420600MA4K10001")  # eligible for stable-jobs-refund 2025 (the enterprise caller)
B = make("91420600MA4K10002")  # another existing enterprise: ineligible (layoff rate)
C_NO_SI = make("91420600MA4K10003")  # no social-insurance record: UNDETERMINED
D_NO_BANK = make("91420600MA4K10004")  # no bank account: HELD
E_SMALL = make("91420600MA4K10005")  # small, 60 %: eligible with another amount
UNKNOWN = make("91420600MA4K10009")  # valid, never loaded
WRONG_CHECK = UNKNOWN[:17] + ("0" if UNKNOWN[17] != "0" else "1")
SEVENTEEN = UNKNOWN[:17]
LOADED = (A, B, C_NO_SI, D_NO_BANK, E_SMALL)

BANK = {
    "bank_name": "中国工商银行襄阳分行",
    "account_no": "1804000109200012345",
    "account_name": "襄阳示例汽车零部件有限公司",
}
# 1,234,567.15 yuan x 30 % = 370,370.145 yuan -> 370,370.15 yuan, half up to the fen.
A_PREMIUMS_FEN = 123456715
A_AMOUNT_FEN = 37037015
SJR = "stable-jobs-refund"
SJR_CONDITIONS = (
    "registered-active",
    "not-credit-listed",
    "employer-type",
    "not-labor-dispatch",
    "premiums-paid-in-full",
    "layoff-rate",
)
SJR_PAYABLE = ("bank-account", "size-class-known")
POLICY_IDS = (
    "above-size-entry-reward",
    "high-tech-reward",
    "job-expansion-subsidy",
    "little-giant-reward",
    "single-champion-reward",
    "stable-jobs-refund",
)


def enterprise_record(uscc: str, **overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "kind": "enterprise",
        "uscc": uscc,
        "source": "market_regulation",
        "as_of": "2025-12-31",
        "name": f"襄阳示例{uscc[-4:]}有限公司",
        "org_type": "enterprise",
        "region_code": "420606",
        "industry_code": "C3670",
        "established_on": "2008-06-18",
        "status": "active",
        "labor_dispatch": False,
        "bank_account": BANK,
    }
    record.update(overrides)
    return record


def si_record(uscc: str, **overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "kind": "social_insurance_year",
        "uscc": uscc,
        "source": "human_resources",
        "as_of": "2025-01-31",
        "year": 2024,
        "insured_start": 1180,
        "insured_end": 1200,
        "insured_avg_monthly": 1000,
        "ui_months_paid": 36,
        "ui_premium_paid_fen": A_PREMIUMS_FEN,
        "ui_back_payment_fen": 0,
        "ui_late_fee_fen": 0,
        "ui_arrears": False,
        "layoffs": 20,
        "ui_benefit_claimants": 30,
        "size_class": "large",
    }
    record.update(overrides)
    return record


def tax_record(uscc: str, **overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "kind": "tax_year",
        "uscc": uscc,
        "source": "tax",
        "as_of": "2025-05-31",
        "year": 2024,
        "employees": 86,
        "revenue_fen": 4523678915,
        "main_business_revenue_fen": 4312000000,
        "total_assets_fen": 3900000000,
        "tax_paid_fen": 123456789,
        "rd_expense_fen": 98765432,
        "credit_rating": "A",
    }
    record.update(overrides)
    return record


def registry_records() -> list[dict[str, object]]:
    return [
        enterprise_record(A),
        si_record(A),
        enterprise_record(B),
        si_record(B, ui_benefit_claimants=56),  # 5.6 % > 5.5 %
        enterprise_record(C_NO_SI),
        enterprise_record(D_NO_BANK, bank_account=None),
        si_record(D_NO_BANK),
        enterprise_record(E_SMALL),
        si_record(
            E_SMALL,
            insured_start=40,
            insured_end=42,
            insured_avg_monthly=41,
            ui_months_paid=12,
            ui_premium_paid_fen=1000000,
            ui_back_payment_fen=100000,
            ui_late_fee_fen=5000,
            layoffs=1,
            ui_benefit_claimants=1,
            size_class="small",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# The auth file: one principal per role, and one more stored only as its SHA-256.
TOKENS = {
    "registry_feed": "feed-token-0123456789",
    "finance_operator": "operator-token-0123456789",
    "finance_approver": "approver-token-0123456789",
    "auditor": "auditor-token-0123456789",
    "enterprise": "enterprise-a-token-0123456789",
    "admin": "admin-token-0123456789",
}
ROLES = tuple(TOKENS)
HASHED_AUDITOR_TOKEN = "hashed-auditor-token-0123456789"
TAX_FEED_TOKEN = "tax-feed-token-0123456789"  # a registry_feed of the tax department only
WRONG_TOKEN = "not-a-known-token-0123456789"


def write_auth_file(path: Path, extra: Sequence[Mapping[str, object]] = ()) -> Path:
    """The registry_feed of TOKENS writes for every department; test-tax-feed only for tax;
    `extra` entries after them."""
    principals: list[Mapping[str, object]] = []
    for role, token in TOKENS.items():
        entry: dict[str, object] = {"principal": f"test-{role}", "role": role, "token": token}
        if role == "enterprise":
            entry["uscc"] = A
            # The suite calls far faster than an enterprise does; rate limits have tests of their own.
            entry["limits"] = {"calls_per_second": 10_000, "burst": 10_000}
        if role == "registry_feed":
            entry["sources"] = list(DEPARTMENTS)
        principals.append(entry)
    principals.append(
        {
            "principal": "test-auditor-hashed",
            "role": "auditor",
            "token_sha256": hashlib.sha256(HASHED_AUDITOR_TOKEN.encode()).hexdigest(),
        }
    )
    principals.append(
        {"principal": "test-tax-feed", "role": "registry_feed", "sources": ["tax"], "token": TAX_FEED_TOKEN}
    )
    principals.extend(extra)
    path.write_text(yaml.safe_dump({"principals": principals}, allow_unicode=True), encoding="utf-8")
    return path


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def as_role(role: str) -> list[tuple[str, str]]:
    return bearer(TOKENS[role])


# ---------------------------------------------------------------------------------------------
# Stubs.
@dataclass
class Stubs:
    channel: grpc.Channel
    policy: policy_service_pb2_grpc.PolicyServiceStub
    registry: registry_service_pb2_grpc.RegistryServiceStub
    benefit: benefit_service_pb2_grpc.BenefitServiceStub
    payout: payout_service_pb2_grpc.PayoutServiceStub
    audit: audit_service_pb2_grpc.AuditServiceStub

    @classmethod
    def connect(cls, port: int) -> Stubs:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS)
        return cls(
            channel,
            policy_service_pb2_grpc.PolicyServiceStub(channel),
            registry_service_pb2_grpc.RegistryServiceStub(channel),
            benefit_service_pb2_grpc.BenefitServiceStub(channel),
            payout_service_pb2_grpc.PayoutServiceStub(channel),
            audit_service_pb2_grpc.AuditServiceStub(channel),
        )


# Every method of the five services: (full method name, how to call it with given metadata).
# What a call returns is never looked at: only whether it raises.
Call = Callable[[Stubs, list[tuple[str, str]]], object]


def _unary(service: str, method: str, request: Message) -> Call:
    def call(stubs: Stubs, metadata: list[tuple[str, str]]) -> object:
        return getattr(getattr(stubs, service), method)(request, metadata=metadata, timeout=TIMEOUT)

    return call


def _server_stream(service: str, method: str, request: Message) -> Call:
    def call(stubs: Stubs, metadata: list[tuple[str, str]]) -> object:
        return list(getattr(getattr(stubs, service), method)(request, metadata=metadata, timeout=TIMEOUT))

    return call


def _import_call(stubs: Stubs, metadata: list[tuple[str, str]]) -> object:
    # Only a record that is rejected: the table test never changes the registry.
    return stubs.registry.ImportFacts(
        iter([registry_service_pb2.ImportFactsRequest(record_json="{}")]), metadata=metadata, timeout=TIMEOUT
    )


METHOD_CALLS: dict[str, Call] = {
    "/benefits.v1.PolicyService/ListPolicies": _unary(
        "policy", "ListPolicies", policy_service_pb2.ListPoliciesRequest()
    ),
    "/benefits.v1.PolicyService/GetPolicy": _unary(
        "policy", "GetPolicy", policy_service_pb2.GetPolicyRequest(policy_id=SJR)
    ),
    "/benefits.v1.RegistryService/ImportFacts": _import_call,
    "/benefits.v1.RegistryService/GetEnterprise": _unary(
        "registry", "GetEnterprise", registry_service_pb2.GetEnterpriseRequest(uscc=A)
    ),
    "/benefits.v1.BenefitService/ListMatchedBenefits": _unary(
        "benefit", "ListMatchedBenefits", benefit_service_pb2.ListMatchedBenefitsRequest(uscc=A, period=2025)
    ),
    "/benefits.v1.BenefitService/ExplainEligibility": _unary(
        "benefit",
        "ExplainEligibility",
        benefit_service_pb2.ExplainEligibilityRequest(uscc=A, policy_id=SJR, period=2025),
    ),
    "/benefits.v1.PayoutService/CreatePayoutBatch": _unary(
        "payout",
        "CreatePayoutBatch",
        payout_service_pb2.CreatePayoutBatchRequest(
            policy_id=SJR, period=2025, request_id="0b8f3c9e-5d2a-4f7e-9a61-2c4d8e1f0a37"
        ),
    ),
    "/benefits.v1.PayoutService/GetPayoutBatch": _unary(
        "payout", "GetPayoutBatch", payout_service_pb2.GetPayoutBatchRequest(batch_id="b1")
    ),
    "/benefits.v1.PayoutService/WatchPayoutBatch": _server_stream(
        "payout", "WatchPayoutBatch", payout_service_pb2.WatchPayoutBatchRequest(batch_id="b1")
    ),
    "/benefits.v1.PayoutService/ListPayoutLines": _unary(
        "payout", "ListPayoutLines", payout_service_pb2.ListPayoutLinesRequest(batch_id="b1")
    ),
    "/benefits.v1.PayoutService/ApprovePayoutBatch": _unary(
        "payout", "ApprovePayoutBatch", payout_service_pb2.ApprovePayoutBatchRequest(batch_id="b1")
    ),
    "/benefits.v1.PayoutService/ExportPayoutBatch": _server_stream(
        "payout",
        "ExportPayoutBatch",
        payout_service_pb2.ExportPayoutBatchRequest(batch_id="b1", format=payout_service_pb2.EXPORT_FORMAT_CSV),
    ),
    "/benefits.v1.PayoutService/RecordPayoutResults": _unary(
        "payout", "RecordPayoutResults", payout_service_pb2.RecordPayoutResultsRequest(batch_id="b1")
    ),
    "/benefits.v1.PayoutService/CancelPayoutBatch": _unary(
        "payout", "CancelPayoutBatch", payout_service_pb2.CancelPayoutBatchRequest(batch_id="b1", reason="test")
    ),
    "/benefits.v1.PayoutService/WithdrawPayoutLines": _unary(
        "payout",
        "WithdrawPayoutLines",
        payout_service_pb2.WithdrawPayoutLinesRequest(batch_id="b1", line_ids=["b1-000001"], reason="test"),
    ),
    "/benefits.v1.PayoutService/ConfirmPayoutReturns": _unary(
        "payout",
        "ConfirmPayoutReturns",
        payout_service_pb2.ConfirmPayoutReturnsRequest(batch_id="b1", line_ids=["b1-000001"]),
    ),
    "/benefits.v1.PayoutService/ImportPaymentStatusReport": _unary(
        "payout",
        "ImportPaymentStatusReport",
        payout_service_pb2.ImportPaymentStatusReportRequest(batch_id="b1", data=b"<Document/>"),
    ),
    "/benefits.v1.AuditService/GetEvaluation": _unary(
        "audit", "GetEvaluation", audit_service_pb2.GetEvaluationRequest(evaluation_id="e1")
    ),
    "/benefits.v1.AuditService/ListEvaluations": _unary(
        "audit", "ListEvaluations", audit_service_pb2.ListEvaluationsRequest()
    ),
    "/benefits.v1.AuditService/VerifyAuditLog": _unary(
        "audit", "VerifyAuditLog", audit_service_pb2.VerifyAuditLogRequest()
    ),
    "/benefits.v1.AuditService/ReplayEvaluation": _unary(
        "audit", "ReplayEvaluation", audit_service_pb2.ReplayEvaluationRequest(evaluation_id="e1")
    ),
}
# What an allowed caller gets where the fixed request names nothing that exists.
ALLOWED_CODES = {
    "/benefits.v1.AuditService/GetEvaluation": "NOT_FOUND",
    "/benefits.v1.PayoutService/GetPayoutBatch": "NOT_FOUND",
    "/benefits.v1.PayoutService/ListPayoutLines": "NOT_FOUND",
    "/benefits.v1.PayoutService/WatchPayoutBatch": "NOT_FOUND",
    "/benefits.v1.PayoutService/ApprovePayoutBatch": "NOT_FOUND",
    "/benefits.v1.PayoutService/CancelPayoutBatch": "NOT_FOUND",
    "/benefits.v1.PayoutService/ExportPayoutBatch": "NOT_FOUND",
    "/benefits.v1.PayoutService/RecordPayoutResults": "INVALID_ARGUMENT",
    "/benefits.v1.PayoutService/WithdrawPayoutLines": "NOT_FOUND",
    "/benefits.v1.PayoutService/ConfirmPayoutReturns": "NOT_FOUND",
    "/benefits.v1.PayoutService/ImportPaymentStatusReport": "NOT_FOUND",
    "/benefits.v1.AuditService/ReplayEvaluation": "NOT_FOUND",
}


def status_code(call: Callable[[], object]) -> grpc.StatusCode:
    """The status code a call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def call_code(call: Call, stubs: Stubs, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    """The status code a call ends with (OK when it returns)."""
    return status_code(lambda: call(stubs, metadata))


def import_facts(
    stubs: Stubs, records: list[dict[str, object]], metadata: list[tuple[str, str]]
) -> registry_service_pb2.ImportFactsResponse:
    """RegistryService.ImportFacts streaming `records`, one JSON record a message."""
    reply: registry_service_pb2.ImportFactsResponse = stubs.registry.ImportFacts(
        iter([registry_service_pb2.ImportFactsRequest(record_json=json.dumps(r, ensure_ascii=False)) for r in records]),
        metadata=metadata,
        timeout=30,
    )
    return reply


def rpc_error(fn: Callable[[], object]) -> grpc.RpcError:
    """Run a call that must fail and return its error."""
    try:
        fn()
    except grpc.RpcError as err:
        return err
    raise AssertionError("the call succeeded but was expected to fail")


def field_violations(err: grpc.RpcError) -> dict[str, str]:
    """The google.rpc.BadRequest field violations of an error, field -> description."""
    # what a stub raises is an RpcError and a Call at once; from_call reads the Call's trailers
    assert isinstance(err, grpc.Call), f"{type(err).__name__} is no grpc.Call"
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status details on {err.code()}: {err.details()}"
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def silent_call(
    channel: grpc.Channel, method: str, metadata: list[tuple[str, str]], release: threading.Event, timeout: float = 60
) -> grpc.Future[Any]:
    """A unary call to `method` whose request never comes until `release` is set (on the wire:
    headers and no message, as a client that went silent sends)."""

    def nothing_until_released() -> Iterator[bytes]:
        release.wait()
        yield from ()

    call: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(method)
    return call.future(nothing_until_released(), metadata=tuple(metadata), timeout=timeout)


def future_error(call: grpc.Future[Any], timeout: float) -> grpc.RpcError:
    """The error a call's future ended with (it must end with one within `timeout`)."""
    error = call.exception(timeout=timeout)
    assert isinstance(error, grpc.RpcError), f"the call ended with {error!r}, not an RpcError"
    return error


def retry_delays(err: grpc.RpcError) -> list[float]:
    """The google.rpc.RetryInfo delays (seconds) of an error; [] when it has none."""
    assert isinstance(err, grpc.Call), f"{type(err).__name__} is no grpc.Call"
    status = rpc_status.from_call(err)
    delays = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delays.append(info.retry_delay.ToTimedelta().total_seconds())
    return delays


def wait_until(condition: Callable[[], bool], seconds: float = 10.0, what: str = "the condition") -> None:
    """Poll `condition` until it holds; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not come true within {seconds:g} s"
        time.sleep(0.02)


@contextmanager
def connected(port: int) -> Iterator[Stubs]:
    """Stubs on a channel of their own to the server at `port`, closed afterwards."""
    yield from channel_stubs(port)


def channel_stubs(port: int) -> Iterator[Stubs]:
    stubs = Stubs.connect(port)
    try:
        yield stubs
    finally:
        stubs.channel.close()


def load_registry(db_url: str, records: list[dict[str, object]]) -> None:
    """Create the registry tables at `db_url` and load `records` into them."""
    engine = make_engine(db_url)
    try:
        create_schema(engine)
        load_records(records, engine)
    finally:
        engine.dispose()


@contextmanager
def database_factory(kind: str, folder: Path, records: list[dict[str, object]]) -> Iterator[Callable[[], Engine]]:
    """A factory of fresh databases of `kind` ("sqlite" files in `folder`, or private "postgresql"
    schemas), each holding `records` and the payout tables; all disposed of afterwards."""
    engines: list[Engine] = []
    schemas: list[AbstractContextManager[str]] = []

    def new() -> Engine:
        if kind == "sqlite":
            url = f"sqlite:///{folder / f'db{len(engines)}.db'}"
        else:
            schemas.append(private_schema())
            url = schemas[-1].__enter__()
        load_registry(url, records)
        engine = make_engine(url)
        create_payout_schema(engine)
        engines.append(engine)
        return engine

    try:
        yield new
    finally:
        for engine in engines:
            engine.dispose()
        for schema in schemas:
            schema.__exit__(None, None, None)


@contextmanager
def serving(
    db_url: str,
    records: list[dict[str, object]],
    folder: Path,
    *,
    principals: Sequence[Mapping[str, object]] = (),
    **config: Any,
) -> Iterator[RunningServer]:
    """Load `records` into the database at `db_url`, write the auth file into `folder` (with
    `principals` beside the usual ones), start a server on a loopback port (extra ServeConfig
    fields in `config`), stop it afterwards."""
    load_registry(db_url, records)
    running = create_server(
        ServeConfig(
            db_url=db_url,
            rules_dir=RULES_DIR,
            auth_file=write_auth_file(folder / "auth.yaml", principals),
            listen="127.0.0.1:0",
            **config,
        )
    )
    try:
        yield running
    finally:
        running.stop(grace=None)


def finished_batch(stubs: Stubs, batch_id: str) -> payout_service_pb2.PayoutBatch:
    """Watch a payout batch until it leaves RUNNING; the batch as the last progress shows it."""
    last: payout_service_pb2.PayoutBatchProgress | None = None
    for progress in stubs.payout.WatchPayoutBatch(
        payout_service_pb2.WatchPayoutBatchRequest(batch_id=batch_id), metadata=as_role("finance_operator"), timeout=120
    ):
        last = progress
    assert last is not None and last.batch.state != payout_service_pb2.BATCH_STATE_RUNNING
    return last.batch
