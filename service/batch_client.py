"""The finance bureau's gRPC client for payout batches (`benefits batch ...`, `make run`'s batch).

create (and watch, with a progress bar) -> approve (a second principal) -> export -> results.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from benefits.v1 import payout_service_pb2 as pb
from benefits.v1 import payout_service_pb2_grpc
from tqdm import tqdm

from rules.money import format_yuan
from service.api.enums import BATCH_STATES
from service.tls import Endpoint, open_channel

FORMATS = {"csv": pb.EXPORT_FORMAT_CSV, "pain001": pb.EXPORT_FORMAT_PAIN_001}
RESULTS_PER_CALL = 5000  # keeps each RecordPayoutResults request far below the 4 MiB bound


class BatchClient:
    """PayoutService calls with the caller's token."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self.stub = payout_service_pb2_grpc.PayoutServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)

    # (the generated stub is untyped: each answer is annotated with the message the rpc returns)
    def create(self, policy_id: str, period: int, request_id: str) -> pb.PayoutBatch:
        batch: pb.PayoutBatch = self.stub.CreatePayoutBatch(
            pb.CreatePayoutBatchRequest(policy_id=policy_id, period=period, request_id=request_id),
            metadata=self.metadata,
            timeout=60,
        )
        return batch

    def get(self, batch_id: str) -> pb.PayoutBatch:
        batch: pb.PayoutBatch = self.stub.GetPayoutBatch(
            pb.GetPayoutBatchRequest(batch_id=batch_id), metadata=self.metadata, timeout=30
        )
        return batch

    def watch(self, batch_id: str) -> Iterator[pb.PayoutBatchProgress]:
        progress: Iterator[pb.PayoutBatchProgress] = self.stub.WatchPayoutBatch(
            pb.WatchPayoutBatchRequest(batch_id=batch_id), metadata=self.metadata
        )
        yield from progress

    def lines(self, batch_id: str, *, payee_changed: bool = False) -> Iterator[pb.PayoutLine]:
        token = ""
        while True:
            page: pb.ListPayoutLinesResponse = self.stub.ListPayoutLines(
                pb.ListPayoutLinesRequest(
                    batch_id=batch_id, page_size=1000, page_token=token, payee_changed=payee_changed
                ),
                metadata=self.metadata,
                timeout=60,
            )
            yield from page.lines
            token = page.next_page_token
            if not token:
                return

    def approve(self, batch_id: str) -> pb.PayoutBatch:
        batch: pb.PayoutBatch = self.stub.ApprovePayoutBatch(
            pb.ApprovePayoutBatchRequest(batch_id=batch_id), metadata=self.metadata, timeout=30
        )
        return batch

    def cancel(self, batch_id: str, reason: str) -> pb.PayoutBatch:
        batch: pb.PayoutBatch = self.stub.CancelPayoutBatch(
            pb.CancelPayoutBatchRequest(batch_id=batch_id, reason=reason), metadata=self.metadata, timeout=60
        )
        return batch

    def withdraw(self, batch_id: str, line_ids: list[str], reason: str) -> pb.PayoutBatch:
        batch: pb.PayoutBatch = self.stub.WithdrawPayoutLines(
            pb.WithdrawPayoutLinesRequest(batch_id=batch_id, line_ids=line_ids, reason=reason),
            metadata=self.metadata,
            timeout=60,
        )
        return batch

    def confirm_returns(self, batch_id: str, line_ids: list[str]) -> pb.PayoutBatch:
        batch: pb.PayoutBatch = self.stub.ConfirmPayoutReturns(
            pb.ConfirmPayoutReturnsRequest(batch_id=batch_id, line_ids=line_ids), metadata=self.metadata, timeout=60
        )
        return batch

    def status_report(self, batch_id: str, data: bytes) -> pb.ImportPaymentStatusReportResponse:
        response: pb.ImportPaymentStatusReportResponse = self.stub.ImportPaymentStatusReport(
            pb.ImportPaymentStatusReportRequest(batch_id=batch_id, data=data), metadata=self.metadata, timeout=120
        )
        return response

    def export(self, batch_id: str, export_format: pb.ExportFormat) -> bytes:
        chunks = self.stub.ExportPayoutBatch(
            pb.ExportPayoutBatchRequest(batch_id=batch_id, format=export_format), metadata=self.metadata, timeout=300
        )
        return b"".join(chunk.data for chunk in chunks)

    def record_results(self, batch_id: str, results: list[pb.PayoutResult]) -> pb.PayoutBatch | None:
        """The batch after the last call; None when there were no results (and no call)."""
        batch: pb.PayoutBatch | None = None
        for start in range(0, len(results), RESULTS_PER_CALL):
            batch = self.stub.RecordPayoutResults(
                pb.RecordPayoutResultsRequest(batch_id=batch_id, results=results[start : start + RESULTS_PER_CALL]),
                metadata=self.metadata,
                timeout=120,
            )
        return batch


@contextmanager
def connected(target: str | Endpoint, token: str) -> Iterator[BatchClient]:
    """A client on a channel to `target`: a bare address is plaintext, an Endpoint says (TLS)."""
    with open_channel(target) as channel:
        yield BatchClient(channel, token)


def describe(batch: pb.PayoutBatch) -> str:
    text = (
        f"batch {batch.batch_id}: {batch.policy_id} {batch.period} ({batch.policy_version}) "
        f"{BATCH_STATES.from_proto.get(batch.state, '?')}, {batch.line_count} lines, "
        f"{format_yuan(batch.total_fen)}"
    )
    if batch.merkle_root:
        text += f"\n  merkle root {batch.merkle_root}"
    if batch.approved_by:
        text += f"\n  created by {batch.created_by}, approved by {batch.approved_by}"
    return text


def watch_with_progress(client: BatchClient, batch_id: str, *, quiet: bool = False) -> pb.PayoutBatch:
    """Follow a running batch with a progress bar (on stderr) until it leaves RUNNING."""
    bar = None
    last = None
    try:
        for progress in client.watch(batch_id):
            last = progress
            if quiet:
                continue
            if bar is None:
                bar = tqdm(
                    total=progress.enterprise_count,
                    unit=" enterprises",
                    file=sys.stderr,
                    desc=f"{progress.batch.policy_id} {progress.batch.period}",
                    dynamic_ncols=True,
                    mininterval=0.5,
                )
            bar.update(progress.evaluated_count - bar.n)
            bar.set_postfix_str(
                f"eligible {progress.eligible_count}, {format_yuan(progress.amount_fen)}"
                + (f", errors {progress.error_count}" if progress.error_count else "")
            )
    finally:
        if bar is not None:
            bar.close()
    if last is None:
        raise RuntimeError(f"no progress received for batch {batch_id}")
    return last.batch
