"""PayoutService over a real socket: create (idempotent, concurrent), read, approve, cancel.

Each test has a server and a database of its own (the five giants can be paid once only) and
brings its batch to the state it needs itself."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from benefits.v1 import payout_service_pb2 as pb
from testkit.api_fixtures import Stubs, as_role, channel_stubs, finished_batch, serving, status_code

from enterprise_registry.uscc import make
from service.audit.records import Actor
from service.server import RunningServer

OPERATOR, APPROVER = as_role("finance_operator"), as_role("finance_approver")
GIANTS = [make(f"91420600MA4Q0000{i}") for i in range(1, 6)]
BANK = {"bank_name": "中国工商银行襄阳分行", "account_no": "1804000109200012345", "account_name": "x"}


def _records() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, uscc in enumerate(GIANTS):
        out.append(
            {
                "kind": "enterprise",
                "uscc": uscc,
                "source": "market_regulation",
                "as_of": "2025-12-31",
                "name": f"襄阳示例{i}有限公司",
                "org_type": "enterprise",
                "region_code": "420606",
                "industry_code": "C3670",
                "established_on": "2010-01-01",
                "status": "active",
                "labor_dispatch": False,
                "bank_account": BANK,
            }
        )
        out.append(
            {
                "kind": "qualification",
                "uscc": uscc,
                "source": "industry_it",
                "as_of": "2025-12-31",
                "type": "little_giant",
                "level": "national",
                "first_time": True,
                "granted_on": "2025-07-01",
                "certificate_no": f"LG-{i}",
            }
        )
    return out


@pytest.fixture
def api_server(db_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    payers = tmp_path / "payers.yaml"
    payers.write_text(
        "treasury: {name: 襄阳市财政局国库支付中心, account_no: '4200000000000000001', "
        "bank_name: 中国人民银行襄阳市分行}\n",
        encoding="utf-8",
    )
    with serving(db_url, _records(), tmp_path, payers_file=payers) as running:
        yield running


@pytest.fixture
def stubs(api_server: RunningServer) -> Iterator[Stubs]:
    yield from channel_stubs(api_server.port)


def _create(stubs: Stubs, request_id: str, policy_id: str = "little-giant-reward") -> pb.PayoutBatch:
    """Create a batch and watch it until it leaves RUNNING; the batch as it ends."""
    started = _start(stubs, request_id, policy_id)
    batch: pb.PayoutBatch = finished_batch(stubs, started.batch_id)
    return batch


def _start(stubs: Stubs, request_id: str, policy_id: str = "little-giant-reward") -> pb.PayoutBatch:
    started: pb.PayoutBatch = stubs.payout.CreatePayoutBatch(
        pb.CreatePayoutBatchRequest(policy_id=policy_id, period=2025, request_id=request_id), metadata=OPERATOR
    )
    return started


def _approved(stubs: Stubs, request_id: str) -> pb.PayoutBatch:
    """A batch of the five giants, created and approved."""
    batch = _create(stubs, request_id)
    approved: pb.PayoutBatch = stubs.payout.ApprovePayoutBatch(
        pb.ApprovePayoutBatchRequest(batch_id=batch.batch_id), metadata=APPROVER
    )
    assert (approved.state, approved.line_count) == (pb.BATCH_STATE_APPROVED, len(GIANTS))
    return approved


def test_eight_concurrent_creates_with_one_request_id_give_one_batch(stubs: Stubs) -> None:
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: _start(stubs, "req-concurrent-0001"), range(8)))
    assert len({b.batch_id for b in made}) == 1
    batch = finished_batch(stubs, made[0].batch_id)
    assert (batch.state, batch.line_count, batch.total_fen) == (pb.BATCH_STATE_DRAFT, 5, 5 * 50_000_000)
    lines = stubs.payout.ListPayoutLines(pb.ListPayoutLinesRequest(batch_id=batch.batch_id), metadata=APPROVER)
    assert sorted(line.uscc for line in lines.lines) == sorted(GIANTS)
    assert all(line.evaluation_id.startswith("ev_") for line in lines.lines)


def test_the_same_request_id_with_other_arguments_already_exists(stubs: Stubs) -> None:
    _create(stubs, "req-concurrent-0001")
    assert (
        status_code(lambda: _create(stubs, "req-concurrent-0001", "single-champion-reward"))
        == grpc.StatusCode.ALREADY_EXISTS
    )


def test_a_second_request_pays_nobody_twice(stubs: Stubs) -> None:
    assert _create(stubs, "req-first-000001").line_count == len(GIANTS)
    again = _create(stubs, "req-second-00001")
    assert (again.line_count, again.total_fen) == (0, 0)


def test_lifecycle_and_illegal_transitions(stubs: Stubs) -> None:
    batch = _create(stubs, "req-concurrent-0001")
    approved = stubs.payout.ApprovePayoutBatch(pb.ApprovePayoutBatchRequest(batch_id=batch.batch_id), metadata=APPROVER)
    assert approved.state == pb.BATCH_STATE_APPROVED and approved.approved_by
    assert (
        status_code(
            lambda: stubs.payout.ApprovePayoutBatch(
                pb.ApprovePayoutBatchRequest(batch_id=batch.batch_id), metadata=APPROVER
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (
        status_code(
            lambda: stubs.payout.CancelPayoutBatch(  # an approved batch: only by an approver
                pb.CancelPayoutBatchRequest(batch_id=batch.batch_id, reason="预算调整"), metadata=OPERATOR
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        status_code(
            lambda: stubs.payout.CancelPayoutBatch(  # and never without a reason
                pb.CancelPayoutBatchRequest(batch_id=batch.batch_id), metadata=APPROVER
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        status_code(
            lambda: stubs.payout.ApprovePayoutBatch(
                pb.ApprovePayoutBatchRequest(batch_id=batch.batch_id), metadata=OPERATOR
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_bad_create_requests_name_the_field(stubs: Stubs) -> None:
    assert (
        status_code(lambda: stubs.payout.CreatePayoutBatch(pb.CreatePayoutBatchRequest(), metadata=OPERATOR))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        status_code(
            lambda: stubs.payout.GetPayoutBatch(pb.GetPayoutBatchRequest(batch_id="pb_none"), metadata=OPERATOR)
        )
        == grpc.StatusCode.NOT_FOUND
    )


def _export(stubs: Stubs, batch_id: str, fmt: pb.ExportFormat) -> bytes:
    return b"".join(
        chunk.data
        for chunk in stubs.payout.ExportPayoutBatch(
            pb.ExportPayoutBatchRequest(batch_id=batch_id, format=fmt), metadata=OPERATOR
        )
    )


def test_an_approved_batch_exports_valid_files_once(stubs: Stubs) -> None:
    from lxml import etree

    from service.payouts.export import PAIN_NS, _schema

    batch = _approved(stubs, "req-export-00001")
    assert (
        stubs.payout.GetPayoutBatch(pb.GetPayoutBatchRequest(batch_id=batch.batch_id), metadata=OPERATOR).state
        == pb.BATCH_STATE_APPROVED
    )
    xml = _export(stubs, batch.batch_id, pb.EXPORT_FORMAT_PAIN_001)
    document = etree.fromstring(xml)
    assert _schema().validate(document)
    ns = {"p": PAIN_NS}
    assert document.findtext(".//p:GrpHdr/p:NbOfTxs", namespaces=ns) == "5"
    assert document.findtext(".//p:GrpHdr/p:CtrlSum", namespaces=ns) == "2500000.00"
    ids = [e.text for e in document.iterfind(".//p:EndToEndId", ns)]
    assert len(set(ids)) == 5
    csv_text = _export(stubs, batch.batch_id, pb.EXPORT_FORMAT_CSV).decode()
    assert csv_text.count("\n") == 6 and "500000.00" in csv_text
    assert (
        stubs.payout.GetPayoutBatch(pb.GetPayoutBatchRequest(batch_id=batch.batch_id), metadata=OPERATOR).state
        == pb.BATCH_STATE_EXPORTED
    )
    assert _export(stubs, batch.batch_id, pb.EXPORT_FORMAT_PAIN_001) == xml  # same ids, never new ones


def test_a_draft_batch_is_not_exported(stubs: Stubs, api_server: RunningServer) -> None:
    from service.payouts.batches import cancel

    draft = _create(stubs, "req-draft-000001")
    assert draft.state == pb.BATCH_STATE_DRAFT
    assert (
        status_code(lambda: _export(stubs, draft.batch_id, pb.EXPORT_FORMAT_CSV)) == grpc.StatusCode.FAILED_PRECONDITION
    )
    cancel(api_server.engine, draft.batch_id, Actor("test-finance_operator", "finance_operator"), "test")


def test_bank_results_settle_the_batch_and_a_returned_line_is_paid_again_once(stubs: Stubs) -> None:
    batch = _approved(stubs, "req-results-0001")
    _export(stubs, batch.batch_id, pb.EXPORT_FORMAT_CSV)
    lines = stubs.payout.ListPayoutLines(pb.ListPayoutLinesRequest(batch_id=batch.batch_id), metadata=OPERATOR).lines
    returned, paid = lines[0], lines[1:]
    results = [pb.PayoutResult(line_id=line.line_id, state=pb.LINE_STATE_PAID) for line in paid]
    partial = stubs.payout.RecordPayoutResults(
        pb.RecordPayoutResultsRequest(batch_id=batch.batch_id, results=results), metadata=OPERATOR
    )
    assert partial.state == pb.BATCH_STATE_EXPORTED
    bounced = [pb.PayoutResult(line_id=returned.line_id, state=pb.LINE_STATE_RETURNED, return_reason="AC01 账号错误")]
    pending = stubs.payout.RecordPayoutResults(
        pb.RecordPayoutResultsRequest(batch_id=batch.batch_id, results=bounced), metadata=OPERATOR
    )
    assert pending.state == pb.BATCH_STATE_EXPORTED  # a return waits for a second principal
    assert (
        stubs.payout.RecordPayoutResults(
            pb.RecordPayoutResultsRequest(  # a retry is harmless
                batch_id=batch.batch_id, results=results + bounced
            ),
            metadata=OPERATOR,
        ).state
        == pb.BATCH_STATE_EXPORTED
    )
    assert _create(stubs, "req-repay-000000").line_count == 0  # not released yet: nobody is paid again
    settled = stubs.payout.ConfirmPayoutReturns(
        pb.ConfirmPayoutReturnsRequest(batch_id=batch.batch_id, line_ids=[returned.line_id]), metadata=APPROVER
    )
    assert settled.state == pb.BATCH_STATE_SETTLED
    assert (
        status_code(
            lambda: stubs.payout.RecordPayoutResults(
                pb.RecordPayoutResultsRequest(  # a different result
                    batch_id=batch.batch_id,
                    results=[pb.PayoutResult(line_id=returned.line_id, state=pb.LINE_STATE_PAID)],
                ),
                metadata=OPERATOR,
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    repay = _create(stubs, "req-repay-000001")
    repaid = stubs.payout.ListPayoutLines(pb.ListPayoutLinesRequest(batch_id=repay.batch_id), metadata=OPERATOR)
    assert [line.uscc for line in repaid.lines] == [returned.uscc]
    assert _create(stubs, "req-repay-000002").line_count == 0  # and never twice
