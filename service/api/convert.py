"""Domain results -> protobuf messages of benefits.v1."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from benefits.v1 import evaluation_pb2, payout_service_pb2, policy_service_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from rules.evaluator import AmountTrace, ClauseResult, Evaluation, FactRead, TermRead
from rules.loader import LoadedPolicy
from service.api.enums import BATCH_STATES, LINE_STATES, OUTCOMES, TRUTHS
from service.payouts.batches import Batch
from service.payouts.payees import line_payee
from service.payouts.states import LineState

# The results a bank reports through RecordPayoutResults.
BANK_RESULT_STATES = {LINE_STATES.to_proto[state]: state for state in (LineState.PAID, LineState.RETURNED)}


def evaluation(e: Evaluation, *, evaluation_id: str = "") -> evaluation_pb2.Evaluation:
    now = Timestamp()
    now.GetCurrentTime()
    message = evaluation_pb2.Evaluation(
        evaluation_id=evaluation_id,
        uscc=e.uscc,
        policy_id=e.policy_id,
        policy_version=e.policy_version,
        rule_sha256=e.rule_sha256,
        period=e.period,
        fact_year=e.fact_year,
        outcome=OUTCOMES.to_proto[e.outcome],
        amount_fen=e.amount_fen,
        conditions=[_clause(c) for c in e.conditions],
        payable_conditions=[_clause(c) for c in e.payable],
        missing_facts=e.missing,
        held_conditions=e.held,
        evaluation_date=e.evaluated_on,
        evaluate_time=now,
        engine_version=e.engine,
        conflict_group=e.conflict_group or "",
    )
    if e.amount is not None:
        message.amount.CopyFrom(_amount(e.amount))
    return message


def _clause(c: ClauseResult) -> evaluation_pb2.ConditionTrace:
    return evaluation_pb2.ConditionTrace(
        id=c.id,
        text=c.text,
        citation=c.citation,
        result=TRUTHS.to_proto[c.result],
        reads=[_read(r) for r in c.reads],
        collections=[
            evaluation_pb2.CollectionRead(name=k.name, label=k.label, record_count=k.records, matched_refs=k.matched)
            for k in c.collections
        ],
        notes=c.notes,
        terms=[_term(t) for t in c.terms],
    )


def _term(t: TermRead) -> evaluation_pb2.NamedTerm:
    return evaluation_pb2.NamedTerm(
        name=t.name, text=t.text, value_json="" if t.value is None else json.dumps(t.value, ensure_ascii=False)
    )


def _read(r: FactRead) -> evaluation_pb2.FactRead:
    return evaluation_pb2.FactRead(
        name=r.name,
        label=r.label,
        value_json="" if r.missing is not None else json.dumps(r.value, ensure_ascii=False),
        source=r.source or "",
        as_of=r.as_of or "",
        missing_reason=r.missing or "",
    )


def _amount(a: AmountTrace) -> evaluation_pb2.AmountComputation:
    return evaluation_pb2.AmountComputation(
        text=a.text,
        formula=a.formula,
        exact_fen=a.exact or "",
        rounding=a.rounding,
        cap_fen=a.cap_fen or 0,
        reads=[_read(r) for r in a.reads],
        notes=a.notes,
        terms=[_term(t) for t in a.terms],
    )


def policy(p: LoadedPolicy, excluded: frozenset[str] = frozenset()) -> policy_service_pb2.Policy:
    model = p.model
    effective = model.effective
    return policy_service_pb2.Policy(
        policy_id=p.id,
        version=p.version,
        title=model.title,
        authority=model.authority,
        description=(model.description or "").strip(),
        legal_basis=[
            policy_service_pb2.LegalBasis(
                document=b.document, title=b.title, article=b.article or "", url=b.url or "", periods=b.periods or []
            )
            for b in model.legal_basis
        ],
        apply_free=model.apply_free is True,
        application_reason="" if model.apply_free is True else str(model.apply_free),
        funding=model.funding,
        periods=effective.listed(),
        open_ended=effective.periods is None and effective.last_period is None,
        conflict_group=model.conflict_group or "",
        rule_sha256=p.sha256,
        conditions=[
            policy_service_pb2.PolicyCondition(
                id=c.id, text=c.text, citation=c.citation, expression=c.expr.strip(), payable=payable
            )
            for payable, clauses in ((False, model.conditions), (True, model.payable))
            for c in clauses
        ],
        amount_text=model.amount.text,
        budget_fen=p.budget_fen or 0,
        excludes=sorted(excluded),
        definitions=[
            policy_service_pb2.PolicyDefinition(name=name, text=d.text, expression=d.expr.strip())
            for name, d in model.definitions.items()
        ],
    )


def payout_batch(batch: Batch) -> payout_service_pb2.PayoutBatch:
    created = Timestamp()
    created.FromJsonString(batch.created_at)
    return payout_service_pb2.PayoutBatch(
        batch_id=batch.batch_id,
        policy_id=batch.policy_id,
        policy_version=batch.policy_version,
        period=batch.period,
        state=BATCH_STATES.to_proto[batch.state],
        line_count=batch.line_count,
        total_fen=batch.total_fen,
        request_id=batch.request_id,
        created_by=batch.created_by,
        approved_by=batch.approved_by or "",
        create_time=created,
        merkle_root=batch.merkle_root,
        cancelled_by=batch.cancelled_by or "",
        cancel_reason=batch.cancel_reason or "",
    )


def payout_line(line: Mapping[str, Any], *, payee_changed: bool) -> payout_service_pb2.PayoutLine:
    payee = line_payee(line)
    return payout_service_pb2.PayoutLine(
        line_id=str(line["grant_id"]),
        uscc=str(line["uscc"]),
        amount_fen=int(line["amount_fen"]),
        full_amount_fen=int(line["full_fen"]),
        evaluation_id=str(line["evaluation_id"]),
        supersedes_line_id=str(line["tops_up"] or ""),
        state=LINE_STATES.to_proto[LineState(line["state"])],
        return_reason=str(line["return_reason"] or ""),
        payee=payout_service_pb2.Payee(
            account_name=payee.name, account_number_masked=payee.masked_account, bank_name=payee.bank
        ),
        payee_changed=payee_changed,
        withdraw_reason=str(line["withdraw_reason"] or ""),
        result_recorded_by=str(line["result_by"] or ""),
        return_confirmed_by=str(line["confirmed_by"] or ""),
    )
