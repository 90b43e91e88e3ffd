"""Red-team review: odd input to the payout RPCs, through gRPC on SQLite and PostgreSQL.

A caller's mistake must get a precise status - never UNKNOWN or INTERNAL - and change nothing
(no line, batch, bank file, seal, evaluation record or ledger entry). Fuzzed here beyond
tests/integration/payouts/test_money_bad_input.py: NUL bytes in ids, reasons longer than a column holds,
huge and duplicated id lists, a reason of (almost) 4 MiB, status reports with DOCTYPE, entities,
external entities, deep nesting, millions of bytes, foreign namespaces and misplaced elements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from benefits.v1 import audit_service_pb2
from benefits.v1 import payout_service_pb2 as pb
from lxml import etree
from testkit.api_fixtures import Stubs, as_role, field_violations
from testkit.money_fixtures import (
    GIANT,
    PAIN001_NS,
    PAIN002_NS,
    Money,
    api_server,
    lines_by_uscc,
    money_snapshot,
    pain002,
    titled,
    uscc,
)

from service.server import RunningServer

__all__ = ["api_server"]  # fixture (tests/testkit/money_fixtures.py)

X = [uscc(n, "MA4W") for n in range(1, 7)]  # little-giant 2025: exported
Y = [uscc(n, "MA4W") for n in (7, 8)]  # 2024: DRAFT
Z = [uscc(9, "MA4W")]  # 2023: APPROVED
OPERATOR, APPROVER, AUDITOR = as_role("finance_operator"), as_role("finance_approver"), as_role("auditor")
PRECISE_NOT = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
XXE_SECRET = "xxe-secret-file-content-4f1c9a"


@pytest.fixture(scope="module")
def money_records() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for code in [*X, *Y, *Z]:
        year = 2025 if code in X else 2024 if code in Y else 2023
        out += titled(code, int(code[12:16]), year)
    return out


@dataclass
class Scene:
    exported: str
    draft: str
    approved: str
    message_id: str
    lines: list[str]  # of the exported batch: [0] RETURN_PENDING, [1] PAID, the rest PENDING
    draft_lines: list[str]
    xxe_file: Path


@pytest.fixture(scope="module")
def scene(stubs: Stubs, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    money = Money(stubs)
    exported = money.create(GIANT, 2025, "review-bad-2025-0001").batch_id
    lines = [line.line_id for line in money.lines(exported)]
    money.approve(exported)
    xml = money.export(exported)
    money.results(exported, [(lines[0], "RETURNED", "AC04 账户已销户"), (lines[1], "PAID", "")])
    draft = money.create(GIANT, 2024, "review-bad-2024-0001").batch_id
    approved = money.create(GIANT, 2023, "review-bad-2023-0001").batch_id
    money.approve(approved)
    message_id = etree.fromstring(xml).findtext(".//p:GrpHdr/p:MsgId", namespaces=PAIN001_NS)
    secret = tmp_path_factory.mktemp("xxe") / "secret.txt"
    secret.write_text(XXE_SECRET, encoding="utf-8")
    return Scene(
        exported, draft, approved, str(message_id), lines, [line.line_id for line in money.lines(draft)], secret
    )


def _code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, grpc.RpcError | None]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or "", err
    return grpc.StatusCode.OK, "", None


@dataclass(frozen=True)
class Odd:
    name: str
    call: Callable[[Stubs, Scene], Any]
    codes: frozenset[grpc.StatusCode]  # the precise answers accepted
    field: str | None = None


def _p(stubs: Stubs) -> Any:
    return stubs.payout


# The deadline only guards against a hang: 24,000 unknown transfers took over 30 s while the stray-transfer
# check was quadratic (service/payouts/status_report.py); about a second since.
def _report(make: Callable[[Scene], bytes], batch: Callable[[Scene], str] = lambda s: s.exported) -> Callable[..., Any]:
    return lambda stubs, s: _p(stubs).ImportPaymentStatusReport(
        pb.ImportPaymentStatusReportRequest(batch_id=batch(s), data=make(s)), metadata=OPERATOR, timeout=120
    )


def _with_doctype(s: Scene, doctype: str, e2e: str) -> bytes:
    body = pain002(s.message_id, [("E2E_PLACEHOLDER", "ACSC", None)]).decode()
    body = body.replace("E2E_PLACEHOLDER", e2e)
    head, rest = body.split("\n", 1)
    return f"{head}\n{doctype}\n{rest}".encode()


_LAUGHS = (
    '<!DOCTYPE Document [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + "]>"
)


def _rejection(s: Scene) -> etree._Element:
    """A parsed report of one transaction, a rejection, for the attacks below to bend."""
    return etree.fromstring(pain002(s.message_id, [(s.lines[2], "RJCT", "AC04")]))


def _one(root: etree._Element, tag: str, *, anywhere: bool = True) -> etree._Element:
    """The first pain.002 element `tag` below `root` (anywhere, or a child); it must be there."""
    found = root.find(f"{'.//' if anywhere else ''}{{{PAIN002_NS}}}{tag}")
    assert found is not None, tag
    return found


def _detached(element: etree._Element) -> etree._Element:
    parent = element.getparent()
    assert parent is not None
    parent.remove(element)
    return element


def _xml(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _foreign_namespace(s: Scene) -> bytes:
    """The one transaction (a rejection) in another namespace than the report's."""
    root = _rejection(s)
    for element in _one(root, "TxInfAndSts").iter():
        tag = element.tag
        assert isinstance(tag, str)  # as parsed (lxml's stubs allow what a program may set)
        element.tag = tag.replace(PAIN002_NS, "urn:iso:std:iso:20022:tech:xsd:pain.002.001.03")
    return _xml(root)


def _misplaced(s: Scene) -> bytes:
    """The one transaction (a rejection) directly under CstmrPmtStsRpt, not in OrgnlPmtInfAndSts."""
    root = _rejection(s)
    tx = _detached(_one(root, "TxInfAndSts"))
    _one(root, "CstmrPmtStsRpt", anywhere=False).append(tx)
    return _xml(root)


def _group_rejected(s: Scene) -> bytes:
    """The bank rejects the whole file: GrpSts RJCT with its reason, no transaction details."""
    root = _rejection(s)
    _one(root, "GrpSts").text = "RJCT"  # was PART, as pain002 writes it
    _detached(_one(root, "OrgnlPmtInfAndSts"))
    group = _one(root, "OrgnlGrpInfAndSts")
    reason = etree.SubElement(
        etree.SubElement(etree.SubElement(group, f"{{{PAIN002_NS}}}StsRsnInf"), f"{{{PAIN002_NS}}}Rsn"),
        f"{{{PAIN002_NS}}}Cd",
    )
    reason.text = "FF01"
    return _xml(root)


def _huge(s: Scene) -> bytes:
    return pain002(s.message_id, [(f"pb_unknown-{i:07d}", "ACSC", None) for i in range(24_000)])


def _deep(s: Scene) -> bytes:
    depth = 20_000
    return (
        b'<?xml version="1.0"?><Document xmlns="'
        + PAIN002_NS.encode()
        + b'">'
        + b"<a>" * depth
        + b"</a>" * depth
        + b"</Document>"
    )


NUL = "\x00"
ANY_PRECISE_MISS = frozenset({INVALID, NOT_FOUND})
ODD = [
    # NUL bytes where an id goes: a caller's mistake, never the database's
    Odd(
        "GetPayoutBatch batch_id with NUL",
        lambda st, s: _p(st).GetPayoutBatch(
            pb.GetPayoutBatchRequest(batch_id="pb_" + NUL), metadata=OPERATOR, timeout=20
        ),
        ANY_PRECISE_MISS,
    ),
    Odd(
        "ListPayoutLines batch_id with NUL",
        lambda st, s: _p(st).ListPayoutLines(
            pb.ListPayoutLinesRequest(batch_id=s.exported + NUL), metadata=OPERATOR, timeout=20
        ),
        ANY_PRECISE_MISS,
    ),
    Odd(
        "CancelPayoutBatch batch_id with NUL",
        lambda st, s: _p(st).CancelPayoutBatch(
            pb.CancelPayoutBatchRequest(batch_id=s.draft + NUL, reason="预算调整"), metadata=OPERATOR, timeout=20
        ),
        ANY_PRECISE_MISS,
    ),
    Odd(
        "WithdrawPayoutLines line id with NUL",
        lambda st, s: _p(st).WithdrawPayoutLines(
            pb.WithdrawPayoutLinesRequest(
                batch_id=s.approved, line_ids=[s.approved + "-00000" + NUL], reason="账户变更"
            ),
            metadata=APPROVER,
            timeout=20,
        ),
        frozenset({INVALID}),
        "line_ids[0]",
    ),
    Odd(
        "ConfirmPayoutReturns line id with NUL",
        lambda st, s: _p(st).ConfirmPayoutReturns(
            pb.ConfirmPayoutReturnsRequest(batch_id=s.exported, line_ids=[s.lines[0] + NUL]),
            metadata=APPROVER,
            timeout=20,
        ),
        frozenset({INVALID}),
        "line_ids[0]",
    ),
    Odd(
        "RecordPayoutResults line id with NUL",
        lambda st, s: _p(st).RecordPayoutResults(
            pb.RecordPayoutResultsRequest(
                batch_id=s.exported, results=[pb.PayoutResult(line_id=s.lines[2] + NUL, state=pb.LINE_STATE_PAID)]
            ),
            metadata=OPERATOR,
            timeout=20,
        ),
        frozenset({INVALID}),
        "results[0].line_id",
    ),
    Odd(
        "ImportPaymentStatusReport batch_id with NUL",
        _report(lambda s: pain002(s.message_id, [(s.lines[2], "ACSC", None)]), lambda s: NUL + s.exported),
        ANY_PRECISE_MISS,
    ),
    Odd(
        "ExportPayoutBatch batch_id with NUL",
        lambda st, s: list(
            _p(st).ExportPayoutBatch(
                pb.ExportPayoutBatchRequest(batch_id=s.approved + NUL, format=pb.EXPORT_FORMAT_CSV),
                metadata=OPERATOR,
                timeout=20,
            )
        ),
        ANY_PRECISE_MISS,
    ),
    Odd(
        "CreatePayoutBatch request_id with NUL",
        lambda st, s: _p(st).CreatePayoutBatch(
            pb.CreatePayoutBatchRequest(policy_id=GIANT, period=2001, request_id="review-nul" + NUL + "0001"),
            metadata=OPERATOR,
            timeout=20,
        ),
        frozenset({INVALID}),
    ),  # 2001: a period the policy does not cover
    Odd(
        "ListEvaluations batch_id with NUL",
        lambda st, s: st.audit.ListEvaluations(
            audit_service_pb2.ListEvaluationsRequest(batch_id=s.exported + NUL), metadata=AUDITOR, timeout=20
        ),
        frozenset({INVALID, grpc.StatusCode.OK}),
    ),
    Odd(
        "GetEvaluation evaluation_id with NUL",
        lambda st, s: st.audit.GetEvaluation(
            audit_service_pb2.GetEvaluationRequest(evaluation_id="ev_" + NUL), metadata=AUDITOR, timeout=20
        ),
        ANY_PRECISE_MISS,
    ),
    # sizes
    Odd(
        "WithdrawPayoutLines naming 100,000 unknown lines",
        lambda st, s: _p(st).WithdrawPayoutLines(
            pb.WithdrawPayoutLinesRequest(
                batch_id=s.approved, line_ids=[f"{s.approved}-{i:06d}" for i in range(2, 100_002)], reason="账户变更"
            ),
            metadata=APPROVER,
            timeout=60,
        ),
        frozenset({INVALID}),
        "line_ids[0]",
    ),
    Odd(
        "ConfirmPayoutReturns with an empty line id",
        lambda st, s: _p(st).ConfirmPayoutReturns(
            pb.ConfirmPayoutReturnsRequest(batch_id=s.exported, line_ids=[s.lines[0], ""]),
            metadata=APPROVER,
            timeout=20,
        ),
        frozenset({INVALID}),
        "line_ids[1]",
    ),
    Odd(
        "CancelPayoutBatch with a reason of 4 MiB",
        lambda st, s: _p(st).CancelPayoutBatch(
            pb.CancelPayoutBatchRequest(batch_id=s.draft, reason="预" * (4 * 1024 * 1024 // 3 + 10)),
            metadata=OPERATOR,
            timeout=30,
        ),
        frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, INVALID}),
    ),
    Odd(
        "CancelPayoutBatch with a reason of 3.9 MiB",
        lambda st, s: _p(st).CancelPayoutBatch(
            pb.CancelPayoutBatchRequest(batch_id=s.draft, reason="x" * 3_900_000), metadata=OPERATOR, timeout=30
        ),
        frozenset({INVALID}),
        "reason",
    ),
    # status reports
    Odd(
        "a status report with a billion-laughs DOCTYPE",
        _report(lambda s: _with_doctype(s, _LAUGHS, "&j;")),
        frozenset({INVALID}),
        "data",
    ),
    Odd(
        "a status report with an external entity",
        _report(lambda s: _with_doctype(s, f'<!DOCTYPE Document [<!ENTITY x SYSTEM "file://{s.xxe_file}">]>', "&x;")),
        frozenset({INVALID}),
        "data",
    ),
    Odd("a status report of 24,000 unknown transfers (3.9 MB)", _report(_huge), frozenset({INVALID}), "data"),
    Odd("a status report nested 20,000 deep", _report(_deep), frozenset({INVALID}), "data"),
    Odd(
        "a status report that is not UTF-8",
        _report(lambda s: b"\xff\xfe<\x00D\x00" + bytes(range(256))),
        frozenset({INVALID}),
        "data",
    ),
    Odd(
        "a status report whose transaction is in another namespace",
        _report(_foreign_namespace),
        frozenset({INVALID}),
        "data",
    ),
    Odd(
        "a status report whose transaction is outside OrgnlPmtInfAndSts",
        _report(_misplaced),
        frozenset({INVALID}),
        "data",
    ),
    # A whole-file rejection (GrpSts RJCT, no transaction) is applied, not refused: every line
    # becomes RETURN_PENDING (tests/unit/payouts/test_payouts_status_report.py).
]


@pytest.mark.parametrize("case", ODD, ids=[c.name for c in ODD])
def test_odd_input_gets_a_precise_status_and_changes_nothing(
    stubs: Stubs, scene: Scene, api_server: RunningServer, case: Odd
) -> None:
    """Expected: one of the precise codes listed, never UNKNOWN/INTERNAL, and nothing changed.

    FAILS on PostgreSQL for the NUL cases that reach a query (the driver refuses NUL in text,
    `psycopg.DataError`, which status.py does not map: INTERNAL). FAILS on both databases for a
    status report whose only transaction is in another namespace or outside OrgnlPmtInfAndSts:
    `status_report.parse` reads `OrgnlPmtInfAndSts/TxInfAndSts` in its namespace only and ignores
    the rest (service/payouts/status_report.py:104), so a report of a rejection is answered OK,
    "0 paid, 0 rejected, 0 unchanged"."""
    before = money_snapshot(api_server.engine)
    code, details, error = _code(lambda: case.call(stubs, scene))
    assert code not in PRECISE_NOT, f"{case.name}: {code} {details}"
    assert code in case.codes, f"{case.name}: {code} {details!r}"
    if case.field is not None and code == INVALID and error is not None:
        assert case.field in field_violations(error), (case.name, field_violations(error))
    assert XXE_SECRET not in details
    if code != grpc.StatusCode.OK:
        assert money_snapshot(api_server.engine) == before, f"{case.name}: a refused call changed something"


def test_a_return_reason_longer_than_its_column_is_refused_precisely(
    stubs: Stubs, scene: Scene, api_server: RunningServer
) -> None:
    """FAILS on PostgreSQL. `batches._reason` lets a return reason of up to MAX_REASON_LENGTH =
    500 characters through (service/payouts/batches.py:54 and 400, called at 294), but the
    column is `return_reason VARCHAR(200)` (service/payouts/tables.py:99): 201-500 characters make
    PostgreSQL refuse the UPDATE (StringDataRightTruncation) and the caller gets INTERNAL. (SQLite
    does not enforce VARCHAR lengths and stores all 300.) Expected: INVALID_ARGUMENT naming
    results[0].return_reason (or the reason stored whole)."""
    line = scene.lines[3]
    reason = "AC04 " + "账户已销户" * 59  # 300 characters
    before = money_snapshot(api_server.engine)
    code, details, error = _code(lambda: Money(stubs).results(scene.exported, [(line, "RETURNED", reason)]))
    assert code not in PRECISE_NOT, f"a {len(reason)}-character return reason: {code} {details}"
    if code == INVALID:
        assert error is not None and "results[0].return_reason" in field_violations(error)
        assert money_snapshot(api_server.engine) == before
    else:
        assert code == grpc.StatusCode.OK, (code, details)
        stored = lines_by_uscc(api_server.engine, scene.exported)
        assert {v["grant_id"]: v["return_reason"] for v in stored.values()}[line] == reason


def test_duplicated_ids_act_once(stubs: Stubs, scene: Scene, api_server: RunningServer) -> None:
    """PASSES. A withdrawal naming one line 20,000 times withdraws it once (count and total drop
    by one line), a confirmation naming one return three times confirms it once, and the audit
    log still verifies."""
    money = Money(stubs)
    draft_before = money.get(scene.draft)
    after = money.withdraw(scene.draft, [scene.draft_lines[0]] * 20_000, "账户变更")
    assert (after.line_count, after.total_fen) == (
        draft_before.line_count - 1,
        draft_before.total_fen - money.lines(scene.draft)[0].amount_fen,
    )
    states = {line.line_id: line.state for line in money.lines(scene.draft)}
    assert states[scene.draft_lines[0]] == pb.LINE_STATE_WITHDRAWN
    confirmed = money.confirm(scene.exported, [scene.lines[0]] * 3)
    assert {line.line_id: line.state for line in money.lines(scene.exported)}[scene.lines[0]] == pb.LINE_STATE_RETURNED
    assert confirmed.state == pb.BATCH_STATE_EXPORTED
    assert money.verify().valid
