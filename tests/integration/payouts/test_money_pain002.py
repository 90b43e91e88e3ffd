"""The bank's pain.002.001.10 status report, round trip through gRPC on SQLite and PostgreSQL.

Export a batch, answer its pain.001 with a pain.002 naming one rejected transfer (RJCT, AC04),
two settled (ACSC) and one pending (PDNG); import it: one line RETURN_PENDING with "AC04", two
PAID, one unchanged. Importing it again succeeds and changes nothing. A report with an unknown
end-to-end id, with a line of another batch, or answering another message is INVALID_ARGUMENT
naming the place and changes nothing. ACSC for a PAID line again is fine; a different result for
a returned line (ACSC, or RJCT with another reason) is FAILED_PRECONDITION, and all or nothing:
the other results of that report are not recorded either. RJCT for a PAID line is a late return
(RETURN_PENDING until a second principal confirms it), as the README says.
"""

from __future__ import annotations

from functools import partial

import grpc
import pytest
from benefits.v1 import payout_service_pb2 as pb
from lxml import etree
from testkit.api_fixtures import field_violations, rpc_error
from testkit.money_fixtures import (
    GIANT,
    PAIN001_NS,
    Money,
    api_server,
    money,
    money_snapshot,
    pain002,
    rpc_code,
    titled,
    uscc,
)

from service.server import RunningServer

__all__ = ["api_server", "money"]  # fixtures (tests/testkit/money_fixtures.py)

Q = [uscc(n, "MA4H") for n in range(1, 5)]  # little-giant 2025
OTHER = uscc(5, "MA4H")  # little-giant 2024: another exported batch


@pytest.fixture(scope="module")
def money_records() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n, code in enumerate(Q, start=1):
        out += titled(code, n, 2025)
    return out + titled(OTHER, 5, 2024)


def _exported(money: Money, period: int, request_id: str) -> tuple[str, str, list[pb.PayoutLine]]:
    """(batch id, pain.001 MsgId, lines) of a freshly exported batch."""
    batch = money.create(GIANT, period, request_id)
    money.approve(batch.batch_id)
    xml = money.export(batch.batch_id)
    message_id = etree.fromstring(xml).findtext(".//p:GrpHdr/p:MsgId", namespaces=PAIN001_NS)
    assert message_id
    return batch.batch_id, message_id, money.lines(batch.batch_id)


def test_a_status_report_round_trip(money: Money, api_server: RunningServer) -> None:
    engine = api_server.engine
    batch_id, message_id, lines = _exported(money, 2025, "pain002-2025-0001")
    rejected, paid_a, paid_b, pending = lines
    other_batch, _, (other_line,) = _exported(money, 2024, "pain002-2024-0001")

    report = pain002(
        message_id,
        [
            (rejected.line_id, "RJCT", "AC04"),
            (paid_a.line_id, "ACSC", None),
            (paid_b.line_id, "ACSC", None),
            (pending.line_id, "PDNG", None),
        ],
    )
    response = money.status_report(batch_id, report)
    assert (response.paid_count, response.rejected_count, response.unchanged_count) == (2, 1, 1)
    assert response.message_id == "BANKRPT0001"
    assert response.batch.state == pb.BATCH_STATE_EXPORTED
    state = {line.line_id: (line.state, line.return_reason) for line in money.lines(batch_id)}
    assert state == {
        rejected.line_id: (pb.LINE_STATE_RETURN_PENDING, "AC04"),
        paid_a.line_id: (pb.LINE_STATE_PAID, ""),
        paid_b.line_id: (pb.LINE_STATE_PAID, ""),
        pending.line_id: (pb.LINE_STATE_PENDING, ""),
    }

    # The same report again: accepted, nothing changes (no ledger entry either).
    before = money_snapshot(engine)
    again = money.status_report(batch_id, report)
    assert again.batch.state == pb.BATCH_STATE_EXPORTED
    assert money_snapshot(engine) == before

    # Refused reports name the place and change nothing.
    refusals = {
        "unknown end-to-end id": (
            pain002(message_id, [(paid_a.line_id, "ACSC", None), (batch_id + "-999999", "ACSC", None)]),
            ["TxInfAndSts[1]", batch_id + "-999999"],
        ),
        "a line of another batch": (
            pain002(message_id, [(pending.line_id, "ACSC", None), (other_line.line_id, "ACSC", None)]),
            ["TxInfAndSts[1]", other_line.line_id],
        ),
        "another message": (pain002("MSG" + "0" * 24, [(pending.line_id, "ACSC", None)]), ["OrgnlMsgId"]),
    }
    for name, (data, places) in refusals.items():
        err = rpc_error(partial(money.status_report, batch_id, data))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.details())
        violation = field_violations(err).get("data", "")
        assert all(place in violation for place in places), (name, violation)
        assert money_snapshot(engine) == before, f"{name}: a refused report changed something"

    # ACSC for a PAID line again is fine.
    ok = money.status_report(batch_id, pain002(message_id, [(paid_a.line_id, "ACSC", None)]))
    assert ok.batch.state == pb.BATCH_STATE_EXPORTED
    assert money_snapshot(engine) == before

    # A different result for a line that has one: FAILED_PRECONDITION, and all or nothing.
    for data in (
        pain002(message_id, [(pending.line_id, "ACSC", None), (rejected.line_id, "ACSC", None)]),
        pain002(message_id, [(pending.line_id, "ACSC", None), (rejected.line_id, "RJCT", "AM04")]),
    ):
        code, details = rpc_code(partial(money.status_report, batch_id, data))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, details
        assert money_snapshot(engine) == before
    assert {line.line_id: line.state for line in money.lines(batch_id)}[pending.line_id] == pb.LINE_STATE_PENDING

    # The pending transfer settles later; the returns are confirmed by an approver: SETTLED.
    assert money.status_report(batch_id, pain002(message_id, [(pending.line_id, "ACSC", None)])).paid_count == 1
    assert money.confirm(batch_id, [rejected.line_id]).state == pb.BATCH_STATE_SETTLED
    # RJCT for a line the bank had settled is taken as a late return (README: "a paid line the
    # bank returns later goes the same way"): it waits for a second principal, not released.
    late = money.status_report(batch_id, pain002(message_id, [(paid_a.line_id, "RJCT", "AC04")]))
    assert (late.rejected_count, late.batch.state) == (1, pb.BATCH_STATE_EXPORTED)
    assert {line.line_id: line.state for line in money.lines(batch_id)}[paid_a.line_id] == pb.LINE_STATE_RETURN_PENDING
    assert money.confirm(batch_id, [paid_a.line_id]).state == pb.BATCH_STATE_SETTLED
    assert money.get(other_batch).state == pb.BATCH_STATE_EXPORTED  # never touched
    assert money.verify().valid
