"""A simulated bank for demonstrations: answers a pain.001 bank file with a pain.002.001.10
status report, settling every transfer but the ones it is told to reject."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from lxml import etree

from service.payouts.export import PAIN_NS
from service.payouts.status_report import PAIN002_NS


def status_report(pain001: bytes, rejected: Mapping[str, str], *, message_id: str = "BANK-STS-0001") -> bytes:
    """ACSC for every transfer of `pain001`, RJCT with the given reason code for the end-to-end
    ids in `rejected` (id -> ISO reason code, e.g. AC04: account closed)."""
    ns = {"p": PAIN_NS}
    original = etree.fromstring(pain001)
    report = etree.Element(f"{{{PAIN002_NS}}}Document", nsmap={None: PAIN002_NS})

    def el(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
        node = etree.SubElement(parent, f"{{{PAIN002_NS}}}{tag}")
        node.text = text
        return node

    body = el(report, "CstmrPmtStsRpt")
    header = el(body, "GrpHdr")
    el(header, "MsgId", message_id)
    el(header, "CreDtTm", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    group = el(body, "OrgnlGrpInfAndSts")
    el(group, "OrgnlMsgId", original.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId", namespaces=ns))
    el(group, "OrgnlMsgNmId", "pain.001.001.09")
    el(group, "GrpSts", "PART" if rejected else "ACSC")
    payments = el(body, "OrgnlPmtInfAndSts")
    el(payments, "OrgnlPmtInfId", original.findtext("p:CstmrCdtTrfInitn/p:PmtInf/p:PmtInfId", namespaces=ns))
    for end_to_end in original.iterfind(".//p:CdtTrfTxInf/p:PmtId/p:EndToEndId", ns):
        transaction = el(payments, "TxInfAndSts")
        el(transaction, "OrgnlEndToEndId", end_to_end.text)
        code = rejected.get(end_to_end.text or "")
        el(transaction, "TxSts", "RJCT" if code else "ACSC")
        if code:
            el(el(el(transaction, "StsRsnInf"), "Rsn"), "Cd", code)
    return bytes(etree.tostring(report, xml_declaration=True, encoding="UTF-8", pretty_print=True))
