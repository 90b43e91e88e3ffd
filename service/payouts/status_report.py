"""The bank's ISO 20022 payment status report (pain.002.001.10) read into line results.

No package we can install ships the pain.002 XSD, so the structure is checked explicitly:
the document element in the pain.002.001.10 namespace, one CstmrPmtStsRpt with a GrpHdr/MsgId,
the original message id (which must be the batch's pain.001 MsgId), and for every TxInfAndSts
an OrgnlEndToEndId (a line of the batch) and a TxSts from ISO's ExternalPaymentTransactionStatus1
code list. Everything refused names its place in the file (element and line).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree
from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.audit.records import Actor
from service.errors import BatchStateError, InvalidArgumentError
from service.payouts.batches import BankResult, Batch, get_batch, lines_of, record_results
from service.payouts.seals import read_lines
from service.payouts.states import LineState
from service.payouts.tables import MAX_RETURN_REASON_LENGTH, payout_export

PAIN002_NS = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"
# What each transaction status means for a line; None: no change yet (accepted, pending, ...).
TRANSACTION_STATUSES: dict[str, LineState | None] = {
    "ACSC": LineState.PAID,  # accepted, settlement completed (debtor side)
    "ACCC": LineState.PAID,  # accepted, settlement completed (creditor account credited)
    "RJCT": LineState.RETURNED,  # rejected: waits for a second principal (RETURN_PENDING)
    **dict.fromkeys(("ACCP", "ACSP", "PDNG", "ACTC", "ACWC", "ACWP", "RCVD", "PATC", "PRES")),
}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


@dataclass(frozen=True)
class Transaction:
    where: str  # `TxInfAndSts[2] (line 31)`
    end_to_end_id: str  # the line id
    status: str  # TxSts
    reason: str  # for RJCT: `<reason code> <additional information>`

    @property
    def result(self) -> BankResult | None:
        state = TRANSACTION_STATUSES[self.status]
        return None if state is None else BankResult(self.end_to_end_id, state, self.reason, self.where)


@dataclass(frozen=True)
class StatusReport:
    message_id: str  # the report's own MsgId
    original_message_id: str  # the pain.001 it answers
    group_status: str
    transactions: list[Transaction]
    group_rejection: str = ""  # the reason, when the bank rejected the whole file (GrpSts RJCT)

    @property
    def results(self) -> list[BankResult]:
        """The results that change a line (ACSC, ACCC, RJCT)."""
        return [r for r in (t.result for t in self.transactions) if r is not None]


def apply(engine: Engine, batch_id: str, data: bytes, actor: Actor) -> tuple[Batch, StatusReport]:
    """Record a status report's results for the batch it answers: matched by the message id of
    the batch's bank file and each transfer's end-to-end id; an unknown id is refused with its
    place and nothing is recorded. Results are recorded as by `record_results` (a return waits
    for a second principal; a repeated report changes nothing)."""
    get_batch(engine, batch_id)  # NOT_FOUND before anything is read of the file
    report = parse(data)
    with engine.connect() as conn:
        exported = conn.execute(select(payout_export.c.message_id).where(payout_export.c.batch_id == batch_id)).scalar()
        if exported is None:
            raise BatchStateError(f"batch {batch_id} has no bank file: a status report answers an exported batch")
        if report.original_message_id != exported:
            raise _bad(
                f"OrgnlMsgId {report.original_message_id!r} is not the message id of batch {batch_id}'s "
                f"bank file ({exported})"
            )
        lines = {
            str(line["grant_id"]): line for line in read_lines(conn, (t.end_to_end_id for t in report.transactions))
        }
    for transaction in report.transactions:
        line = lines.get(transaction.end_to_end_id)
        if line is None or line["batch_id"] != batch_id:
            raise _bad(
                f"{transaction.where}: unknown end-to-end id {transaction.end_to_end_id!r} (not a line of "
                f"batch {batch_id})"
            )
    results = report.results
    if report.group_rejection:  # every transfer of the file comes back, each awaiting a second principal
        with engine.connect() as conn:
            sent = [line for line in lines_of(conn, batch_id) if line["state"] in (LineState.PENDING, LineState.PAID)]
        results = [
            BankResult(str(line["grant_id"]), LineState.RETURNED, report.group_rejection, "GrpSts") for line in sent
        ]
    batch = record_results(engine, batch_id, results, actor) if results else get_batch(engine, batch_id)
    return batch, report


def _only_pain002_elements(root: etree._Element) -> None:
    """Every element is of pain.002.001.10 (but for supplementary data, which is free): an
    element of another namespace would be read as nothing."""
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue  # processing instructions
        if etree.QName(element).namespace != PAIN002_NS and not any(
            etree.QName(a).localname == "SplmtryData" for a in element.iterancestors()
        ):
            raise _bad(f"line {element.sourceline}: element {etree.QName(element).localname} is not of {PAIN002_NS}")


def parse(data: bytes) -> StatusReport:
    """Read a pain.002.001.10 document; InvalidArgumentError on field `data` naming the place."""
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise _bad(f"not well-formed XML: {exc}") from None
    if root.tag != _tag("Document"):
        raise _bad(f"line {root.sourceline}: the document element must be Document in {PAIN002_NS}, got {root.tag!s}")
    _only_pain002_elements(root)
    report = _one(root, "CstmrPmtStsRpt")
    message_id = _text(_one(_one(report, "GrpHdr"), "MsgId"))
    original = _one(report, "OrgnlGrpInfAndSts")
    original_message_id = _text(_one(original, "OrgnlMsgId"))
    group = original.find(_tag("GrpSts"))
    placed = report.findall(f"{_tag('OrgnlPmtInfAndSts')}/{_tag('TxInfAndSts')}")
    # lxml hands out one proxy per element while a reference to it lives (`placed` keeps them), so
    # membership by identity is exact; a set keeps it linear (24,000 transfers: quadratic took 30 s)
    placed_set = set(placed)
    stray = [t for t in root.iter(_tag("TxInfAndSts")) if t not in placed_set]
    if stray:
        raise _bad(
            f"TxInfAndSts (line {stray[0].sourceline}) is not inside CstmrPmtStsRpt/OrgnlPmtInfAndSts: "
            "it would be ignored, so the report is refused"
        )
    transactions: list[Transaction] = []
    for index, transaction in enumerate(placed):
        where = f"TxInfAndSts[{index}] (line {transaction.sourceline})"
        end_to_end = _text(_one(transaction, "OrgnlEndToEndId", where))
        status = _text(_one(transaction, "TxSts", where))
        if status not in TRANSACTION_STATUSES:
            raise _bad(f"{where}: transaction status {status!r} is not handled here; record that line by hand")
        reason = _reason(transaction) if TRANSACTION_STATUSES[status] == LineState.RETURNED else ""
        transactions.append(Transaction(where, end_to_end, status, reason))
    group_status = _text(group) if group is not None else ""
    if group_status == "RJCT" and not transactions:  # the bank refused the whole file: nothing was paid
        reason = _reason(original) if original.find(_tag("StsRsnInf")) is not None else "RJCT"
        return StatusReport(message_id, original_message_id, group_status, [], group_rejection=reason)
    return StatusReport(message_id, original_message_id, group_status, transactions)


def _reason(transaction: etree._Element) -> str:
    """`<code> <additional information>` of the first StsRsnInf, or the status when none is given."""
    info = transaction.find(_tag("StsRsnInf"))
    if info is None:
        return "RJCT"
    code = info.findtext(f"{_tag('Rsn')}/{_tag('Cd')}") or info.findtext(f"{_tag('Rsn')}/{_tag('Prtry')}") or "RJCT"
    extra = " ".join((e.text or "").strip() for e in info.iterfind(_tag("AddtlInf")))
    return f"{code.strip()} {extra}".strip()[:MAX_RETURN_REASON_LENGTH]


def _one(parent: etree._Element, name: str, where: str = "") -> etree._Element:
    found = parent.findall(_tag(name))
    place = where or f"{etree.QName(parent).localname} (line {parent.sourceline})"
    if len(found) != 1:
        raise _bad(f"{place}: expected one {name}, found {len(found)}")
    return found[0]


def _text(element: etree._Element) -> str:
    text = (element.text or "").strip()
    if not text:
        raise _bad(f"{etree.QName(element).localname} (line {element.sourceline}) is empty")
    return text


def _tag(name: str) -> str:
    return f"{{{PAIN002_NS}}}{name}"


def _bad(reason: str) -> InvalidArgumentError:
    return InvalidArgumentError([("data", reason)])
