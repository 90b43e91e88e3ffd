"""The benefits.v1 servicers. Each validates its request, checks the caller's right to the
USCC, and calls the domain layers; errors are mapped to status codes in `status.py`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import orjson
from benefits.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    benefit_service_pb2,
    benefit_service_pb2_grpc,
    evaluation_pb2,
    payout_service_pb2,
    payout_service_pb2_grpc,
    policy_service_pb2,
    policy_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from enterprise_registry import uscc as uscc_codes
from enterprise_registry.clock import Clock
from enterprise_registry.db import refresh_statistics
from enterprise_registry.importer import RecordChecker, Unparsable, store_records
from enterprise_registry.models import MODEL_BY_KIND
from rules.evaluator import Evaluation
from rules.loader import PolicyStore
from rules.values import Truth
from service.api import convert, enums
from service.api.auth import Principal, authorize_uscc, current_principal
from service.api.paging import next_token, page_bounds
from service.audit.ledger import read_snapshot
from service.audit.records import (
    Actor,
    list_records,
    load_record,
)
from service.audit.rendering import render_faithful, replay
from service.audit.verification import verify_audit_log
from service.catalogue import CATALOGUE
from service.errors import (
    BatchStateError,
    EnterpriseNotFoundError,
    EvaluationNotFoundError,
    InvalidArgumentError,
    LimitExceededError,
    RequestTimeoutError,
    ServiceError,
)
from service.evaluation.lookups import Lookups, in_force
from service.explain import OUTCOME_ZH, as_text
from service.payouts import batches, status_report
from service.payouts.payees import changed_payees, line_payee, registry_payees
from service.payouts.runner import BatchWorkers
from service.payouts.states import BatchState, LineState

if TYPE_CHECKING:  # imported where a batch is exported (the bank-file writers load with it)
    from service.payouts.export import Payer

MIN_PERIOD, MAX_PERIOD = 2000, 2100
MAX_IMPORT_RECORDS = 1_000_000
IMPORT_CHUNK = 1000  # records committed together as an ImportFacts stream goes
WATCH_INTERVAL_SECONDS = 0.25


def _caller() -> Principal:
    principal = current_principal.get()
    assert principal is not None, "the interceptor admits every call first"
    return principal


def _check_uscc(uscc: str, violations: list[tuple[str, str]]) -> None:
    authorize_uscc(_caller(), uscc)  # permission before validity and existence (AIP-211)
    if not uscc:
        violations.append(("uscc", "required"))
    elif not uscc_codes.is_valid(uscc):
        try:
            uscc_codes.validate(uscc)
            reason = "not a valid unified social credit code"
        except Exception as exc:  # the validator names what is wrong
            reason = str(exc)
        violations.append(("uscc", reason))


def _raise_if(violations: list[tuple[str, str]]) -> None:
    if violations:
        raise InvalidArgumentError(violations)


def _check_period(period: int, violations: list[tuple[str, str]]) -> None:
    if not MIN_PERIOD <= period <= MAX_PERIOD:
        violations.append(("period", f"must be a year from {MIN_PERIOD} to {MAX_PERIOD}, got {period}"))


class PolicyServicer(policy_service_pb2_grpc.PolicyServiceServicer):
    def __init__(self, policies: PolicyStore) -> None:
        self.policies = policies

    def ListPolicies(
        self, request: policy_service_pb2.ListPoliciesRequest, context: grpc.ServicerContext
    ) -> policy_service_pb2.ListPoliciesResponse:
        current = self.policies.current
        everything = list(current)
        offset, limit = page_bounds(request.page_size, request.page_token, "policies")
        page = everything[offset : offset + limit]
        return policy_service_pb2.ListPoliciesResponse(
            policies=[convert.policy(p, current.excluded(p.id)) for p in page],
            next_page_token=next_token(offset, limit, len(everything), "policies"),
        )

    def GetPolicy(
        self, request: policy_service_pb2.GetPolicyRequest, context: grpc.ServicerContext
    ) -> policy_service_pb2.Policy:
        if not request.policy_id:
            raise InvalidArgumentError([("policy_id", "required")])
        current = self.policies.current
        policy = current.get(request.policy_id)
        if request.version and request.version != policy.version:
            from rules.errors import PolicyNotFoundError

            raise PolicyNotFoundError(f"{request.policy_id}@{request.version}")
        return convert.policy(policy, current.excluded(policy.id))


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    """ImportFacts keeps the good records of a stream and rejects the others by index; a feed
    writes only for its own departments, and nothing as of a day after today (`clock`)."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    async def ImportFacts(
        self, request_iterator: AsyncIterator[registry_service_pb2.ImportFactsRequest], context: object
    ) -> registry_service_pb2.ImportFactsResponse:
        # A coroutine: waiting for the client's next record holds no thread. Each chunk is judged
        # and committed in the pool. Today is read once: a stream that runs past midnight is judged
        # by the day it began. The checker lists the first MAX_ERRORS rejects and counts them all.
        checker = RecordChecker("ImportFacts", sources=_caller().sources, today=self.clock.today())
        counts = _ImportCounts()
        chunk: list[str] = []
        try:
            async for message in request_iterator:
                if counts.received == MAX_IMPORT_RECORDS:
                    raise InvalidArgumentError(
                        [("record_json", f"more than {MAX_IMPORT_RECORDS} records in one stream")]
                    )
                counts.received += 1
                chunk.append(message.record_json)
                if len(chunk) == IMPORT_CHUNK:
                    await asyncio.to_thread(self._store_chunk, checker, counts, chunk)
                    chunk = []
        except (InvalidArgumentError, LimitExceededError, RequestTimeoutError) as exc:
            raise _stream_broken(exc, counts.committed) from None
        await asyncio.to_thread(self._store_chunk, checker, counts, chunk)
        await asyncio.to_thread(refresh_statistics, self.engine)
        return registry_service_pb2.ImportFactsResponse(
            received_count=counts.received,
            stored_count=counts.stored,
            stale_count=counts.stale,
            rejected_count=checker.error_count,
            rejects=[
                registry_service_pb2.RecordReject(record_index=e.line, field=e.field or "", reason=e.reason)
                for e in sorted(checker.errors, key=lambda e: e.line)
            ],
        )

    def _store_chunk(self, checker: RecordChecker, counts: _ImportCounts, chunk: list[str]) -> None:
        """Judge the chunk's records (numbered on from what came before) and commit the good ones."""
        good = []
        for index, raw in enumerate(chunk, start=counts.received - len(chunk) + 1):
            try:
                obj: object = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                obj = Unparsable(f"malformed JSON: {exc}")
            record = checker.check(index, obj)
            if record is not None:
                good.append(record)
        if good:
            with self.engine.begin() as conn:
                stored, stale = store_records(conn, good)
            counts.stored += stored
            counts.stale += stale

    def GetEnterprise(
        self, request: registry_service_pb2.GetEnterpriseRequest, context: grpc.ServicerContext
    ) -> registry_service_pb2.Enterprise:
        violations: list[tuple[str, str]] = []
        _check_uscc(request.uscc, violations)
        _raise_if(violations)
        records = []
        name = ""
        with self.engine.connect() as conn:
            for kind, model in MODEL_BY_KIND.items():
                table = model.__table__  # type: ignore[attr-defined]
                for row in conn.execute(select(table).where(table.c.uscc == request.uscc)):
                    fields = {k: v for k, v in row._mapping.items() if k not in ("id", "uscc", "source", "as_of")}
                    if kind == "enterprise":
                        name = fields["name"]
                    records.append(
                        registry_service_pb2.FactRecord(
                            kind=kind,
                            source=row.source,
                            as_of=row.as_of.isoformat(),
                            fields_json=json.dumps(fields, ensure_ascii=False, default=str, sort_keys=True),
                        )
                    )
        if not records:
            raise EnterpriseNotFoundError(request.uscc)
        return registry_service_pb2.Enterprise(uscc=request.uscc, name=name, records=records)


@dataclass
class _ImportCounts:
    received: int = 0
    stored: int = 0
    stale: int = 0

    @property
    def committed(self) -> int:
        return self.stored + self.stale


def _stream_broken(exc: ServiceError, committed: int) -> ServiceError:
    """The error that ended an import stream, saying what of it was committed before."""
    note = f"{committed} valid records before it were committed (resending them is harmless)"
    if isinstance(exc, InvalidArgumentError):
        return InvalidArgumentError([(field, f"{reason}; {note}") for field, reason in exc.violations])
    if isinstance(exc, LimitExceededError):
        return LimitExceededError(f"{exc}; {note}", exc.retry_after)
    return type(exc)(f"{exc}; {note}")


class BenefitServicer(benefit_service_pb2_grpc.BenefitServiceServicer):
    """Every evaluation it makes is recorded in the audit trail with the caller as actor, or
    answered from the record of the same decision made earlier (`service.evaluation.lookups`)."""

    def __init__(self, policies: PolicyStore, lookups: Lookups, clock: Clock) -> None:
        self.policies = policies
        self.lookups = lookups
        self.clock = clock  # the evaluation date: the Asia/Shanghai date

    def ListMatchedBenefits(
        self, request: benefit_service_pb2.ListMatchedBenefitsRequest, context: grpc.ServicerContext
    ) -> benefit_service_pb2.ListMatchedBenefitsResponse:
        violations: list[tuple[str, str]] = []
        _check_uscc(request.uscc, violations)
        _check_period(request.period, violations)
        _raise_if(violations)
        current = self.policies.current
        policies = in_force(current, request.period)
        query = f"benefits:{request.uscc}:{request.period}"
        today, actor = self.clock.today(), _actor()
        try:
            offset, limit = page_bounds(request.page_size, request.page_token, query)
        except InvalidArgumentError:  # an enterprise of which nothing is on record: NOT_FOUND first
            self.lookups.look_up(
                current, uscc=request.uscc, policy_ids=[], period=request.period, today=today, actor=actor
            )
            raise
        # read once and decided for every policy of the page, their new records committed together
        answers = self.lookups.look_up(
            current,
            uscc=request.uscc,
            policy_ids=[p.id for p in policies[offset : offset + limit]],
            period=request.period,
            today=today,
            actor=actor,
        )
        benefits = [
            benefit_service_pb2.MatchedBenefit(
                policy_id=a.policy.id,
                title=a.policy.model.title,
                period=request.period,
                outcome=enums.OUTCOMES.to_proto[a.evaluation.outcome],
                amount_fen=a.evaluation.amount_fen,
                summary=_summary(a.evaluation),
            )
            for a in answers
        ]
        return benefit_service_pb2.ListMatchedBenefitsResponse(
            benefits=benefits, next_page_token=next_token(offset, limit, len(policies), query)
        )

    def ExplainEligibility(
        self, request: benefit_service_pb2.ExplainEligibilityRequest, context: grpc.ServicerContext
    ) -> benefit_service_pb2.ExplainEligibilityResponse:
        violations: list[tuple[str, str]] = []
        _check_uscc(request.uscc, violations)
        if not request.policy_id:
            violations.append(("policy_id", "required"))
        _check_period(request.period, violations)
        _raise_if(violations)
        answer = self.lookups.explain(
            self.policies.current,
            uscc=request.uscc,
            policy_id=request.policy_id,
            period=request.period,
            today=self.clock.today(),
            actor=_actor(),
        )
        return benefit_service_pb2.ExplainEligibilityResponse(
            evaluation=convert.evaluation(answer.evaluation, evaluation_id=answer.evaluation_id),
            explanation=as_text(answer.evaluation, answer.policy.model.title),
        )


def _summary(result: Evaluation) -> str:
    text = OUTCOME_ZH[result.outcome]
    failed = [c.text for c in result.conditions if c.result == Truth.FALSE]
    if failed:
        text += "：" + "；".join(failed)
    elif result.missing:
        text += "：缺少 " + "、".join(result.missing)
    elif result.held:
        text += "：" + "；".join(c.text for c in result.payable if c.id in result.held)
    return text


class PayoutServicer(payout_service_pb2_grpc.PayoutServiceServicer):
    """Batches for the finance bureau. A created batch runs in the background (`BatchWorkers`);
    WatchPayoutBatch streams its progress until it leaves RUNNING. Every change of money state
    is sealed in the ledger with the caller as actor."""

    def __init__(
        self,
        policies: PolicyStore,
        engine: Engine,
        workers: BatchWorkers,
        clock: Clock,
        *,
        payers: dict[str, Payer] | None = None,
        on_export: Callable[[], object] = lambda: None,
        watch_interval: float = WATCH_INTERVAL_SECONDS,
    ) -> None:
        self.policies, self.engine, self.workers, self.payers = policies, engine, workers, payers or {}
        self.clock, self.on_export, self.watch_interval = clock, on_export, watch_interval

    def CreatePayoutBatch(
        self, request: payout_service_pb2.CreatePayoutBatchRequest, context: grpc.ServicerContext
    ) -> payout_service_pb2.PayoutBatch:
        violations: list[tuple[str, str]] = []
        if not request.policy_id:
            violations.append(("policy_id", "required"))
        _check_period(request.period, violations)
        if not 8 <= len(request.request_id) <= 100 or not request.request_id.isprintable():
            violations.append(("request_id", "required: a client-chosen id of 8-100 printable characters (a UUID)"))
        _raise_if(violations)
        batch = batches.start_batch(
            self.engine,
            self.policies.current,
            policy_id=request.policy_id,
            period=request.period,
            request_id=request.request_id,
            actor=_actor(),
            today=self.clock.today(),
        )
        if batch.state == BatchState.RUNNING:
            self.workers.wake()  # a repeated request after a restart finishes the same batch
        return convert.payout_batch(batch)

    def GetPayoutBatch(
        self, request: payout_service_pb2.GetPayoutBatchRequest, context: grpc.ServicerContext
    ) -> payout_service_pb2.PayoutBatch:
        return convert.payout_batch(batches.get_batch(self.engine, _batch_id(request)))

    async def WatchPayoutBatch(
        self, request: payout_service_pb2.WatchPayoutBatchRequest, context: object
    ) -> AsyncIterator[payout_service_pb2.PayoutBatchProgress]:
        # A coroutine: between looks a watcher holds no thread; a client that leaves cancels it.
        batch_id = _batch_id(request)
        last = None
        while True:
            batch = await asyncio.to_thread(batches.get_batch, self.engine, batch_id)
            if batch != last:
                yield payout_service_pb2.PayoutBatchProgress(
                    batch=convert.payout_batch(batch),
                    evaluated_count=batch.evaluated_count,
                    eligible_count=batch.eligible_count,
                    amount_fen=batch.eligible_fen,
                    enterprise_count=batch.enterprise_count,
                    error_count=batch.error_count,
                )
                last = batch
            if batch.state != BatchState.RUNNING:
                return
            await asyncio.sleep(self.watch_interval)

    def ListPayoutLines(
        self, request: payout_service_pb2.ListPayoutLinesRequest, context: grpc.ServicerContext
    ) -> payout_service_pb2.ListPayoutLinesResponse:
        batch = batches.get_batch(self.engine, _batch_id(request))
        query = f"lines:{batch.batch_id}:{request.payee_changed}"
        offset, limit = page_bounds(request.page_size, request.page_token, query, default=100, maximum=1000)
        with self.engine.connect() as conn:
            lines: Sequence[Mapping[str, Any]]
            if request.payee_changed:  # every pending line is compared with the registry, then paged
                pending = [
                    line for line in batches.lines_of(conn, batch.batch_id) if line["state"] == LineState.PENDING
                ]
                matching = changed_payees(conn, pending)
                total, lines = len(matching), matching[offset : offset + limit]
            else:
                total = batches.count_lines(conn, batch.batch_id)
                lines = batches.lines_of(conn, batch.batch_id, offset=offset, limit=limit)
            now = registry_payees(conn, (str(line["uscc"]) for line in lines))
        return payout_service_pb2.ListPayoutLinesResponse(
            lines=[
                convert.payout_line(
                    line,
                    payee_changed=line["state"] == LineState.PENDING
                    and not line_payee(line).same_as(now[str(line["uscc"])]),
                )
                for line in lines
            ],
            next_page_token=next_token(offset, limit, total, query),
        )

    def ApprovePayoutBatch(
        self, request: payout_service_pb2.ApprovePayoutBatchRequest, context: grpc.ServicerContext
    ) -> payout_service_pb2.PayoutBatch:
        return convert.payout_batch(batches.approve(self.engine, _batch_id(request), _actor()))

    def CancelPayoutBatch(
        self, request: payout_service_pb2.CancelPayoutBatchRequest, context: grpc.ServicerContext
    ) -> payout_service_pb2.PayoutBatch:
        return convert.payout_batch(batches.cancel(self.engine, _batch_id(request), _actor(), request.reason))

    def WithdrawPayoutLines(
        self, request: payout_service_pb2.WithdrawPayoutLinesRequest, context: grpc.ServicerContext
    ) -> payout_service_pb2.PayoutBatch:
        return convert.payout_batch(
            batches.withdraw(self.engine, _batch_id(request), list(request.line_ids), request.reason, _actor())
        )

    def ConfirmPayoutReturns(
        self, request: payout_service_pb2.ConfirmPayoutReturnsRequest, context: grpc.ServicerContext
    ) -> payout_service_pb2.PayoutBatch:
        return convert.payout_batch(
            batches.confirm_returns(self.engine, _batch_id(request), list(request.line_ids), _actor())
        )

    def RecordPayoutResults(
        self, request: payout_service_pb2.RecordPayoutResultsRequest, context: grpc.ServicerContext
    ) -> payout_service_pb2.PayoutBatch:
        results = []
        for index, result in enumerate(request.results):
            state = convert.BANK_RESULT_STATES.get(result.state)
            if state is None:
                raise InvalidArgumentError([(f"results[{index}].state", "LINE_STATE_PAID or LINE_STATE_RETURNED")])
            results.append(batches.BankResult(result.line_id, state, result.return_reason, f"results[{index}]"))
        return convert.payout_batch(batches.record_results(self.engine, _batch_id(request), results, _actor()))

    def ImportPaymentStatusReport(
        self, request: payout_service_pb2.ImportPaymentStatusReportRequest, context: grpc.ServicerContext
    ) -> payout_service_pb2.ImportPaymentStatusReportResponse:
        batch_id = _batch_id(request)
        if not request.data:
            raise InvalidArgumentError([("data", "required: the pain.002.001.10 document")])
        batch, report = status_report.apply(self.engine, batch_id, bytes(request.data), _actor())
        results = report.results
        rejected = sum(1 for r in results if r.state == LineState.RETURNED)
        return payout_service_pb2.ImportPaymentStatusReportResponse(
            batch=convert.payout_batch(batch),
            message_id=report.message_id,
            paid_count=len(results) - rejected,
            rejected_count=rejected,
            unchanged_count=len(report.transactions) - len(results),
        )

    def ExportPayoutBatch(
        self, request: payout_service_pb2.ExportPayoutBatchRequest, context: grpc.ServicerContext
    ) -> Iterator[payout_service_pb2.ExportPayoutBatchResponse]:
        from service.payouts.export import export

        batch = batches.get_batch(self.engine, _batch_id(request))
        if request.format not in (payout_service_pb2.EXPORT_FORMAT_CSV, payout_service_pb2.EXPORT_FORMAT_PAIN_001):
            raise InvalidArgumentError([("format", "EXPORT_FORMAT_CSV or EXPORT_FORMAT_PAIN_001")])
        funding = self.policies.current.get(batch.policy_id).model.funding
        payer = self.payers.get(funding)
        if payer is None:
            raise BatchStateError(f"no paying account is configured for {funding}")
        csv_bytes, xml = export(self.engine, batch.batch_id, payer, _actor())
        self.on_export()  # a signed checkpoint with every bank file: the ledger as it was paid out
        data = csv_bytes if request.format == payout_service_pb2.EXPORT_FORMAT_CSV else xml
        for start in range(0, len(data), 64 * 1024):
            yield payout_service_pb2.ExportPayoutBatchResponse(data=data[start : start + 64 * 1024])


def _actor() -> Actor:
    caller = _caller()
    return Actor(caller.name, caller.role)


class _BatchRequest(Protocol):
    @property
    def batch_id(self) -> str: ...


class _EvaluationRequest(Protocol):
    @property
    def evaluation_id(self) -> str: ...


def _batch_id(request: _BatchRequest) -> str:
    if not request.batch_id:
        raise InvalidArgumentError([("batch_id", "required")])
    return batches.check_id(str(request.batch_id), "batch_id")


class AuditServicer(audit_service_pb2_grpc.AuditServiceServicer):
    """Stored evaluations, verification of the ledger (and checkpoints), replay."""

    def __init__(
        self, engine: Engine, *, checkpoint_file: Path | None = None, public_key: Ed25519PublicKey | None = None
    ) -> None:
        self.engine = engine
        self.checkpoint_file, self.public_key = checkpoint_file, public_key

    def GetEvaluation(
        self, request: audit_service_pb2.GetEvaluationRequest, context: grpc.ServicerContext
    ) -> evaluation_pb2.Evaluation:
        _evaluation_id(request)
        with self.engine.connect() as conn:
            record = load_record(conn, request.evaluation_id)
            if record is None:
                raise EvaluationNotFoundError(request.evaluation_id)
            return _stored_evaluation(conn, record)

    def ListEvaluations(
        self, request: audit_service_pb2.ListEvaluationsRequest, context: grpc.ServicerContext
    ) -> audit_service_pb2.ListEvaluationsResponse:
        violations: list[tuple[str, str]] = []
        if request.period and not MIN_PERIOD <= request.period <= MAX_PERIOD:
            _check_period(request.period, violations)
        if request.uscc and not uscc_codes.is_valid(request.uscc):
            violations.append(("uscc", "not a valid unified social credit code"))
        for field in ("policy_id", "batch_id"):  # free text compared in SQL: no NUL, bounded
            value = getattr(request, field)
            if value and (len(value) > 100 or not value.isprintable()):
                violations.append((field, "at most 100 printable characters"))
        _raise_if(violations)
        # UNSPECIFIED (0): every outcome; a number Outcome does not define never gets here
        # (service.api.requests refuses it, naming `outcome`)
        outcome: str = enums.OUTCOMES.from_proto.get(request.outcome, "")
        query = f"evaluations:{request.uscc}:{request.policy_id}:{request.period}:{request.batch_id}:{outcome}"
        offset, limit = page_bounds(request.page_size, request.page_token, query, default=100, maximum=1000)
        with self.engine.connect() as conn:
            records, total = list_records(
                conn,
                uscc=request.uscc,
                policy_id=request.policy_id,
                period=request.period,
                batch_id=request.batch_id,
                outcome=outcome,
                offset=offset,
                limit=limit,
            )
            evaluations = [_stored_evaluation(conn, r) for r in records]
        return audit_service_pb2.ListEvaluationsResponse(
            evaluations=evaluations, next_page_token=next_token(offset, limit, total, query)
        )

    def VerifyAuditLog(
        self, request: audit_service_pb2.VerifyAuditLogRequest, context: grpc.ServicerContext
    ) -> audit_service_pb2.VerifyAuditLogResponse:
        with read_snapshot(self.engine) as conn:  # one snapshot, while batches write
            verdict = verify_audit_log(conn, checkpoint_file=self.checkpoint_file, public_key=self.public_key)
        return audit_service_pb2.VerifyAuditLogResponse(
            entries_checked=verdict.entries_checked,
            head_hash=verdict.head_hash,
            valid=verdict.valid,
            first_bad_entry=verdict.first_bad_entry,
            fault=enums.FAULTS.to_proto[verdict.fault],
            detail=verdict.detail,
            problems=[
                audit_service_pb2.AuditProblem(
                    table=p.table,
                    row=p.row,
                    fault=enums.FAULTS.to_proto[p.fault],
                    ledger_entry=p.ledger_seq,
                    detail=p.detail,
                )
                for p in verdict.problems
            ],
        )

    def ReplayEvaluation(
        self, request: audit_service_pb2.ReplayEvaluationRequest, context: grpc.ServicerContext
    ) -> audit_service_pb2.ReplayEvaluationResponse:
        _evaluation_id(request)
        result = replay(self.engine, request.evaluation_id, CATALOGUE)
        if result is None:
            raise EvaluationNotFoundError(request.evaluation_id)
        return audit_service_pb2.ReplayEvaluationResponse(
            identical=result.identical, replayed=convert.evaluation(result.replayed), differences=result.differences
        )


def _evaluation_id(request: _EvaluationRequest) -> str:
    if not request.evaluation_id:
        raise InvalidArgumentError([("evaluation_id", "required")])
    return batches.check_id(str(request.evaluation_id), "evaluation_id")


def _stored_evaluation(conn: Connection, record: dict[str, Any]) -> evaluation_pb2.Evaluation:
    """A compact record shown in full: rendered by replay, refused (DATA_LOSS) when the replay
    does not decide what the record says."""
    return convert.evaluation(render_faithful(conn, record, CATALOGUE), evaluation_id=record["evaluation_id"])
