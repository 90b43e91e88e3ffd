"""Running a payout batch: evaluate every enterprise in chunks, then stack, pro-rate, grant and
seal in one transaction.

Crash safety. Each chunk commits its evaluation records, its candidates and the batch's cursor
in ONE transaction; a crash loses at most the chunk in flight, and a restart resumes after the
cursor, so no enterprise is missing or evaluated into the batch twice. Grants are written only
at the end, in the transaction that turns the batch DRAFT: a batch is never visible as complete
until it is. A worker holds the batch by a lease renewed with every chunk; when a server dies,
another (or the restarted one) takes the batch over once the lease has run out.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from sqlalchemy import func, insert, or_, select
from sqlalchemy.engine import Connection, Engine

from enterprise_registry.db import error_text, redacted
from rules.errors import EvaluationError
from rules.evaluator import ELIGIBLE, evaluate
from rules.loader import LoadedPolicy, PolicySet, load_policy_text
from service.audit.ledger import ledger_transaction
from service.audit.merkle import root
from service.audit.records import (
    Actor,
    PreparedRecord,
    evaluation_record,
    policy_version,
    prepare_record,
    write_records,
)
from service.catalogue import CATALOGUE
from service.facts_documents import DocumentSource, EnterpriseRows, build_document
from service.payouts.allocation import prorate, stack
from service.payouts.batches import Batch, get_batch, start_batch
from service.payouts.payees import registry_payees
from service.payouts.seals import MoneyEvent, seal_event, unsealed
from service.payouts.states import BatchState, LineState
from service.payouts.tables import grant, in_lists, payout_batch, payout_candidate

log = logging.getLogger("benefits.payouts")


@dataclass(frozen=True)
class RunSettings:
    chunk_size: int = 200          # enterprises per committed chunk
    lease_seconds: float = 30.0    # how long a silent worker keeps its batch


class LeaseLostError(Exception):
    """Another worker took the batch over (this one was too slow to renew its lease)."""


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_batch(engine: Engine, policies: PolicySet, batch_id: str, *, worker: str,
              settings: RunSettings = RunSettings(), stop: threading.Event | None = None) -> bool:
    """Run a RUNNING batch to DRAFT, resuming after its cursor. False when the batch is not
    RUNNING, another worker holds it, or `stop` was set (the lease is then given back)."""
    if not claim(engine, batch_id, worker, settings.lease_seconds):
        return False
    try:
        run = _Run.load(engine, policies, batch_id, worker, settings)
        while True:
            if stop is not None and stop.is_set():
                release(engine, batch_id, worker)
                return False
            chunk = run.source.rows_after(run.cursor, settings.chunk_size)
            if not chunk:
                break
            run.commit_chunk(chunk)
        run.finish()
        return True
    except LeaseLostError:
        log.warning("batch %s: lease lost to another worker; it continues the batch", batch_id)
        return False


def create_batch(engine: Engine, policies: PolicySet, *, policy_id: str, period: int, request_id: str,
                 actor: Actor, today: date, settings: RunSettings = RunSettings()) -> Batch:
    """Start a batch and run it to DRAFT in the calling thread (the CLI and tests; the server runs
    batches in `BatchWorkers`). A repeated request returns its batch as it stands."""
    batch = start_batch(engine, policies, policy_id=policy_id, period=period, request_id=request_id,
                        actor=actor, today=today)
    if batch.state == BatchState.RUNNING:
        run_batch(engine, policies, batch.batch_id, worker=new_worker_id(), settings=settings)
    return get_batch(engine, batch.batch_id)


def claim(engine: Engine, batch_id: str, worker: str, lease_seconds: float) -> bool:
    """Take a RUNNING batch whose lease is free or ran out (or is already ours)."""
    now = _now_ms()
    with engine.begin() as conn:
        changed = conn.execute(payout_batch.update().where(
            payout_batch.c.batch_id == batch_id, payout_batch.c.state == BatchState.RUNNING,
            or_(payout_batch.c.worker.is_(None), payout_batch.c.worker == worker,
                payout_batch.c.lease_until < now)).values(
            worker=worker, lease_until=now + int(lease_seconds * 1000)))
    return changed.rowcount == 1


def release(engine: Engine, batch_id: str, worker: str) -> None:
    """Give a batch back (on shutdown), so the next server resumes it without waiting."""
    with engine.begin() as conn:
        conn.execute(payout_batch.update().where(
            payout_batch.c.batch_id == batch_id, payout_batch.c.worker == worker).values(worker=None, lease_until=0))


def claimable(engine: Engine) -> list[str]:
    """RUNNING batches that nobody holds: new ones, and those of a worker that died."""
    with engine.connect() as conn:
        return list(conn.execute(select(payout_batch.c.batch_id).where(
            payout_batch.c.state == BatchState.RUNNING,
            or_(payout_batch.c.worker.is_(None), payout_batch.c.lease_until < _now_ms()))
            .order_by(payout_batch.c.created_at)).scalars())


class _Run:
    """One worker's run of one batch."""

    def __init__(self, engine: Engine, row: Any, policy: LoadedPolicy, rivals: list[LoadedPolicy],
                 excluded: frozenset[str], worker: str, settings: RunSettings) -> None:
        self.engine, self.row, self.policy, self.rivals = engine, row, policy, rivals
        self.excluded = sorted(excluded)   # policies whose standing grant bars this one
        self.worker, self.settings = worker, settings
        self.batch_id: str = row.batch_id
        self.period: int = row.period
        self.cursor: str = row.cursor
        self.actor = Actor(row.created_by, row.created_role)
        self.today = date.fromisoformat(row.evaluated_on)
        self.source = DocumentSource(engine)

    @classmethod
    def load(cls, engine: Engine, policies: PolicySet, batch_id: str, worker: str,
             settings: RunSettings) -> _Run:
        with engine.connect() as conn:
            row = conn.execute(select(payout_batch).where(payout_batch.c.batch_id == batch_id)).one()
            policy = _policy_version(conn, policies, row.policy_id, row.rule_sha256)
        group = policy.model.conflict_group
        rivals = [p for p in policies if group and p.id != policy.id and p.model.conflict_group == group
                  and p.covers(row.period)]
        # The exclusions of the text the batch runs under, and those the current rules add.
        excluded = frozenset(policy.excludes) | (
            policies.excluded(policy.id) if policy.id in {p.id for p in policies} else frozenset())
        return cls(engine, row, policy, rivals, excluded, worker, settings)

    # -- chunks -----------------------------------------------------------------------------------

    def commit_chunk(self, chunk: list[EnterpriseRows]) -> None:
        """Evaluate a chunk (outside any transaction), then commit its records, candidates and
        the cursor together."""
        usccs = {rows.uscc for rows in chunk}
        granted = self._granted(usccs)
        with self.engine.connect() as conn:
            barred = self._excluded_grants(conn, usccs)
        records: dict[str, list[PreparedRecord]] = defaultdict(list)
        candidates: list[dict[str, Any]] = []
        for rows in chunk:
            if rows.uscc in granted:
                continue  # never twice: an earlier batch granted it
            try:
                candidate = self._evaluate(rows, records, barred.get(rows.uscc))
            except EvaluationError as exc:  # counted, logged, not paid; a later batch may pay it
                log.error("batch %s: %s could not be evaluated: %s", self.batch_id, rows.uscc, exc)
                candidate = {"uscc": rows.uscc, "full_fen": 0, "group_awards": "{}", "evaluation_id": None,
                             "record_sha256": None, "error": str(exc)}
            if candidate is not None:
                candidates.append({"batch_id": self.batch_id, **candidate})
        eligible = [c for c in candidates if not c.get("error")]
        with ledger_transaction(self.engine) as conn:
            self._renew(conn, cursor=chunk[-1].uscc,
                        evaluated_count=payout_batch.c.evaluated_count + len(chunk),
                        eligible_count=payout_batch.c.eligible_count + len(eligible),
                        eligible_fen=payout_batch.c.eligible_fen + sum(c["full_fen"] for c in eligible),
                        error_count=payout_batch.c.error_count + len(candidates) - len(eligible))
            for policy_id, prepared in records.items():
                write_records(conn, self._policy_by_id(policy_id), prepared)
            if candidates:
                conn.execute(insert(payout_candidate), candidates)
        self.cursor = chunk[-1].uscc

    def _evaluate(self, rows: EnterpriseRows, records: dict[str, list[PreparedRecord]],
                  barred_by: str | None) -> dict[str, Any] | None:
        note = f"not paid: holds {barred_by}, which {self.policy.id} excludes" if barred_by else None
        result, record = self._evaluate_policy(self.policy, rows, records, note=note)
        if result.outcome != ELIGIBLE or barred_by:
            return None
        awards = {}
        for rival in self.rivals:  # 就高不重复: what the group's other policies would award
            rival_result, _ = self._evaluate_policy(rival, rows, records)
            if rival_result.outcome == ELIGIBLE:
                awards[rival.id] = rival_result.amount_fen
        return {"uscc": rows.uscc, "full_fen": result.amount_fen,
                "group_awards": orjson.dumps(awards, option=orjson.OPT_SORT_KEYS).decode(),
                "evaluation_id": record.evaluation_id, "record_sha256": record.record_sha256, "error": None}

    def _evaluate_policy(self, policy: LoadedPolicy, rows: EnterpriseRows, records: dict[str, list[PreparedRecord]],
                         *, note: str | None = None) -> tuple[Any, PreparedRecord]:
        document = build_document(rows, policy.fact_year(self.period))
        result = evaluate(policy.compiled(self.period), document, today=self.today)
        record = prepare_record(result, document, self.actor, batch_id=self.batch_id, payout_note=note)
        records[policy.id].append(record)
        return result, record

    def _budget_left(self, conn: Connection) -> int | None:
        """The period's budget less what standing grants of earlier batches already spent."""
        if self.policy.budget_fen is None:
            return None
        spent = conn.execute(select(func.coalesce(func.sum(grant.c.amount_fen), 0)).where(
            grant.c.policy_id == self.policy.id, grant.c.period == self.period,
            grant.c.released == "")).scalar_one()
        return max(self.policy.budget_fen - int(spent), 0)

    def _policy_by_id(self, policy_id: str) -> LoadedPolicy:
        return next(p for p in (self.policy, *self.rivals) if p.id == policy_id)

    def _granted(self, usccs: set[str]) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(grant.c.uscc).where(
                grant.c.policy_id == self.policy.id, grant.c.period == self.period, grant.c.released == "",
                grant.c.uscc.in_(sorted(usccs)))).scalars())

    def _excluded_grants(self, conn: Connection, usccs: set[str]) -> dict[str, str]:
        """Enterprises holding a standing grant of a policy this one excludes, in the period:
        USCC -> "grant <id> of <policy>"."""
        if not self.excluded or not usccs:
            return {}
        query = select(grant.c.uscc, grant.c.grant_id, grant.c.policy_id).where(
            grant.c.policy_id.in_(self.excluded), grant.c.period == self.period, grant.c.released == "",
            grant.c.uscc.in_(sorted(usccs)))
        rows = conn.execute(query).all()
        return {r.uscc: f"grant {r.grant_id} of {r.policy_id}" for r in rows}

    def _renew(self, conn: Connection, **values: Any) -> None:
        # First statement of every write: proves the lease is still ours and extends it.
        changed = conn.execute(payout_batch.update().where(
            payout_batch.c.batch_id == self.batch_id, payout_batch.c.state == BatchState.RUNNING,
            payout_batch.c.worker == self.worker).values(
            **{"lease_until": _now_ms() + int(self.settings.lease_seconds * 1000), **values}))
        if changed.rowcount != 1:
            raise LeaseLostError(self.batch_id)

    # -- the end ----------------------------------------------------------------------------------

    def finish(self) -> None:
        """Stack, pro-rate, grant, take each payee from the registry, seal and turn DRAFT - one
        transaction."""
        group = self.policy.model.conflict_group
        with ledger_transaction(self.engine) as conn:
            self._renew(conn)
            candidates = self._founded_candidates(conn)
            granted = set(conn.execute(select(grant.c.uscc).where(
                grant.c.policy_id == self.policy.id, grant.c.period == self.period,
                grant.c.released == "")).scalars())
            # Checked again here, under the ledger lock: a batch of an excluded policy may have
            # reached DRAFT since the chunk was evaluated.
            barred = self._excluded_grants(conn, {c.uscc for c in candidates})
            paid_in_group: dict[str, dict[str, tuple[int, str]]] = defaultdict(dict)
            if group:
                for g in conn.execute(select(grant.c.uscc, grant.c.policy_id, grant.c.amount_fen, grant.c.grant_id)
                                      .where(grant.c.conflict_group == group, grant.c.period == self.period,
                                             grant.c.released == "")):
                    paid_in_group[g.uscc][g.policy_id] = (g.amount_fen, g.grant_id)
            barred.update(self._unsealed_history(conn, {c.uscc for c in candidates}))
            payees = registry_payees(conn, (c.uscc for c in candidates))
            payable: dict[str, int] = {}
            tops_up: dict[str, str | None] = {}
            for c in candidates:
                if c.uscc in granted or c.uscc in barred:
                    continue
                if payees[c.uscc] is None:  # the account went away since evaluation: a later batch pays
                    log.warning("batch %s: %s has no bank account on record any more; not paid", self.batch_id,
                                c.uscc)
                    continue
                paid = paid_in_group.get(c.uscc, {})
                awards = {**orjson.loads(c.group_awards), self.policy.id: c.full_fen}
                award = stack(awards, {p: fen for p, (fen, _) in paid.items() if p != self.policy.id})[self.policy.id]
                if award.payable_fen > 0:
                    payable[c.uscc] = award.payable_fen
                    tops_up[c.uscc] = paid[award.tops_up][1] if award.tops_up else None
            by_uscc = {c.uscc: c for c in candidates}
            # A share of 0 fen (the budget is spent) grants nothing: the enterprise stays for a batch
            # with budget left, instead of holding a grant that never pays.
            shares = [share for share in prorate(payable, self._budget_left(conn)) if share.paid_fen > 0]
            lines = [self._line(i, s.uscc, s.paid_fen, by_uscc[s.uscc], tops_up[s.uscc], payees[s.uscc], group)
                     for i, s in enumerate(shares, start=1)]
            for start in range(0, len(lines), 1000):
                conn.execute(insert(grant), lines[start:start + 1000])
            decisions = root([bytes.fromhex(str(line["record_sha256"])) for line in lines]).hex()
            self._renew(conn, state=BatchState.DRAFT, running_key=None, worker=None, lease_until=0,
                        line_count=len(lines), total_fen=sum(line["amount_fen"] for line in lines),
                        merkle_root=decisions)
            seal_event(conn, MoneyEvent.DRAFT, self.batch_id, self.actor, lines=lines,
                       decisions={"leaf_count": len(lines), "merkle_root": decisions})

    def _unsealed_history(self, conn: Connection, usccs: set[str]) -> dict[str, str]:
        """Enterprises with an earlier grant that decides this one (of the policy, its conflict
        group or a policy it excludes, in the period) but differs from what the ledger sealed -
        a grant released by hand, say: they are not paid until that is cleared up."""
        if not usccs:
            return {}
        deciding = [grant.c.policy_id == self.policy.id]
        if self.policy.model.conflict_group:
            deciding.append(grant.c.conflict_group == self.policy.model.conflict_group)
        if self.excluded:
            deciding.append(grant.c.policy_id.in_(self.excluded))
        history: list[dict[str, Any]] = []
        for chunk in in_lists(sorted(usccs)):
            history += [dict(r._mapping) for r in conn.execute(select(grant).where(
                grant.c.period == self.period, grant.c.uscc.in_(chunk), or_(*deciding)))]
        altered = set(unsealed(conn, history))
        out = {}
        for line in history:
            if str(line["grant_id"]) in altered:
                log.error("batch %s: grant %s of %s differs from what the ledger sealed; %s is not paid",
                          self.batch_id, line["grant_id"], line["uscc"], line["uscc"])
                out[str(line["uscc"])] = f"grant {line['grant_id']} differs from its seal"
        return out

    def _founded_candidates(self, conn: Connection) -> list[Any]:
        """The batch's evaluated candidates that agree with the evaluation record each cites (the
        records are sealed, the candidates are only a work table): one that does not was altered
        and is not paid."""
        decision = evaluation_record
        rows = conn.execute(select(payout_candidate, decision.c.uscc.label("decision_uscc"),
                                   decision.c.policy_id.label("decision_policy"),
                                   decision.c.outcome.label("decision_outcome"),
                                   decision.c.amount_fen.label("decision_fen"),
                                   decision.c.record_sha256.label("decision_sha256"))
                            .select_from(payout_candidate.outerjoin(
                                decision, decision.c.evaluation_id == payout_candidate.c.evaluation_id))
                            .where(payout_candidate.c.batch_id == self.batch_id, payout_candidate.c.error.is_(None))
                            .order_by(payout_candidate.c.uscc)).all()
        founded = []
        for row in rows:
            if (row.decision_uscc, row.decision_policy, row.decision_outcome, row.decision_fen,
                    row.decision_sha256) == (row.uscc, self.policy.id, ELIGIBLE, row.full_fen, row.record_sha256):
                founded.append(row)
            else:
                log.error("batch %s: the candidate %s does not match its evaluation record %s; not paid",
                          self.batch_id, row.uscc, row.evaluation_id)
        return founded

    def _line(self, number: int, uscc: str, amount_fen: int, candidate: Any, tops_up: str | None,
              payee: Any, group: str | None) -> dict[str, Any]:
        """A new line with every column given (its leaf is sealed as written)."""
        return {"grant_id": f"{self.batch_id}-{number:06d}", "uscc": uscc, "policy_id": self.policy.id,
                "period": self.period, "conflict_group": group, "batch_id": self.batch_id,
                "full_fen": int(candidate.full_fen), "amount_fen": amount_fen, "tops_up": tops_up,
                "evaluation_id": candidate.evaluation_id, "record_sha256": candidate.record_sha256,
                "payee_name": payee.name, "payee_account_no": payee.account_no, "payee_bank": payee.bank,
                "state": LineState.PENDING.value, "return_reason": None, "result_by": None, "confirmed_by": None,
                "withdraw_reason": None, "released": ""}


def _policy_version(conn: Connection, policies: PolicySet, policy_id: str, rule_sha256: str) -> LoadedPolicy:
    """The policy exactly as the batch started under it, even if the rules were reloaded since."""
    loaded = next((p for p in policies if p.id == policy_id and p.sha256 == rule_sha256), None)
    if loaded is not None:
        return loaded
    source = conn.execute(select(policy_version.c.source)
                          .where(policy_version.c.rule_sha256 == rule_sha256)).scalar_one()
    return load_policy_text(source.encode(), CATALOGUE, origin=f"policy_version {rule_sha256[:12]}")


def _now_ms() -> int:
    return int(time.time() * 1000)


class BatchWorkers:
    """Runs RUNNING batches in background threads: new ones when woken, and any batch whose
    worker died (its lease ran out) on the next scan - which, at start, resumes a crashed run."""

    def __init__(self, engine: Engine, policies: Callable[[], PolicySet], settings: RunSettings = RunSettings(),
                 *, max_parallel: int = 2) -> None:
        self.engine, self.policies, self.settings = engine, policies, settings
        self.max_parallel = max_parallel
        self.worker = new_worker_id()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._active: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._scanner = threading.Thread(target=self._loop, name="batch-scanner", daemon=True)

    def start(self) -> None:
        self._scanner.start()

    def wake(self) -> None:
        """Look for work now (a batch was just created)."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the chunks in flight; their batches are given back for the next server."""
        self._stop.set()
        self._wake.set()
        self._scanner.join(timeout)
        with self._lock:
            threads = list(self._active.values())
        for thread in threads:
            thread.join(timeout)

    def _loop(self) -> None:
        poll = max(self.settings.lease_seconds / 3, 0.2)
        while not self._stop.is_set():
            try:
                self._scan()
            except Exception as exc:  # a database hiccup must not end the scanner; the next scan retries
                log.error("batch scan failed: %s", error_text(exc), exc_info=redacted(exc))
            self._wake.wait(poll)
            self._wake.clear()

    def _scan(self) -> None:
        for batch_id in claimable(self.engine):
            with self._lock:
                if batch_id in self._active or len(self._active) >= self.max_parallel:
                    continue
                thread = threading.Thread(target=self._run, args=(batch_id,), name=f"batch-{batch_id}",
                                          daemon=True)
                self._active[batch_id] = thread
            thread.start()

    def _run(self, batch_id: str) -> None:
        try:
            if run_batch(self.engine, self.policies(), batch_id, worker=self.worker, settings=self.settings,
                         stop=self._stop):
                log.warning("batch %s is DRAFT", batch_id)
        except Exception as exc:  # the lease runs out and a later scan (here or elsewhere) retries
            log.error("batch %s failed; it will be retried: %s", batch_id, error_text(exc),
                      exc_info=redacted(exc))
        finally:
            with self._lock:
                self._active.pop(batch_id, None)
            self._wake.set()
