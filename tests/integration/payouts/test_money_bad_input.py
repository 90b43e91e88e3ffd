"""Bad input on the money path, through gRPC on SQLite and PostgreSQL: each refused call gets its
precise status (and, for INVALID_ARGUMENT, the field it names) and changes nothing at all -
no line, batch, bank file, seal, evaluation record or ledger entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from benefits.v1 import payout_service_pb2 as pb
from lxml import etree
from testkit.api_fixtures import Stubs, as_role, field_violations
from testkit.money_fixtures import (
    GIANT,
    PAIN001_NS,
    Money,
    api_server,
    money_snapshot,
    pain002,
    titled,
    uscc,
)

from service.server import RunningServer

__all__ = ["api_server"]  # fixture (tests/testkit/money_fixtures.py)

X = [uscc(n, "MA4J") for n in (1, 2, 3, 4, 8)]  # little-giant 2025: exported, answered but one
Y = [uscc(n, "MA4J") for n in (5, 6)]  # 2024: DRAFT
Z = [uscc(7, "MA4J")]  # 2023: APPROVED
OPERATOR, APPROVER = as_role("finance_operator"), as_role("finance_approver")


@pytest.fixture(scope="module")
def money_records() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for code in X:
        out += titled(code, int(code[12:16]), 2025)
    for n, code in enumerate(Y, start=5):
        out += titled(code, n, 2024)
    return out + titled(Z[0], 7, 2023)


@dataclass
class Scene:
    exported: str  # batch ids
    draft: str
    approved: str
    message_id: str
    paid: str  # line ids of the exported batch
    pending_return: str
    returned: str
    withdrawn: str
    unanswered: str
    draft_line: str


@pytest.fixture(scope="module")
def scene(stubs: Stubs) -> Scene:
    money = Money(stubs)
    exported = money.create(GIANT, 2025, "bad-input-2025-0001").batch_id
    lines = [line.line_id for line in money.lines(exported)]
    money.approve(exported)
    money.withdraw(exported, [lines[3]], "账户变更")
    xml = money.export(exported)
    money.results(
        exported,
        [(lines[0], "PAID", ""), (lines[1], "RETURNED", "AC04 账户已销户"), (lines[2], "RETURNED", "AC01 账号错误")],
    )
    money.confirm(exported, [lines[2]])
    draft = money.create(GIANT, 2024, "bad-input-2024-0001").batch_id
    approved = money.create(GIANT, 2023, "bad-input-2023-0001").batch_id
    money.approve(approved)
    message_id = etree.fromstring(xml).findtext(".//p:GrpHdr/p:MsgId", namespaces=PAIN001_NS)
    assert message_id is not None
    return Scene(
        exported,
        draft,
        approved,
        message_id,
        lines[0],
        lines[1],
        lines[2],
        lines[3],
        lines[4],
        money.lines(draft)[0].line_id,
    )


def _result(line_id: str, state: str, reason: str = "") -> pb.PayoutResult:
    return pb.PayoutResult(
        line_id=line_id,
        state={"PAID": pb.LINE_STATE_PAID, "RETURNED": pb.LINE_STATE_RETURNED, "PENDING": pb.LINE_STATE_PENDING}[state],
        return_reason=reason,
    )


@dataclass(frozen=True)
class Bad:
    name: str
    call: Callable[[Stubs, Scene], Any]
    code: grpc.StatusCode
    field: str | None = None  # the field an INVALID_ARGUMENT names
    says: str = ""  # a fragment the details must hold


def _results(
    batch: Callable[[Scene], str], *results: Callable[[Scene], pb.PayoutResult], metadata: Any = OPERATOR
) -> Callable[[Stubs, Scene], Any]:
    return lambda stubs, s: stubs.payout.RecordPayoutResults(
        pb.RecordPayoutResultsRequest(batch_id=batch(s), results=[r(s) for r in results]), metadata=metadata, timeout=20
    )


def _confirm(
    batch: Callable[[Scene], str], *lines: Callable[[Scene], str], metadata: Any = APPROVER
) -> Callable[[Stubs, Scene], Any]:
    return lambda stubs, s: stubs.payout.ConfirmPayoutReturns(
        pb.ConfirmPayoutReturnsRequest(batch_id=batch(s), line_ids=[line(s) for line in lines]),
        metadata=metadata,
        timeout=20,
    )


def _withdraw(
    batch: Callable[[Scene], str], *lines: Callable[[Scene], str], reason: str = "账户变更", metadata: Any = APPROVER
) -> Callable[[Stubs, Scene], Any]:
    return lambda stubs, s: stubs.payout.WithdrawPayoutLines(
        pb.WithdrawPayoutLinesRequest(batch_id=batch(s), line_ids=[line(s) for line in lines], reason=reason),
        metadata=metadata,
        timeout=20,
    )


def _cancel(
    batch: Callable[[Scene], str], reason: str = "预算调整", metadata: Any = OPERATOR
) -> Callable[[Stubs, Scene], Any]:
    return lambda stubs, s: stubs.payout.CancelPayoutBatch(
        pb.CancelPayoutBatchRequest(batch_id=batch(s), reason=reason), metadata=metadata, timeout=20
    )


def _report(batch: Callable[[Scene], str], make: Callable[[Scene], bytes]) -> Callable[[Stubs, Scene], Any]:
    return lambda stubs, s: stubs.payout.ImportPaymentStatusReport(
        pb.ImportPaymentStatusReportRequest(batch_id=batch(s), data=make(s)), metadata=OPERATOR, timeout=20
    )


def _export(batch: Callable[[Scene], str]) -> Callable[[Stubs, Scene], Any]:
    return lambda stubs, s: list(
        stubs.payout.ExportPayoutBatch(
            pb.ExportPayoutBatchRequest(batch_id=batch(s), format=pb.EXPORT_FORMAT_PAIN_001),
            metadata=OPERATOR,
            timeout=20,
        )
    )


EXPORTED: Callable[[Scene], str] = lambda s: s.exported  # noqa: E731
DRAFT: Callable[[Scene], str] = lambda s: s.draft  # noqa: E731
APPROVED: Callable[[Scene], str] = lambda s: s.approved  # noqa: E731
INVALID, FAILED, DENIED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
)

CASES = [
    # results
    Bad(
        "results for a line of another batch",
        _results(EXPORTED, lambda s: _result(s.draft_line, "PAID")),
        INVALID,
        "results[0].line_id",
    ),
    Bad(
        "results for an unknown line, after a valid one (all or nothing)",
        _results(
            EXPORTED,
            lambda s: _result(s.pending_return, "RETURNED", "AC04 账户已销户"),
            lambda s: _result(s.exported + "-999999", "PAID"),
        ),
        INVALID,
        "results[1].line_id",
    ),
    Bad(
        "PAID for a line awaiting confirmation of its return",
        _results(EXPORTED, lambda s: _result(s.pending_return, "PAID")),
        FAILED,
        says="returned",
    ),
    Bad("PAID for a returned, confirmed line", _results(EXPORTED, lambda s: _result(s.returned, "PAID")), FAILED),
    Bad(
        "RETURNED with another reason for a returned line",
        _results(EXPORTED, lambda s: _result(s.returned, "RETURNED", "AM04 余额不足")),
        FAILED,
    ),
    Bad(
        "RETURNED with another reason for a return awaiting confirmation",
        _results(EXPORTED, lambda s: _result(s.pending_return, "RETURNED", "AM04 余额不足")),
        FAILED,
    ),
    Bad(
        "a result for a withdrawn line (never sent to the bank)",
        _results(EXPORTED, lambda s: _result(s.withdrawn, "PAID")),
        FAILED,
    ),
    Bad(
        "RETURNED without the bank's reason",
        _results(EXPORTED, lambda s: _result(s.paid, "RETURNED")),
        INVALID,
        "results[0].return_reason",
    ),
    Bad(
        "a state that is no bank result",
        _results(EXPORTED, lambda s: _result(s.paid, "PENDING")),
        INVALID,
        "results[0].state",
    ),
    Bad(
        "two different results for one line in one call",
        _results(
            EXPORTED,
            lambda s: _result(s.unanswered, "PAID"),
            lambda s: _result(s.unanswered, "RETURNED", "AC04 账户已销户"),
        ),
        INVALID,
        "results[1].line_id",
    ),
    Bad("results for a DRAFT batch", _results(DRAFT, lambda s: _result(s.draft_line, "PAID")), FAILED),
    Bad("results for an APPROVED batch", _results(APPROVED, lambda s: _result(s.draft_line, "PAID")), FAILED),
    Bad("results by an approver", _results(EXPORTED, lambda s: _result(s.paid, "PAID"), metadata=APPROVER), DENIED),
    # pain.002
    Bad(
        "a pain.002 with an unknown end-to-end id",
        _report(EXPORTED, lambda s: pain002(s.message_id, [(s.paid, "ACSC", None), ("pb_nope-000001", "ACSC", None)])),
        INVALID,
        "data",
        says="TxInfAndSts[1]",
    ),
    Bad(
        "a pain.002 answering another message",
        _report(EXPORTED, lambda s: pain002("MSG000000000000000000000000", [(s.paid, "ACSC", None)])),
        INVALID,
        "data",
        says="OrgnlMsgId",
    ),
    Bad(
        "a pain.002 with a status not handled",
        _report(EXPORTED, lambda s: pain002(s.message_id, [(s.paid, "XXXX", None)])),
        INVALID,
        "data",
        says="TxInfAndSts[0]",
    ),
    Bad(
        "a pain.002 of another version",
        _report(
            EXPORTED,
            lambda s: pain002(s.message_id, [(s.paid, "ACSC", None)]).replace(b"pain.002.001.10", b"pain.002.001.03"),
        ),
        INVALID,
        "data",
        says="Document",
    ),
    Bad("a pain.002 that is not XML", _report(EXPORTED, lambda s: b"<Document><CstmrPmtStsRpt>"), INVALID, "data"),
    Bad(
        "a pain.002 for a batch without a bank file",
        _report(DRAFT, lambda s: pain002(s.message_id, [(s.draft_line, "ACSC", None)])),
        FAILED,
    ),
    # confirmations
    Bad(
        "a confirmation by the operator who recorded the return",
        _confirm(EXPORTED, lambda s: s.pending_return, metadata=OPERATOR),
        DENIED,
    ),
    Bad("a confirmation of a paid line", _confirm(EXPORTED, lambda s: s.paid), INVALID, "line_ids[0]"),
    Bad(
        "a confirmation of a line of another batch", _confirm(EXPORTED, lambda s: s.draft_line), INVALID, "line_ids[0]"
    ),
    Bad("a confirmation naming no line", _confirm(EXPORTED), INVALID, "line_ids"),
    # withdrawals
    Bad("a withdrawal of a line not in the batch", _withdraw(APPROVED, lambda s: s.draft_line), INVALID, "line_ids[0]"),
    Bad("a withdrawal of an unknown line", _withdraw(DRAFT, lambda s: s.draft + "-999999"), INVALID, "line_ids[0]"),
    Bad("a withdrawal from an exported batch", _withdraw(EXPORTED, lambda s: s.paid), FAILED),
    Bad("a withdrawal without a reason", _withdraw(DRAFT, lambda s: s.draft_line, reason="  "), INVALID, "reason"),
    Bad("a withdrawal by an operator", _withdraw(DRAFT, lambda s: s.draft_line, metadata=OPERATOR), DENIED),
    # cancellations
    Bad("cancel of an exported batch by the operator", _cancel(EXPORTED), FAILED),
    Bad("cancel of an exported batch by an approver", _cancel(EXPORTED, metadata=APPROVER), FAILED),
    Bad("cancel of an APPROVED batch by an operator", _cancel(APPROVED), DENIED),
    Bad("cancel of a DRAFT batch without a reason", _cancel(DRAFT, reason=""), INVALID, "reason"),
    Bad(
        "cancel of an APPROVED batch without a reason",
        _cancel(APPROVED, reason=" ", metadata=APPROVER),
        INVALID,
        "reason",
    ),
    # export
    Bad("export of a DRAFT batch", _export(DRAFT), FAILED),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_precisely_and_changes_nothing(
    stubs: Stubs, scene: Scene, api_server: RunningServer, case: Bad
) -> None:
    before = money_snapshot(api_server.engine)
    try:
        case.call(stubs, scene)
    except grpc.RpcError as err:
        error = err
    else:
        raise AssertionError(f"{case.name}: the call succeeded")
    assert error.code() == case.code, f"{case.name}: {error.code()} {error.details()}"
    if case.field is not None:
        assert case.field in field_violations(error), (case.name, field_violations(error))
    if case.says:
        violations = " ".join(field_violations(error).values()) if case.code == INVALID else ""
        assert case.says in (error.details() or "") + violations, (case.name, error.details())
    assert money_snapshot(api_server.engine) == before, f"{case.name}: a refused call changed something"


def test_identical_repeated_results_are_no_ops(stubs: Stubs, scene: Scene, api_server: RunningServer) -> None:
    """A retried call - the same results as the lines already have - succeeds and writes nothing."""
    before = money_snapshot(api_server.engine)
    _results(
        EXPORTED,
        lambda s: _result(s.pending_return, "RETURNED", "AC04 账户已销户"),
        lambda s: _result(s.pending_return, "RETURNED", "AC04 账户已销户"),
        lambda s: _result(s.returned, "RETURNED", "AC01 账号错误"),
        lambda s: _result(s.paid, "PAID"),
    )(stubs, scene)
    assert money_snapshot(api_server.engine) == before
