"""Bank files of an approved batch: CSV and ISO 20022 pain.001.001.09, checked beyond the XSD.

Each transfer goes to the payee sealed in its line when the batch reached DRAFT (and approved
with it), never to an account read now: if the registry's account changed since, the export is
refused until an approver withdraws those lines. The first export of a batch is stored, its
files' SHA-256 sealed in the ledger, and every later export returns the same bytes, so a message
id or an end-to-end id is never issued twice (both are also unique in the database).
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path

from lxml import etree
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from service.audit.ledger import ledger_transaction
from service.audit.records import Actor
from service.errors import BatchStateError
from service.payouts import batches
from service.payouts.payees import changed_payees, line_payee
from service.payouts.seals import MoneyEvent, export_digest, seal_event, sealed_export, unsealed
from service.payouts.states import BatchState, LineState
from service.payouts.tables import payout_export

PAIN_NS = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"
FIRST_CHANGED_SHOWN = 10  # lines named when an export is refused for changed payees
PAIN001_ACCOUNT_LENGTH = 34  # Othr/Id is a Max34Text


@dataclass(frozen=True)
class Payer:
    """The paying account (configuration): the UI fund's or the treasury's agent bank account."""

    name: str
    account_no: str
    bank_name: str


@dataclass(frozen=True)
class PaymentLine:
    end_to_end_id: str
    uscc: str
    payee_name: str
    account_no: str
    bank_name: str
    amount_fen: int
    purpose: str


def load_payers(path: Path | None) -> dict[str, Payer]:
    """Paying accounts by funding (`unemployment_insurance_fund`, `treasury`) from a YAML file."""
    if path is None:
        return {}
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {funding: Payer(str(p["name"]), str(p["account_no"]), str(p["bank_name"])) for funding, p in data.items()}


def message_id_for(batch_id: str) -> str:
    """The pain.001 message id of a batch (and back: the batch a status report answers)."""
    return batch_id.replace("pb_", "MSG", 1)[:35]


def batch_id_for_message(message_id: str) -> str:
    return message_id.replace("MSG", "pb_", 1)


def stored_export(engine: Engine, batch_id: str) -> tuple[bytes, bytes] | None:
    """The stored bank files of an exported batch - only as its export event sealed them."""
    with engine.connect() as conn:
        stored = conn.execute(select(payout_export).where(payout_export.c.batch_id == batch_id)).first()
        if stored is None:
            return None
        sealed = sealed_export(conn, batch_id)
    files = (bytes(stored.csv), bytes(stored.pain001))
    if sealed != export_digest(stored.message_id, *files, stored.exported_at):
        raise BatchStateError(
            f"the stored bank file of batch {batch_id} is not the one its export sealed: "
            "it is not handed out (run `benefits audit verify`)"
        )
    return files


def export(engine: Engine, batch_id: str, payer: Payer, actor: Actor) -> tuple[bytes, bytes]:
    """(CSV, pain.001 XML) of an APPROVED batch, which becomes EXPORTED; the stored files of an
    already EXPORTED batch. Refused while a pending line's payee differs from the registry's."""
    stored = stored_export(engine, batch_id)
    if stored is not None:
        return stored
    batch = batches.get_batch(engine, batch_id)
    if batch.state != BatchState.APPROVED:
        raise BatchStateError(f"batch {batch_id} is {batch.state}: only an APPROVED batch is exported")
    with engine.connect() as conn:
        pending = [line for line in batches.lines_of(conn, batch_id) if line["state"] == LineState.PENDING]
        altered = unsealed(conn, pending)
        changed = changed_payees(conn, pending)
    if altered:
        raise BatchStateError(
            f"{len(altered)} line(s) of batch {batch_id} differ from what the ledger sealed, "
            f"first: {', '.join(altered[:FIRST_CHANGED_SHOWN])}; nothing is exported (run "
            "`benefits audit verify`)"
        )
    if changed:
        first = ", ".join(f"{line['grant_id']} ({line['uscc']})" for line in changed[:FIRST_CHANGED_SHOWN])
        raise BatchStateError(
            f"{len(changed)} line(s) of batch {batch_id} would be paid to an account that is no "
            f"longer the registry's (changed or removed since DRAFT), first: {first}; a "
            "finance_approver withdraws them (WithdrawPayoutLines) and the rest is exported"
        )
    uncarried = [line for line in pending if len(line_payee(line).account_no) > PAIN001_ACCOUNT_LENGTH]
    if uncarried:
        first = ", ".join(f"{line['grant_id']} ({line['uscc']})" for line in uncarried[:FIRST_CHANGED_SHOWN])
        raise BatchStateError(
            f"{len(uncarried)} line(s) of batch {batch_id} are paid to an account number of more "
            f"than {PAIN001_ACCOUNT_LENGTH} characters, which a bank file cannot carry, first: "
            f"{first}; a finance_approver withdraws them and the rest is exported"
        )
    if not pending:
        raise BatchStateError(f"batch {batch_id} has no line left to pay: cancel it")
    lines = payment_lines(pending, batch)
    message_id = message_id_for(batch_id)
    created = datetime.now(UTC).replace(microsecond=0)
    csv_bytes = to_csv(lines, batch)
    xml = to_pain001(lines, batch, payer, message_id, created)
    check(xml, lines)
    with ledger_transaction(engine) as conn:
        # Under the chain-head lock, which every money event takes: another export made while
        # these files were built wins (its files are returned), and a line withdrawn meanwhile
        # means these files are not stored (they would pay it).
        made_meanwhile = conn.execute(select(payout_export).where(payout_export.c.batch_id == batch_id)).first()
        if made_meanwhile is not None:
            return bytes(made_meanwhile.csv), bytes(made_meanwhile.pain001)
        now = [line for line in batches.lines_of(conn, batch_id) if line["state"] == LineState.PENDING]
        if payment_lines(now, batch) != lines:
            raise BatchStateError(
                f"the lines of batch {batch_id} changed while its bank file was built (a "
                "withdrawal or a cancellation): export again"
            )
        conn.execute(
            insert(payout_export).values(
                batch_id=batch_id, message_id=message_id, csv=csv_bytes, pain001=xml, exported_at=created.isoformat()
            )
        )
        batches.mark_exported(conn, batch_id)
        seal_event(
            conn,
            MoneyEvent.EXPORT,
            batch_id,
            actor,
            export=export_digest(message_id, csv_bytes, xml, created.isoformat()),
        )
    return csv_bytes, xml


def payment_lines(lines: list[dict[str, object]], batch: batches.Batch) -> list[PaymentLine]:
    """The transfers of the given lines, each to its sealed payee."""
    out = []
    for line in lines:
        payee = line_payee(line)
        out.append(
            PaymentLine(
                str(line["grant_id"]),
                str(line["uscc"]),
                payee.name,
                payee.account_no,
                payee.bank,
                int(str(line["amount_fen"])),
                f"{batch.policy_id} {batch.period} {batch.batch_id}",
            )
        )
    return out


def yuan(fen: int) -> str:
    return str((Decimal(fen) / 100).quantize(Decimal("0.01")))


def to_csv(lines: list[PaymentLine], batch: batches.Batch) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "end_to_end_id",
            "uscc",
            "payee_name",
            "account_no",
            "bank_name",
            "amount_yuan",
            "policy_id",
            "batch_id",
            "purpose",
        ]
    )
    for line in lines:
        writer.writerow(
            [
                line.end_to_end_id,
                line.uscc,
                line.payee_name,
                line.account_no,
                line.bank_name,
                yuan(line.amount_fen),
                batch.policy_id,
                batch.batch_id,
                line.purpose,
            ]
        )
    return out.getvalue().encode("utf-8")


def to_pain001(
    lines: list[PaymentLine], batch: batches.Batch, payer: Payer, message_id: str, created: datetime
) -> bytes:
    total = yuan(sum(line.amount_fen for line in lines))

    def el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
        node = etree.SubElement(parent, f"{{{PAIN_NS}}}{tag}", attrib=attrs)
        if text is not None:
            node.text = text
        return node

    def account(parent: etree._Element, tag: str, number: str) -> None:
        el(el(el(el(parent, tag), "Id"), "Othr"), "Id", number)

    def agent(parent: etree._Element, tag: str, bank: str) -> None:
        el(el(el(parent, tag), "FinInstnId"), "Nm", bank[:140] or "NOTPROVIDED")

    root = etree.Element(f"{{{PAIN_NS}}}Document", nsmap={None: PAIN_NS})
    initiation = el(root, "CstmrCdtTrfInitn")
    header = el(initiation, "GrpHdr")
    el(header, "MsgId", message_id)
    el(header, "CreDtTm", created.strftime("%Y-%m-%dT%H:%M:%SZ"))
    el(header, "NbOfTxs", str(len(lines)))
    el(header, "CtrlSum", total)
    el(el(header, "InitgPty"), "Nm", payer.name[:140])
    info = el(initiation, "PmtInf")
    el(info, "PmtInfId", batch.batch_id[:35])
    el(info, "PmtMtd", "TRF")
    el(info, "NbOfTxs", str(len(lines)))
    el(info, "CtrlSum", total)
    el(el(info, "ReqdExctnDt"), "Dt", created.date().isoformat())
    el(el(info, "Dbtr"), "Nm", payer.name[:140])
    account(info, "DbtrAcct", payer.account_no)
    agent(info, "DbtrAgt", payer.bank_name)
    for line in lines:
        transfer = el(info, "CdtTrfTxInf")
        el(el(transfer, "PmtId"), "EndToEndId", line.end_to_end_id[:35])
        el(el(transfer, "Amt"), "InstdAmt", yuan(line.amount_fen), Ccy="CNY")
        agent(transfer, "CdtrAgt", line.bank_name)
        el(el(transfer, "Cdtr"), "Nm", line.payee_name[:140])
        account(transfer, "CdtrAcct", line.account_no)
        el(el(transfer, "RmtInf"), "Ustrd", line.purpose[:140])
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


_SCHEMA_LOCK = threading.Lock()  # lxml's schemas are not to be built or used by two threads at once


@cache
def _schema() -> etree.XMLSchema:
    import sepaxml

    path = Path(sepaxml.__file__).parent / "schemas" / "pain.001.001.09.xsd"
    return etree.XMLSchema(etree.parse(str(path)))


def check(xml: bytes, lines: list[PaymentLine]) -> None:
    """Validate against the ISO XSD, then what it cannot say: count, control sum, unique ids."""
    document = etree.fromstring(xml)
    with _SCHEMA_LOCK:
        schema = _schema()
        if not schema.validate(document):
            raise BatchStateError(f"pain.001 does not validate: {schema.error_log.last_error}")
    ns = {"p": PAIN_NS}
    total = yuan(sum(line.amount_fen for line in lines))
    for path in ("p:CstmrCdtTrfInitn/p:GrpHdr", "p:CstmrCdtTrfInitn/p:PmtInf"):
        node = document.find(path, ns)
        assert node is not None
        if (
            node.findtext("p:NbOfTxs", namespaces=ns) != str(len(lines))
            or node.findtext("p:CtrlSum", namespaces=ns) != total
        ):
            raise BatchStateError("pain.001 count or control sum does not match the lines")
    ids = [e.text for e in document.iterfind(".//p:EndToEndId", ns)]
    amounts = sum((Decimal(e.text or "0") for e in document.iterfind(".//p:InstdAmt", ns)), Decimal(0))
    if len(ids) != len(set(ids)) or len(ids) != len(lines) or str(amounts.quantize(Decimal("0.01"))) != total:
        raise BatchStateError("pain.001 end-to-end ids are not unique or amounts do not add up")
