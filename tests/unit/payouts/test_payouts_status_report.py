"""pain.002.001.10 status reports: what each transaction status means, and every refusal names
its place in the file."""

from __future__ import annotations

import pytest

from service.errors import InvalidArgumentError
from service.payouts.states import LineState
from service.payouts.status_report import PAIN002_NS, parse


def _report(*transactions: tuple[str, str, str], original: str = "MSG0001") -> bytes:
    body = "".join(
        f"<TxInfAndSts><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId><TxSts>{status}</TxSts>"
        + (f"<StsRsnInf><Rsn><Cd>{code}</Cd></Rsn><AddtlInf>账户已销户</AddtlInf></StsRsnInf>" if code else "")
        + "</TxInfAndSts>\n"
        for e2e, status, code in transactions
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="{PAIN002_NS}"><CstmrPmtStsRpt>\n'
        "<GrpHdr><MsgId>BANK-1</MsgId><CreDtTm>2026-12-02T08:00:00Z</CreDtTm></GrpHdr>\n"
        f"<OrgnlGrpInfAndSts><OrgnlMsgId>{original}</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId>"
        "<GrpSts>PART</GrpSts></OrgnlGrpInfAndSts>\n"
        f"<OrgnlPmtInfAndSts><OrgnlPmtInfId>pb_1</OrgnlPmtInfId>\n{body}</OrgnlPmtInfAndSts>\n"
        "</CstmrPmtStsRpt></Document>\n"
    ).encode()


def test_settled_rejected_and_pending_transactions() -> None:
    report = parse(_report(("L1", "ACSC", ""), ("L2", "RJCT", "AC04"), ("L3", "PDNG", ""), ("L4", "ACCP", "")))
    assert (report.message_id, report.original_message_id, report.group_status) == ("BANK-1", "MSG0001", "PART")
    assert [(r.line_id, r.state, r.reason) for r in report.results] == [
        ("L1", LineState.PAID, ""),
        ("L2", LineState.RETURNED, "AC04 账户已销户"),
    ]
    assert len(report.transactions) == 4


def _refusal(data: bytes) -> str:
    with pytest.raises(InvalidArgumentError) as caught:
        parse(data)
    ((field, reason),) = caught.value.violations
    assert field == "data"
    return reason


def test_an_unhandled_status_is_refused_with_its_element_and_line() -> None:
    reason = _refusal(_report(("L1", "ACSC", ""), ("L2", "CANC", "")))
    assert reason.startswith("TxInfAndSts[1] (line 7): transaction status 'CANC'")


def test_a_transaction_without_its_end_to_end_id_is_refused_with_its_place() -> None:
    data = _report(("L1", "ACSC", "")).replace(b"<OrgnlEndToEndId>L1</OrgnlEndToEndId>", b"")
    assert _refusal(data).startswith("TxInfAndSts[0] (line 6): expected one OrgnlEndToEndId, found 0")


@pytest.mark.parametrize(
    ("data", "start"),
    [
        (b"<not-xml", "not well-formed XML"),
        (b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"/>', "line 1: the document element"),
        (f'<Document xmlns="{PAIN002_NS}"/>'.encode(), "Document (line 1): expected one CstmrPmtStsRpt"),
    ],
)
def test_what_is_no_pain002_document_is_refused(data: bytes, start: str) -> None:
    assert _refusal(data).startswith(start)


def test_external_entities_are_never_read() -> None:
    hostile = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        + _report(("&e;", "ACSC", "")).split(b"?>", 1)[1]
    )
    reason = _refusal(hostile)  # the entity stays unexpanded: an empty end-to-end id
    assert "OrgnlEndToEndId (line 6) is empty" in reason and "root:" not in reason


def test_a_whole_file_rejected_by_the_bank_rejects_every_transfer() -> None:
    data = _report().replace(
        b"<GrpSts>PART</GrpSts>", b"<GrpSts>RJCT</GrpSts><StsRsnInf><Rsn><Cd>AM04</Cd></Rsn></StsRsnInf>"
    )
    report = parse(data)
    assert (report.group_status, report.group_rejection, report.transactions) == ("RJCT", "AM04", [])


def test_a_transaction_outside_its_place_or_namespace_is_refused_not_ignored() -> None:
    outside = _report().replace(
        b"<OrgnlPmtInfAndSts>",
        b"<TxInfAndSts><OrgnlEndToEndId>L9</OrgnlEndToEndId><TxSts>RJCT</TxSts></TxInfAndSts><OrgnlPmtInfAndSts>",
    )
    assert "is not inside CstmrPmtStsRpt/OrgnlPmtInfAndSts" in _refusal(outside)
    foreign = _report(("L1", "RJCT", "AC04")).replace(b"<TxInfAndSts>", b'<TxInfAndSts xmlns="urn:other">')
    assert "is not of urn:iso:std:iso:20022:tech:xsd:pain.002.001.10" in _refusal(foreign)
