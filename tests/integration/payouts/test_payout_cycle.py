"""The finance bureau's whole payout cycle through gRPC, for every reference policy over the
synthetic registry: create a batch, watch it run in chunks to DRAFT, check its lines against an
independent in-process evaluation (就高不重复 included), approve it with a second principal,
export the bank files (CSV and pain.001), record the bank's results (one line returned) until
it is SETTLED, then pay the returned enterprise once more - and nobody a third time.

Then, for the two national titles (one conflict group): a higher title named later tops the
lower award up by the difference, once - and when the bank returns the lower line after such a
top-up, the enterprise must still end up with the highest award.

After each of these tests: no (enterprise, policy, period) holds two standing grants, no enterprise
more than its group's highest award, and the audit ledger verifies. No test needs another to have
run first: the top-up tests run on a server of their own, whose two title cycles their fixture
runs. A second, deliberately slow server
(one enterprise per chunk) shows that a request for a policy and period whose batch is still
running is refused, naming the running batch, and that of a burst of requests exactly one starts.

Periods: 2025 for four policies; the two national-title rewards (one conflict group) run for
2024, the year in which this registry holds enterprises eligible for both titles as well as
for one only, so the group's stacking is really exercised.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import sepaxml
from benefits.v1 import audit_service_pb2, evaluation_pb2, registry_service_pb2
from benefits.v1 import payout_service_pb2 as pb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from testkit.api_fixtures import TIMEOUT, Stubs, as_role, channel_stubs, finished_batch, rpc_error, serving
from testkit.databases import private_schema
from testkit.paths import RULES_DIR

from enterprise_registry.synthetic import generate
from rules.evaluator import evaluate
from rules.loader import LoadedPolicy, PolicySet, PolicyStore
from rules.values import Outcome
from service.audit import checkpoints
from service.audit.ledger import ledger_entry
from service.catalogue import CATALOGUE
from service.facts_documents import DocumentSource, build_document
from service.payouts.tables import grant, payout_batch
from service.server import RunningServer

OPERATOR, APPROVER, AUDITOR = as_role("finance_operator"), as_role("finance_approver"), as_role("auditor")
OPERATOR_PRINCIPAL, APPROVER_PRINCIPAL = "test-finance_operator", "test-finance_approver"

REGISTRY_SIZE, REGISTRY_SEED = 400, 117  # seconds a cycle; every policy pays several, both titles one
CHUNK_SIZE = 50  # enterprises a running batch commits at a time
PAGE_SIZE = 37  # lines per ListPayoutLines page: not a divisor of anything
CYCLES = [
    ("stable-jobs-refund", 2025),
    ("job-expansion-subsidy", 2025),
    ("above-size-entry-reward", 2025),
    ("high-tech-reward", 2025),
    ("little-giant-reward", 2024),
    ("single-champion-reward", 2024),
]
LEDGER_KEY_FILE = "ledger-key.pem"  # next to the checkpoint file
VERIFY_TIMEOUT = 120.0  # VerifyAuditLog re-reads every record of every batch
RETURN_REASON = "AC04 账户已销户"
PAIN_NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"}
PAYERS_YAML = """\
unemployment_insurance_fund:
  {name: 襄阳市失业保险基金, account_no: '4200000000000000002', bank_name: 中国建设银行襄阳分行}
treasury:
  {name: 襄阳市财政局国库支付中心, account_no: '4200000000000000001', bank_name: 中国人民银行襄阳市分行}
"""

SLOW_REGISTRY_SIZE, SLOW_REGISTRY_SEED = 100, 5  # one enterprise a chunk: a batch runs for a second or more
SLOW_CANDIDATES = [
    ("stable-jobs-refund", 2025),
    ("job-expansion-subsidy", 2025),
    ("stable-jobs-refund", 2024),
    ("high-tech-reward", 2025),
    ("high-tech-reward", 2024),
    ("above-size-entry-reward", 2025),
    ("above-size-entry-reward", 2024),
]


@dataclass(frozen=True)
class Grant:
    """A payment line, as ListPayoutLines showed it."""

    line_id: str
    amount_fen: int
    batch_id: str


GrantKey = tuple[str, str, int]  # (uscc, policy id, period)


# ---------------------------------------------------------------------------------------------
# Servers.
@contextmanager
def paying_server(db_url: str, folder: Path) -> Iterator[RunningServer]:
    """A server over the synthetic registry with paying accounts, a ledger key and checkpoints."""
    payers = folder / "payers.yaml"
    payers.write_text(PAYERS_YAML, encoding="utf-8")
    checkpoints.generate_key(folder / LEDGER_KEY_FILE)
    with serving(
        db_url,
        list(generate(REGISTRY_SIZE, REGISTRY_SEED)),
        folder,
        payers_file=payers,
        batch_chunk_size=CHUNK_SIZE,
        ledger_key=folder / LEDGER_KEY_FILE,
        checkpoint_file=folder / "checkpoints.jsonl",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api_server(api_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with paying_server(api_db_url, tmp_path_factory.mktemp("payout-cycle")) as running:
        yield running


@contextmanager
def another_database(api_db_url: str, folder: Path) -> Iterator[str]:
    """A fresh database of the same kind as `api_db_url`."""
    if api_db_url.startswith("sqlite"):
        yield f"sqlite:///{folder / 'another.db'}"
    else:
        with private_schema() as url:
            yield url


@pytest.fixture(scope="module")
def slow_server(api_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose batches commit one enterprise at a time, so they stay RUNNING for a while."""
    folder = tmp_path_factory.mktemp("slow-batches")
    with (
        another_database(api_db_url, folder) as url,
        serving(url, list(generate(SLOW_REGISTRY_SIZE, SLOW_REGISTRY_SEED)), folder, batch_chunk_size=1) as running,
    ):
        yield running


@pytest.fixture(scope="module")
def slow_stubs(slow_server: RunningServer) -> Iterator[Stubs]:
    yield from channel_stubs(slow_server.port)


# ---------------------------------------------------------------------------------------------
# The independent expectation: every enterprise evaluated in-process, grants tracked from the API.
class Eligibility:
    """Who is eligible for what, evaluated here (not by the server) from the registry's rows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.policies: PolicySet = PolicyStore(RULES_DIR, CATALOGUE).current
        self.today = date.today()  # the day the server evaluates a batch it creates today
        self.reload()

    def reload(self) -> None:
        """Read the registry again (after facts were imported)."""
        self.rows = list(DocumentSource(self.engine).all_rows())
        self._awards: dict[tuple[str, int], dict[str, int]] = {}

    def awards(self, policy_id: str, period: int) -> dict[str, int]:
        """USCC -> amount in fen of every enterprise ELIGIBLE under the policy for the period."""
        if (policy_id, period) not in self._awards:
            policy = self.policies.get(policy_id)
            compiled = policy.compiled(period)
            results = {
                rows.uscc: evaluate(compiled, build_document(rows, policy.fact_year(period)), today=self.today)
                for rows in self.rows
            }
            self._awards[policy_id, period] = {
                uscc: r.amount_fen for uscc, r in results.items() if r.outcome == Outcome.ELIGIBLE
            }
        return self._awards[policy_id, period]

    def group_of(self, policy_id: str, period: int) -> list[LoadedPolicy]:
        """The policies of the conflict group (itself included) covering the period."""
        group = self.policies.get(policy_id).model.conflict_group
        if not group:
            return [self.policies.get(policy_id)]
        return [p for p in self.policies if p.model.conflict_group == group and p.covers(period)]


def expected_candidates(
    eligibility: Eligibility, standing: dict[GrantKey, Grant], policy_id: str, period: int
) -> dict[str, int]:
    """Eligible enterprises a new batch evaluates as candidates (those without a standing grant of
    this policy and period), with their full amounts."""
    return {
        uscc: fen
        for uscc, fen in eligibility.awards(policy_id, period).items()
        if (uscc, policy_id, period) not in standing
    }


def expected_payments(
    eligibility: Eligibility, standing: dict[GrantKey, Grant], policy_id: str, period: int
) -> dict[str, int]:
    """USCC -> fen a new batch of the policy should pay. 就高不重复: within a conflict group only
    the highest award is paid (equal awards: the policy id first in order), less whatever a
    standing grant of the group already paid the enterprise for the period."""
    group = [p.id for p in eligibility.group_of(policy_id, period)]
    payments = {}
    for uscc, own in expected_candidates(eligibility, standing, policy_id, period).items():
        awards = {p: eligibility.awards(p, period)[uscc] for p in group if uscc in eligibility.awards(p, period)}
        highest = max(awards.values())
        if policy_id != min(p for p, fen in awards.items() if fen == highest):
            continue  # a higher award of the group pays instead
        paid_before = max(
            (g.amount_fen for (u, p, y), g in standing.items() if u == uscc and y == period and p in group), default=0
        )
        if own - paid_before > 0:
            payments[uscc] = own - paid_before
    return payments


@dataclass
class Books:
    """A paying server and what its batches did, as the tests saw it through the API."""

    server: RunningServer
    stubs: Stubs
    eligibility: Eligibility
    # Standing grants, from the lines the batches listed: each cycle adds its lines and removes
    # the returned one.
    standing: dict[GrantKey, Grant] = field(default_factory=dict)
    # Lines the bank returned (one per cycle, and more).
    returned: set[tuple[GrantKey, Grant]] = field(default_factory=set)


@pytest.fixture(scope="module")
def books(api_server: RunningServer, stubs: Stubs) -> Books:
    """The books of the module's server (one per database), shared by the cycles of the policies:
    each cycle pays what the others left unpaid, whatever order they run in."""
    return Books(api_server, stubs, Eligibility(api_server.engine))


@pytest.fixture(scope="module")
def titles_books(api_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Books]:
    """A server of its own on which both national titles have been through their cycle, for the
    tests of a higher title named later: each finds there what it needs, in either order."""
    folder = tmp_path_factory.mktemp("titles-cycled")
    with (
        another_database(api_db_url, folder) as url,
        paying_server(url, folder) as server,
        contextmanager(channel_stubs)(server.port) as stubs,
    ):
        titles = Books(server, stubs, Eligibility(server.engine))
        for policy_id, period in CYCLES:
            if period == TITLES_PERIOD and policy_id in (LOWER_TITLE, HIGHER_TITLE):
                run_cycle(titles, policy_id, period)
        yield titles


# ---------------------------------------------------------------------------------------------
# Calls.
def new_request_id(purpose: str) -> str:
    return f"{purpose}-{uuid.uuid4()}"


def create(stubs: Stubs, policy_id: str, period: int, request_id: str) -> pb.PayoutBatch:
    started: pb.PayoutBatch = stubs.payout.CreatePayoutBatch(
        pb.CreatePayoutBatchRequest(policy_id=policy_id, period=period, request_id=request_id),
        metadata=OPERATOR,
        timeout=TIMEOUT,
    )
    return started


def get(stubs: Stubs, batch_id: str) -> pb.PayoutBatch:
    batch: pb.PayoutBatch = stubs.payout.GetPayoutBatch(
        pb.GetPayoutBatchRequest(batch_id=batch_id), metadata=OPERATOR, timeout=TIMEOUT
    )
    return batch


def watch(stubs: Stubs, batch_id: str) -> list[pb.PayoutBatchProgress]:
    return list(
        stubs.payout.WatchPayoutBatch(pb.WatchPayoutBatchRequest(batch_id=batch_id), metadata=OPERATOR, timeout=120)
    )


def all_lines(stubs: Stubs, batch_id: str) -> list[pb.PayoutLine]:
    """Every line of a batch, page by page (PAGE_SIZE a page)."""
    lines: list[pb.PayoutLine] = []
    token = ""
    while True:
        page = stubs.payout.ListPayoutLines(
            pb.ListPayoutLinesRequest(batch_id=batch_id, page_size=PAGE_SIZE, page_token=token),
            metadata=APPROVER,
            timeout=TIMEOUT,
        )
        assert len(page.lines) <= PAGE_SIZE
        lines.extend(page.lines)
        token = page.next_page_token
        if not token:
            return lines
        assert len(page.lines) == PAGE_SIZE, "only the last page may be short"


def export(stubs: Stubs, batch_id: str, fmt: pb.ExportFormat) -> bytes:
    return b"".join(
        chunk.data
        for chunk in stubs.payout.ExportPayoutBatch(
            pb.ExportPayoutBatchRequest(batch_id=batch_id, format=fmt), metadata=OPERATOR, timeout=TIMEOUT
        )
    )


def record_results(stubs: Stubs, batch_id: str, results: list[pb.PayoutResult]) -> pb.PayoutBatch:
    batch: pb.PayoutBatch = stubs.payout.RecordPayoutResults(
        pb.RecordPayoutResultsRequest(batch_id=batch_id, results=results), metadata=OPERATOR, timeout=TIMEOUT
    )
    return batch


def return_line(stubs: Stubs, batch_id: str, line_id: str) -> pb.PayoutBatch:
    """The bank returns a line (the payee's account was closed): recorded by the operator, it
    waits (RETURN_PENDING, batch not settled) until the approver confirms it."""
    recorded = record_results(
        stubs, batch_id, [pb.PayoutResult(line_id=line_id, state=pb.LINE_STATE_RETURNED, return_reason=RETURN_REASON)]
    )
    assert recorded.state == pb.BATCH_STATE_EXPORTED
    assert {line.line_id: line.state for line in all_lines(stubs, batch_id)}[line_id] == pb.LINE_STATE_RETURN_PENDING
    confirmed: pb.PayoutBatch = stubs.payout.ConfirmPayoutReturns(
        pb.ConfirmPayoutReturnsRequest(batch_id=batch_id, line_ids=[line_id]), metadata=APPROVER, timeout=TIMEOUT
    )
    return confirmed


def verify_audit_log(stubs: Stubs) -> audit_service_pb2.VerifyAuditLogResponse:
    verdict: audit_service_pb2.VerifyAuditLogResponse = stubs.audit.VerifyAuditLog(
        audit_service_pb2.VerifyAuditLogRequest(), metadata=AUDITOR, timeout=VERIFY_TIMEOUT
    )
    return verdict


def yuan(fen: int) -> Decimal:
    return Decimal(fen) / 100


def checkpoint_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# ---------------------------------------------------------------------------------------------
# Checks of one step each.
def run_to_draft(
    stubs: Stubs, policy_id: str, period: int, purpose: str
) -> tuple[pb.PayoutBatch, pb.PayoutBatchProgress]:
    """Create a batch, watch it to the end; the batch as it ends and its last progress."""
    request_id = new_request_id(purpose)
    created = create(stubs, policy_id, period, request_id)
    assert created.state in (pb.BATCH_STATE_RUNNING, pb.BATCH_STATE_DRAFT)
    assert (created.policy_id, created.period, created.request_id, created.created_by) == (
        policy_id,
        period,
        request_id,
        OPERATOR_PRINCIPAL,
    )
    assert create(stubs, policy_id, period, request_id).batch_id == created.batch_id  # a retry, the same batch
    progress = watch(stubs, created.batch_id)
    assert progress, "WatchPayoutBatch streamed nothing"
    evaluated = [p.evaluated_count for p in progress]
    assert evaluated == sorted(evaluated), f"evaluated_count went back: {evaluated}"
    eligible_so_far = [p.eligible_count for p in progress]
    assert eligible_so_far == sorted(eligible_so_far), f"eligible_count went back: {eligible_so_far}"
    # Committed chunk by chunk: any count seen is a whole number of chunks, or everyone.
    assert all(n % CHUNK_SIZE == 0 or n == REGISTRY_SIZE for n in evaluated), evaluated
    last = progress[-1]
    assert [p.enterprise_count for p in progress] == [REGISTRY_SIZE] * len(progress)
    assert (last.evaluated_count, last.error_count) == (REGISTRY_SIZE, 0)
    assert all(p.batch.state == pb.BATCH_STATE_RUNNING for p in progress[:-1])
    assert last.batch.state == pb.BATCH_STATE_DRAFT
    batch = get(stubs, created.batch_id)
    assert batch == last.batch
    assert len(batch.merkle_root) == 64 and batch.policy_version and not batch.approved_by
    return batch, last


def check_lines(
    stubs: Stubs, batch: pb.PayoutBatch, expected: dict[str, int], eligibility: Eligibility
) -> list[pb.PayoutLine]:
    """The batch's lines: totals, order, uniqueness, amounts, and the evaluation each rests on."""
    lines = all_lines(stubs, batch.batch_id)
    assert (len(lines), sum(line.amount_fen for line in lines)) == (batch.line_count, batch.total_fen)
    usccs = [line.uscc for line in lines]
    assert usccs == sorted(usccs) and len(set(usccs)) == len(usccs), "lines are one per enterprise, by USCC"
    assert len({line.line_id for line in lines}) == len(lines)
    assert {line.uscc: line.amount_fen for line in lines} == expected
    own_awards = eligibility.awards(batch.policy_id, batch.period)
    for line in lines:
        assert line.state == pb.LINE_STATE_PENDING and not line.return_reason
        assert line.full_amount_fen == own_awards[line.uscc]
        stored = stubs.audit.GetEvaluation(
            audit_service_pb2.GetEvaluationRequest(evaluation_id=line.evaluation_id), metadata=AUDITOR, timeout=TIMEOUT
        )
        assert (stored.evaluation_id, stored.uscc, stored.policy_id, stored.period, stored.outcome) == (
            line.evaluation_id,
            line.uscc,
            batch.policy_id,
            batch.period,
            evaluation_pb2.OUTCOME_ELIGIBLE,
        )
        assert stored.amount_fen == line.full_amount_fen
    return lines


def approve(stubs: Stubs, batch: pb.PayoutBatch) -> None:
    denied = rpc_error(
        lambda: stubs.payout.ApprovePayoutBatch(
            pb.ApprovePayoutBatchRequest(batch_id=batch.batch_id), metadata=OPERATOR, timeout=TIMEOUT
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, "the creator may not approve"
    approved = stubs.payout.ApprovePayoutBatch(
        pb.ApprovePayoutBatchRequest(batch_id=batch.batch_id), metadata=APPROVER, timeout=TIMEOUT
    )
    assert (approved.state, approved.approved_by) == (pb.BATCH_STATE_APPROVED, APPROVER_PRINCIPAL)


def check_pain001(xml: bytes, batch: pb.PayoutBatch, lines: list[pb.PayoutLine]) -> None:
    document = etree.fromstring(xml)
    schema = etree.XMLSchema(etree.parse(str(Path(sepaxml.__file__).parent / "schemas" / "pain.001.001.09.xsd")))
    assert schema.validate(document), schema.error_log
    for level in ("GrpHdr", "PmtInf"):
        node = document.find(f"p:CstmrCdtTrfInitn/p:{level}", PAIN_NS)
        assert node is not None
        assert node.findtext("p:NbOfTxs", namespaces=PAIN_NS) == str(batch.line_count)
        assert node.findtext("p:CtrlSum", namespaces=PAIN_NS) == f"{yuan(batch.total_fen):.2f}"
    transfers = [
        (
            t.findtext("p:PmtId/p:EndToEndId", namespaces=PAIN_NS),
            Decimal(t.findtext("p:Amt/p:InstdAmt", namespaces=PAIN_NS) or "NaN"),
        )
        for t in document.iterfind(".//p:CdtTrfTxInf", PAIN_NS)
    ]
    ids = [end_to_end_id for end_to_end_id, _ in transfers]
    assert len(ids) == len(set(ids)) == batch.line_count, "end-to-end ids are unique, one a line"
    assert sorted(transfers) == sorted((line.line_id, yuan(line.amount_fen)) for line in lines)


def check_csv(data: bytes, batch: pb.PayoutBatch, lines: list[pb.PayoutLine]) -> None:
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert [
        (r["end_to_end_id"], r["uscc"], Decimal(r["amount_yuan"]), r["policy_id"], r["batch_id"]) for r in rows
    ] == [(line.line_id, line.uscc, yuan(line.amount_fen), batch.policy_id, batch.batch_id) for line in lines]


def check_checkpoint(line: str, key_file: Path, engine: Engine) -> None:
    """A checkpoint line: signed by the server's ledger key over the ledger's newest entry."""
    checkpoint = json.loads(line)
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey), type(key)  # the ledger signs with Ed25519
    unsigned = {k: checkpoint[k] for k in ("entry_count", "head_hash", "signed_at", "key_id")}
    signed = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    key.public_key().verify(base64.b64decode(checkpoint["signature"]), signed)
    with engine.connect() as conn:
        newest = conn.execute(
            select(ledger_entry.c.seq, ledger_entry.c.entry_hash).order_by(ledger_entry.c.seq.desc()).limit(1)
        ).one()
    assert (checkpoint["entry_count"], checkpoint["head_hash"]) == tuple(newest)


def export_and_check(stubs: Stubs, server: RunningServer, batch: pb.PayoutBatch, lines: list[pb.PayoutLine]) -> None:
    checkpoint_file = server.checkpoint.file
    assert checkpoint_file is not None
    before = checkpoint_lines(checkpoint_file)
    xml = export(stubs, batch.batch_id, pb.EXPORT_FORMAT_PAIN_001)
    after = checkpoint_lines(checkpoint_file)
    assert after[: len(before)] == before and len(after) == len(before) + 1, "one checkpoint for the export"
    check_checkpoint(after[-1], checkpoint_file.parent / LEDGER_KEY_FILE, server.engine)
    check_pain001(xml, batch, lines)
    assert get(stubs, batch.batch_id).state == pb.BATCH_STATE_EXPORTED
    data = export(stubs, batch.batch_id, pb.EXPORT_FORMAT_CSV)
    check_csv(data, batch, lines)
    assert export(stubs, batch.batch_id, pb.EXPORT_FORMAT_PAIN_001) == xml, "a re-export issues no new ids"
    assert export(stubs, batch.batch_id, pb.EXPORT_FORMAT_CSV) == data


def settle(stubs: Stubs, batch: pb.PayoutBatch, lines: list[pb.PayoutLine]) -> pb.PayoutLine:
    """The bank pays every line but the middle one, which it returns; the returned line."""
    bounced = lines[len(lines) // 2]
    paid = [line for line in lines if line.line_id != bounced.line_id]
    if paid:
        partial = record_results(
            stubs, batch.batch_id, [pb.PayoutResult(line_id=line.line_id, state=pb.LINE_STATE_PAID) for line in paid]
        )
        assert partial.state == pb.BATCH_STATE_EXPORTED, "a line still has no result"
    assert return_line(stubs, batch.batch_id, bounced.line_id).state == pb.BATCH_STATE_SETTLED
    states = {line.line_id: (line.state, line.return_reason) for line in all_lines(stubs, batch.batch_id)}
    assert states == {line.line_id: (pb.LINE_STATE_PAID, "") for line in paid} | {
        bounced.line_id: (pb.LINE_STATE_RETURNED, RETURN_REASON)
    }
    return bounced


# ---------------------------------------------------------------------------------------------
# The cycle, for each reference policy.
def test_the_reference_policies_are_all_cycled(books: Books) -> None:
    policies = books.eligibility.policies
    assert sorted(p for p, _ in CYCLES) == sorted(p.id for p in policies)
    for policy_id, period in CYCLES:
        policy = policies.get(policy_id)
        assert policy.covers(period) and policy.model.apply_free
        assert policy.budget_fen is None, "amounts below are compared unprorated"


@pytest.mark.parametrize(("policy_id", "period"), CYCLES, ids=[f"{p}-{y}" for p, y in CYCLES])
def test_a_batch_runs_from_empty_to_settled_and_pays_nobody_twice(policy_id: str, period: int, books: Books) -> None:
    run_cycle(books, policy_id, period)
    check_books(books)


def run_cycle(books: Books, policy_id: str, period: int) -> None:
    """One policy's cycle on a server, checked step by step; the books follow what it paid."""
    stubs, api_server, eligibility = books.stubs, books.server, books.eligibility
    standing, returned = books.standing, books.returned
    # 1. The first batch pays everyone eligible (less what the conflict group already paid).
    candidates = expected_candidates(eligibility, standing, policy_id, period)
    expected = expected_payments(eligibility, standing, policy_id, period)
    assert expected, f"{policy_id} {period}: nobody to pay in this registry - the cycle would prove little"
    batch, progress = run_to_draft(stubs, policy_id, period, "first")
    assert (progress.eligible_count, progress.amount_fen) == (len(candidates), sum(candidates.values()))
    lines = check_lines(stubs, batch, expected, eligibility)
    standing.update(
        {(line.uscc, policy_id, period): Grant(line.line_id, line.amount_fen, batch.batch_id) for line in lines}
    )

    # 2. Four eyes, bank files, bank results: one line comes back.
    approve(stubs, batch)
    export_and_check(stubs, api_server, batch, lines)
    bounced = settle(stubs, batch, lines)
    bounced_key = (bounced.uscc, policy_id, period)
    returned.add((bounced_key, standing.pop(bounced_key)))

    # 3. A new batch pays exactly the returned enterprise, the same amount, once.
    repay, repay_progress = run_to_draft(stubs, policy_id, period, "repay")
    assert repay_progress.eligible_count == len(expected_candidates(eligibility, standing, policy_id, period))
    repay_lines = check_lines(stubs, repay, {bounced.uscc: bounced.amount_fen}, eligibility)
    assert repay_lines[0].line_id != bounced.line_id
    standing[bounced_key] = Grant(repay_lines[0].line_id, repay_lines[0].amount_fen, repay.batch_id)

    # 4. And a third pays nobody.
    again, _ = run_to_draft(stubs, policy_id, period, "again")
    assert (again.line_count, again.total_fen) == (0, 0)
    assert all_lines(stubs, again.batch_id) == []
    assert get(stubs, batch.batch_id).state == pb.BATCH_STATE_SETTLED


# ---------------------------------------------------------------------------------------------
# 就高不重复 over time: a higher title named after the lower award was granted.
TITLES_PERIOD, LOWER_TITLE, HIGHER_TITLE = 2024, "little-giant-reward", "single-champion-reward"


def name_single_champion(stubs: Stubs, uscc: str, certificate_no: str) -> None:
    """The industry bureau reports a national single-champion title of TITLES_PERIOD."""
    record = {
        "kind": "qualification",
        "uscc": uscc,
        "source": "industry_it",
        "as_of": "2024-12-31",
        "type": "single_champion",
        "level": "national",
        "first_time": True,
        "granted_on": "2024-12-20",
        "certificate_no": certificate_no,
    }
    imported = stubs.registry.ImportFacts(
        iter([registry_service_pb2.ImportFactsRequest(record_json=json.dumps(record, ensure_ascii=False))]),
        metadata=as_role("registry_feed"),
        timeout=TIMEOUT,
    )
    assert (imported.stored_count, list(imported.rejects)) == (1, [])


def group_holding(standing: dict[GrantKey, Grant], uscc: str) -> int:
    """What an enterprise's standing grants of the two titles add up to, in fen."""
    return sum(
        g.amount_fen
        for (u, p, y), g in standing.items()
        if u == uscc and y == TITLES_PERIOD and p in (LOWER_TITLE, HIGHER_TITLE)
    )


def lower_title_holders(
    standing: dict[GrantKey, Grant], returned: set[tuple[GrantKey, Grant]], *, once_returned: bool
) -> list[str]:
    """Enterprises holding the lower title's award only, whose line the bank returned before or not."""
    bounced = {u for (u, p, y), _ in returned if (p, y) == (LOWER_TITLE, TITLES_PERIOD)}
    return sorted(
        u
        for (u, p, y) in standing
        if (p, y) == (LOWER_TITLE, TITLES_PERIOD)
        and (u, HIGHER_TITLE, TITLES_PERIOD) not in standing
        and (u in bounced) == once_returned
    )


def test_a_higher_title_named_later_tops_up_the_earlier_award_once(titles_books: Books) -> None:
    """An enterprise paid (and settled) the little-giant reward is then named single champion for
    the same year: the new batch pays only the difference, pointing at the earlier line."""
    stubs, eligibility, standing = titles_books.stubs, titles_books.eligibility, titles_books.standing
    holders = lower_title_holders(standing, titles_books.returned, once_returned=False)
    assert holders, "the little-giant cycle left no enterprise holding that award alone"
    uscc = holders[0]
    earlier = standing[uscc, LOWER_TITLE, TITLES_PERIOD]
    name_single_champion(stubs, uscc, "DXGJ-TOPUP-0001")
    eligibility.reload()
    highest = eligibility.awards(HIGHER_TITLE, TITLES_PERIOD)[uscc]
    expected = expected_payments(eligibility, standing, HIGHER_TITLE, TITLES_PERIOD)
    assert expected == {uscc: highest - earlier.amount_fen} and highest > earlier.amount_fen
    batch, _ = run_to_draft(stubs, HIGHER_TITLE, TITLES_PERIOD, "top-up")
    (line,) = check_lines(stubs, batch, expected, eligibility)
    assert line.supersedes_line_id == earlier.line_id
    standing[uscc, HIGHER_TITLE, TITLES_PERIOD] = Grant(line.line_id, line.amount_fen, batch.batch_id)
    assert group_holding(standing, uscc) == highest
    again, _ = run_to_draft(stubs, HIGHER_TITLE, TITLES_PERIOD, "after-top-up")  # and never again
    assert (again.line_count, again.total_fen) == (0, 0)
    check_books(titles_books)


def test_a_lower_award_returned_after_a_top_up_is_made_good(titles_books: Books) -> None:
    """The little-giant line of an enterprise is exported, a single-champion batch tops it up by the
    difference, and then the bank returns the little-giant line. The enterprise is owed the highest
    award once: later batches of the two titles must bring what it holds back up to it."""
    stubs, eligibility, standing = titles_books.stubs, titles_books.eligibility, titles_books.standing
    returned = titles_books.returned
    holders = lower_title_holders(standing, returned, once_returned=True)
    assert holders, "the little-giant cycle's returned enterprise was not paid again by its repay batch"
    uscc = holders[0]
    pending = standing[uscc, LOWER_TITLE, TITLES_PERIOD]  # its line in the cycle's repay batch, DRAFT
    approve(stubs, get(stubs, pending.batch_id))
    export(stubs, pending.batch_id, pb.EXPORT_FORMAT_CSV)
    name_single_champion(stubs, uscc, "DXGJ-TOPUP-0002")
    eligibility.reload()
    highest = eligibility.awards(HIGHER_TITLE, TITLES_PERIOD)[uscc]
    top_up, _ = run_to_draft(stubs, HIGHER_TITLE, TITLES_PERIOD, "top-up-pending")
    (top_up_line,) = check_lines(stubs, top_up, {uscc: highest - pending.amount_fen}, eligibility)
    assert top_up_line.supersedes_line_id == pending.line_id
    standing[uscc, HIGHER_TITLE, TITLES_PERIOD] = Grant(top_up_line.line_id, top_up_line.amount_fen, top_up.batch_id)

    assert return_line(stubs, pending.batch_id, pending.line_id).state == pb.BATCH_STATE_SETTLED
    returned.add(((uscc, LOWER_TITLE, TITLES_PERIOD), standing.pop((uscc, LOWER_TITLE, TITLES_PERIOD))))
    for policy_id in (LOWER_TITLE, HIGHER_TITLE):
        batch, _ = run_to_draft(stubs, policy_id, TITLES_PERIOD, "after-return")
        standing.update(
            {
                (line.uscc, policy_id, TITLES_PERIOD): Grant(line.line_id, line.amount_fen, batch.batch_id)
                for line in all_lines(stubs, batch.batch_id)
            }
        )
    assert group_holding(standing, uscc) == highest, (
        f"{uscc} holds {group_holding(standing, uscc)} fen of its highest award {highest} fen: the "
        f"returned {LOWER_TITLE} line {pending.line_id} is never paid again, and the {HIGHER_TITLE} line "
        f"{top_up_line.line_id} only tops it up"
    )
    check_books(titles_books)


# ---------------------------------------------------------------------------------------------
# One batch at a time per policy and period (on the slow server).
def test_a_second_request_while_a_batch_runs_is_refused_and_names_it(
    slow_stubs: Stubs, slow_server: RunningServer
) -> None:
    for policy_id, period in SLOW_CANDIDATES:
        first = create(slow_stubs, policy_id, period, new_request_id("running"))
        if get(slow_stubs, first.batch_id).state != pb.BATCH_STATE_RUNNING:
            continue  # finished before we could ask again: try another policy or period
        second_request = new_request_id("meanwhile")
        try:
            create(slow_stubs, policy_id, period, second_request)
        except grpc.RpcError as err:
            refusal = err
        else:
            assert get(slow_stubs, first.batch_id).state != pb.BATCH_STATE_RUNNING, (
                "two batches of one policy and period were running at once"
            )
            continue  # the first finished between the two calls: inconclusive, try another
        assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION, refusal.details()
        assert first.batch_id in (refusal.details() or "")
        assert batches_of(slow_server.engine, policy_id, period) == [first.request_id], (
            "the refused request created no batch"
        )
        # Once the first is DRAFT, the same second request starts a batch: it finds nobody new.
        assert finished_batch(slow_stubs, first.batch_id).state == pb.BATCH_STATE_DRAFT
        later = finished_batch(slow_stubs, create(slow_stubs, policy_id, period, second_request).batch_id)
        assert (later.state, later.line_count) == (pb.BATCH_STATE_DRAFT, 0)
        return
    pytest.fail("every batch finished before a second request could be made")


def test_concurrent_requests_with_different_ids_start_one_batch(slow_stubs: Stubs, slow_server: RunningServer) -> None:
    def attempt(policy_id: str, period: int) -> pb.PayoutBatch | grpc.RpcError:
        try:
            return create(slow_stubs, policy_id, period, new_request_id("burst"))
        except grpc.RpcError as err:
            return err

    for policy_id, period in [("stable-jobs-refund", 2023), ("stable-jobs-refund", 2022)]:
        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(attempt, [policy_id] * 6, [period] * 6))
        started = [o for o in outcomes if isinstance(o, pb.PayoutBatch)]
        still_running = [b for b in started if get(slow_stubs, b.batch_id).state == pb.BATCH_STATE_RUNNING]
        if len(still_running) == 1 and len(started) > 1:
            continue  # one finished before another call came: inconclusive, try another period
        refused = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        assert len(started) == 1, f"{len(started)} batches started: {[b.batch_id for b in started]}"
        if not still_running:
            continue  # it finished before every call was made: inconclusive, try another period
        (running,) = started
        assert {e.code() for e in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
        assert all(running.batch_id in (e.details() or "") for e in refused)
        assert batches_of(slow_server.engine, policy_id, period) == [running.request_id]
        assert finished_batch(slow_stubs, running.batch_id).state == pb.BATCH_STATE_DRAFT
        assert verify_audit_log(slow_stubs).valid
        return
    pytest.fail("every burst was inconclusive: the batches finished too fast")


def batches_of(engine: Engine, policy_id: str, period: int) -> list[str]:
    """Request ids of every batch of a policy and period, from the server's database."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(payout_batch.c.request_id).where(
                    payout_batch.c.policy_id == policy_id, payout_batch.c.period == period
                )
            ).scalars()
        )


# ---------------------------------------------------------------------------------------------
# The books balance, after every test that pays.
def check_books(books: Books) -> None:
    """No enterprise holds two standing grants of a policy and period, the database holds exactly
    the grants the batches listed, nobody more than the group's highest award, the ledger verifies."""
    eligibility, standing, returned = books.eligibility, books.standing, books.returned
    with books.server.engine.connect() as conn:
        doubled = conn.execute(
            select(grant.c.uscc, grant.c.policy_id, grant.c.period, func.count())
            .where(grant.c.released == "")
            .group_by(grant.c.uscc, grant.c.policy_id, grant.c.period)
            .having(func.count() > 1)
        ).all()
        rows = conn.execute(select(grant)).all()
    assert doubled == []
    in_db = {
        (r.uscc, r.policy_id, r.period): Grant(r.grant_id, r.amount_fen, r.batch_id) for r in rows if not r.released
    }
    assert in_db == standing, "the database holds other grants than the batches listed"
    assert {
        ((r.uscc, r.policy_id, r.period), Grant(r.grant_id, r.amount_fen, r.batch_id)) for r in rows if r.released
    } == returned
    assert all(r.state == "RETURNED" and r.released == r.grant_id for r in rows if r.released)
    # 就高不重复: within a conflict group an enterprise never holds more than the group's highest award.
    for policy_id, period in CYCLES:
        group = [p.id for p in eligibility.group_of(policy_id, period)]
        for uscc in {u for (u, p, y) in standing if p == policy_id and y == period}:
            held = sum(g.amount_fen for (u, p, y), g in standing.items() if u == uscc and y == period and p in group)
            assert held <= max(eligibility.awards(p, period).get(uscc, 0) for p in group)
    verdict = verify_audit_log(books.stubs)
    assert verdict.valid and verdict.fault == audit_service_pb2.LEDGER_FAULT_NONE, verdict.detail
    assert verdict.entries_checked > 0
