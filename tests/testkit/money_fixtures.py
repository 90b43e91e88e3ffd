"""Helpers of the money-path tests (tamper matrix, four eyes, payees, pain.002, bad input,
exclusions): a tiny registry of little-giant / single-champion enterprises whose accounts can be
changed, in-process actors, an attacker's connection (append-only triggers dropped, everything
rolled back afterwards), a pain.002.001.10 writer, and a snapshot of the money tables to show
that a refused call changed nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lxml import etree
from sqlalchemy import Column, Table, select
from sqlalchemy.engine import Connection, Engine

from enterprise_registry.importer import load_records
from enterprise_registry.uscc import make, organisation_check_character
from rules.loader import PolicySet, load_policy_dir
from service.audit.ledger import ledger_entry
from service.audit.records import Actor, evaluation_record
from service.catalogue import CATALOGUE
from service.payouts.export import Payer
from service.payouts.tables import grant, payout_batch, payout_export, payout_line_seal
from testkit.audit_checks import drop_append_only_triggers
from testkit.paths import POLICIES_DIR

if TYPE_CHECKING:  # imported where called, as before: only the annotations need them here
    import grpc
    from benefits.v1 import audit_service_pb2, payout_service_pb2

    from service.server import RunningServer
    from testkit.api_fixtures import Stubs

# gRPC call metadata: (key, value) pairs
Metadata = Sequence[tuple[str, str]]

OPERATOR = Actor("test-finance_operator", "finance_operator")
APPROVER = Actor("test-finance_approver", "finance_approver")
SECOND_APPROVER = Actor("test-finance_approver-2", "finance_approver")
PAYER = Payer("襄阳市财政局国库支付中心", "4200000000000000001", "中国人民银行襄阳市分行")
PAYERS_YAML = (
    "treasury: {name: 襄阳市财政局国库支付中心, account_no: '4200000000000000001', bank_name: 中国人民银行襄阳市分行}\n"
)
GIANT, CHAMPION = "little-giant-reward", "single-champion-reward"
GIANT_FEN, CHAMPION_FEN = 50_000_000, 100_000_000
BANK_NAME = "中国工商银行襄阳分行"
PAIN002_NS = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"
PAIN001_NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"}


def uscc(n: int, prefix: str = "MA4T") -> str:
    """A valid synthetic USCC, distinct for every (prefix, n)."""
    org8 = f"{prefix}{n:04d}"
    return make("91420600" + org8 + organisation_check_character(org8))


def account_of(n: int, version: int = 0) -> str:
    """A 19-digit account number, distinct for every (enterprise number, version)."""
    return f"62220{version:02d}{n:012d}"


def enterprise(
    code: str,
    account_no: str | None,
    *,
    as_of: str = "2025-12-31",
    account_name: str | None = None,
    bank_name: str = BANK_NAME,
) -> dict[str, object]:
    name = f"襄阳示例{code[-5:]}有限公司"
    account = (
        None
        if account_no is None
        else {"bank_name": bank_name, "account_no": account_no, "account_name": account_name or name}
    )
    return {
        "kind": "enterprise",
        "uscc": code,
        "source": "market_regulation",
        "as_of": as_of,
        "name": name,
        "org_type": "enterprise",
        "region_code": "420606",
        "industry_code": "C3670",
        "established_on": "2010-01-01",
        "status": "active",
        "labor_dispatch": False,
        "bank_account": account,
    }


def title(code: str, year: int, kind: str = "little_giant") -> dict[str, object]:
    """A first-time national title granted in `year`: eligible for the title's reward in that period."""
    return {
        "kind": "qualification",
        "uscc": code,
        "source": "industry_it",
        "as_of": f"{year}-12-31",
        "type": kind,
        "level": "national",
        "first_time": True,
        "granted_on": f"{year}-07-01",
        "certificate_no": f"{kind[:2].upper()}-{code[-6:]}-{year}",
    }


def titled(code: str, n: int, year: int, kind: str = "little_giant") -> list[dict[str, object]]:
    return [enterprise(code, account_of(n)), title(code, year, kind)]


def change_account(
    engine: Engine,
    code: str,
    account_no: str | None,
    *,
    as_of: str = "2026-01-15",
    account_name: str | None = None,
    bank_name: str = BANK_NAME,
) -> None:
    """The registry's account of an enterprise, re-imported with a newer as_of."""
    load_records([enterprise(code, account_no, as_of=as_of, account_name=account_name, bank_name=bank_name)], engine)


# ----------------------------------------------------------------------------------------- a budget

BUDGET_POLICY = "lg-budget"


def budget_policies(folder: Path) -> PolicySet:
    """A copy of the little-giant reward (`BUDGET_POLICY`, outside any conflict group) with a budget
    of 100万元 - two awards of 50万元 - written into `folder` (which must not exist yet) and loaded
    as the only policy there."""
    source = (POLICIES_DIR / f"{GIANT}.yaml").read_text(encoding="utf-8")
    source = source.replace(f"id: {GIANT}\n", f"id: {BUDGET_POLICY}\n")
    source = "\n".join(line for line in source.splitlines() if not line.startswith("conflict_group:")) + "\n"
    source = source.replace("fact_year: period\n", "fact_year: period\nbudget: 100万元\n")
    folder.mkdir()
    (folder / f"{BUDGET_POLICY}.yaml").write_text(source, encoding="utf-8")
    loaded = load_policy_dir(folder, CATALOGUE, require_tests=False)
    assert loaded.get(BUDGET_POLICY).budget_fen == 100_000_000
    return loaded


# ----------------------------------------------------------------------------------------- attacker


@contextmanager
def attacker(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction, append-only triggers of the seals dropped; everything it
    did (trigger drops included: DDL is transactional on both databases) is rolled back after."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")  # pysqlite would otherwise autocommit the DDL
        try:
            drop_append_only_triggers(conn, payout_line_seal.name)
            yield conn
        finally:
            conn.rollback()


# ----------------------------------------------------------------------------------------- snapshots


def money_snapshot(engine: Engine) -> dict[str, object]:
    """Every row of the money tables, the evaluation records and the ledger's length: equal
    before and after a refused call means it changed nothing."""
    with engine.connect() as conn:

        def rows(table: Table, key: list[Column[Any]]) -> list[tuple[object, ...]]:
            return [tuple(r) for r in conn.execute(select(table).order_by(*key))]

        return {
            "grant_award": rows(grant, [grant.c.grant_id]),
            "payout_batch": rows(payout_batch, [payout_batch.c.batch_id]),
            "payout_export": rows(payout_export, [payout_export.c.batch_id]),
            "payout_line_seal": rows(payout_line_seal, [payout_line_seal.c.ledger_seq, payout_line_seal.c.leaf_index]),
            "evaluation_record": len(rows(evaluation_record, [evaluation_record.c.evaluation_id])),
            "ledger": conn.execute(select(ledger_entry.c.seq).order_by(ledger_entry.c.seq.desc()).limit(1)).scalar(),
        }


def lines_by_uscc(engine: Engine, batch_id: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {
            str(r.uscc): dict(r._mapping)
            for r in conn.execute(select(grant).where(grant.c.batch_id == batch_id).order_by(grant.c.grant_id))
        }


def standing_grants(engine: Engine, code: str, policy_id: str, period: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(grant).where(
                    grant.c.uscc == code,
                    grant.c.policy_id == policy_id,
                    grant.c.period == period,
                    grant.c.released == "",
                )
            )
        ]


# ----------------------------------------------------------------------------------------- pain.002


def pain002(
    original_message_id: str, transactions: Sequence[tuple[str, str, str | None]], *, message_id: str = "BANKRPT0001"
) -> bytes:
    """A pain.002.001.10 status report: transactions are (end-to-end id, TxSts, reason code or None)."""
    ns = PAIN002_NS

    def el(parent: etree._Element, tag: str, value: str | None = None) -> etree._Element:
        node = etree.SubElement(parent, f"{{{ns}}}{tag}")
        if value is not None:
            node.text = value
        return node

    root = etree.Element(f"{{{ns}}}Document", nsmap={None: ns})
    report = el(root, "CstmrPmtStsRpt")
    header = el(report, "GrpHdr")
    el(header, "MsgId", message_id)
    el(header, "CreDtTm", "2026-01-20T10:00:00Z")
    original = el(report, "OrgnlGrpInfAndSts")
    el(original, "OrgnlMsgId", original_message_id)
    el(original, "OrgnlMsgNmId", "pain.001.001.09")
    el(original, "GrpSts", "PART")
    info = el(report, "OrgnlPmtInfAndSts")
    el(info, "OrgnlPmtInfId", "PMTINF1")
    for index, (end_to_end, status, reason) in enumerate(transactions):
        tx = el(info, "TxInfAndSts")
        el(tx, "StsId", f"STS{index:04d}")
        el(tx, "OrgnlEndToEndId", end_to_end)
        el(tx, "TxSts", status)
        if reason is not None:
            el(el(el(tx, "StsRsnInf"), "Rsn"), "Cd", reason)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def creditor_accounts(pain001: bytes) -> dict[str, str]:
    """End-to-end id -> creditor account number of every transfer in a pain.001."""
    document = etree.fromstring(pain001)

    def text_of(tx: etree._Element, path: str) -> str:
        found = tx.findtext(path, namespaces=PAIN001_NS)
        assert found is not None, f"a pain.001 transfer without {path}"
        return found

    return {
        text_of(tx, "p:PmtId/p:EndToEndId"): text_of(tx, "p:CdtrAcct/p:Id/p:Othr/p:Id")
        for tx in document.iterfind(".//p:CdtTrfTxInf", PAIN001_NS)
    }


def write_payers(folder: Path) -> Path:
    path = folder / "payers.yaml"
    path.write_text(PAYERS_YAML, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------- gRPC


def rpc_code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """(status code, details) a call ends with; (OK, '') when it returns."""
    import grpc

    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


class Money:
    """PayoutService calls with the roles of api_fixtures' auth file."""

    def __init__(self, stubs: Stubs) -> None:
        from testkit.api_fixtures import as_role

        self.stubs = stubs
        self.operator, self.approver = as_role("finance_operator"), as_role("finance_approver")

    # The generated stubs are untyped: each reply is annotated with the message its RPC returns.
    def create(self, policy_id: str, period: int, request_id: str) -> payout_service_pb2.PayoutBatch:
        from benefits.v1 import payout_service_pb2 as pb

        from testkit.api_fixtures import finished_batch

        started: pb.PayoutBatch = self.stubs.payout.CreatePayoutBatch(
            pb.CreatePayoutBatchRequest(policy_id=policy_id, period=period, request_id=request_id),
            metadata=self.operator,
            timeout=20,
        )
        return finished_batch(self.stubs, started.batch_id)

    def get(self, batch_id: str) -> payout_service_pb2.PayoutBatch:
        from benefits.v1 import payout_service_pb2 as pb

        batch: pb.PayoutBatch = self.stubs.payout.GetPayoutBatch(
            pb.GetPayoutBatchRequest(batch_id=batch_id), metadata=self.operator, timeout=20
        )
        return batch

    def lines(self, batch_id: str, *, payee_changed: bool = False) -> list[payout_service_pb2.PayoutLine]:
        from benefits.v1 import payout_service_pb2 as pb

        out: list[pb.PayoutLine] = []
        token = ""
        while True:
            page: pb.ListPayoutLinesResponse = self.stubs.payout.ListPayoutLines(
                pb.ListPayoutLinesRequest(
                    batch_id=batch_id, page_size=2, page_token=token, payee_changed=payee_changed
                ),
                metadata=self.approver,
                timeout=20,
            )
            out += list(page.lines)
            token = page.next_page_token
            if not token:
                return out

    def approve(self, batch_id: str) -> payout_service_pb2.PayoutBatch:
        from benefits.v1 import payout_service_pb2 as pb

        batch: pb.PayoutBatch = self.stubs.payout.ApprovePayoutBatch(
            pb.ApprovePayoutBatchRequest(batch_id=batch_id), metadata=self.approver, timeout=20
        )
        return batch

    def export(self, batch_id: str, fmt: str = "pain001", metadata: Metadata | None = None) -> bytes:
        from benefits.v1 import payout_service_pb2 as pb

        kind = pb.EXPORT_FORMAT_PAIN_001 if fmt == "pain001" else pb.EXPORT_FORMAT_CSV
        return b"".join(
            chunk.data
            for chunk in self.stubs.payout.ExportPayoutBatch(
                pb.ExportPayoutBatchRequest(batch_id=batch_id, format=kind),
                metadata=metadata or self.operator,
                timeout=20,
            )
        )

    def results(
        self, batch_id: str, results: list[tuple[str, str, str]], metadata: Metadata | None = None
    ) -> payout_service_pb2.PayoutBatch:
        """results: (line id, "PAID" | "RETURNED", reason)."""
        from benefits.v1 import payout_service_pb2 as pb

        states = {"PAID": pb.LINE_STATE_PAID, "RETURNED": pb.LINE_STATE_RETURNED}
        batch: pb.PayoutBatch = self.stubs.payout.RecordPayoutResults(
            pb.RecordPayoutResultsRequest(
                batch_id=batch_id,
                results=[
                    pb.PayoutResult(line_id=line_id, state=states[state], return_reason=reason)
                    for line_id, state, reason in results
                ],
            ),
            metadata=metadata or self.operator,
            timeout=20,
        )
        return batch

    def confirm(
        self, batch_id: str, line_ids: list[str], metadata: Metadata | None = None
    ) -> payout_service_pb2.PayoutBatch:
        from benefits.v1 import payout_service_pb2 as pb

        batch: pb.PayoutBatch = self.stubs.payout.ConfirmPayoutReturns(
            pb.ConfirmPayoutReturnsRequest(batch_id=batch_id, line_ids=line_ids),
            metadata=metadata or self.approver,
            timeout=20,
        )
        return batch

    def withdraw(
        self, batch_id: str, line_ids: list[str], reason: str, metadata: Metadata | None = None
    ) -> payout_service_pb2.PayoutBatch:
        from benefits.v1 import payout_service_pb2 as pb

        batch: pb.PayoutBatch = self.stubs.payout.WithdrawPayoutLines(
            pb.WithdrawPayoutLinesRequest(batch_id=batch_id, line_ids=line_ids, reason=reason),
            metadata=metadata or self.approver,
            timeout=20,
        )
        return batch

    def cancel(self, batch_id: str, reason: str, metadata: Metadata | None = None) -> payout_service_pb2.PayoutBatch:
        from benefits.v1 import payout_service_pb2 as pb

        batch: pb.PayoutBatch = self.stubs.payout.CancelPayoutBatch(
            pb.CancelPayoutBatchRequest(batch_id=batch_id, reason=reason),
            metadata=metadata or self.operator,
            timeout=20,
        )
        return batch

    def status_report(
        self, batch_id: str, data: bytes, metadata: Metadata | None = None
    ) -> payout_service_pb2.ImportPaymentStatusReportResponse:
        from benefits.v1 import payout_service_pb2 as pb

        report: pb.ImportPaymentStatusReportResponse = self.stubs.payout.ImportPaymentStatusReport(
            pb.ImportPaymentStatusReportRequest(batch_id=batch_id, data=data),
            metadata=metadata or self.operator,
            timeout=20,
        )
        return report

    def verify(self) -> audit_service_pb2.VerifyAuditLogResponse:
        from benefits.v1 import audit_service_pb2

        from testkit.api_fixtures import as_role

        verified: audit_service_pb2.VerifyAuditLogResponse = self.stubs.audit.VerifyAuditLog(
            audit_service_pb2.VerifyAuditLogRequest(), metadata=as_role("auditor"), timeout=60
        )
        return verified


@pytest.fixture(scope="module")
def api_server(
    api_db_url: str, money_records: list[dict[str, object]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A real server over the test module's registry: the module defines the fixture
    `money_records`, imports this one and names it in its `__all__` (so that it stands in for the
    API tests' server of tests/integration/conftest.py)."""
    with money_server(api_db_url, money_records, tmp_path_factory.mktemp("money")) as running:
        yield running


@pytest.fixture(scope="module")
def money(stubs: Stubs) -> Money:
    """The money calls over the module's server (each test file's `api_server`, over its registry);
    a fixture: a test file imports it and names it in its `__all__`."""
    return Money(stubs)


@contextmanager
def money_server(db_url: str, records: list[dict[str, object]], folder: Path) -> Iterator[RunningServer]:
    """A real server over `records` with a paying account for treasury-funded policies."""
    from testkit.api_fixtures import serving

    with serving(db_url, records, folder, payers_file=write_payers(folder), batch_chunk_size=3) as running:
        yield running
