"""Running a payout batch: evaluate every enterprise, partition by partition, then stack, pro-rate,
grant and seal in one transaction.

The worker that holds the batch (by a lease, renewed while it runs) is its coordinator: it splits
the registry into partitions (`service.payouts.partitions`: each commits chunk by chunk with its
own cursor and lease, exactly once) and runs them in this thread, in worker processes or on a Dask
cluster (`service.payouts.pools`). Batches started together - the policies of a period - run
together: one pass over the registry decides them all (`run_batches`), and each then ends on its
own, in the order they were created. Grants are written only at the end, in the transaction that
turns the batch DRAFT: a batch is never visible as complete until it is. When a server dies,
another (or the restarted one) takes the batch over once the lease has run out, and every
partition resumes after its last committed chunk.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from sqlalchemy import func, insert, or_, select
from sqlalchemy.engine import Connection, Engine

from enterprise_registry.db import error_text, redacted, refresh_statistics
from rules.loader import LoadedPolicy, PolicySet, load_policy_text
from rules.values import Outcome
from service.audit.ledger import ledger_transaction
from service.audit.merkle import RootBuilder
from service.audit.records import Actor, evaluation_record, policy_version
from service.catalogue import CATALOGUE
from service.payouts.allocation import prorate, stack
from service.payouts.batches import Batch, get_batch, start_batch
from service.payouts.partitions import (
    DEFAULT_SETTINGS,
    BatchTask,
    ChunkEvaluator,
    LeaseLostError,
    PartitionTask,
    RunSettings,
    all_done,
    ensure_partitions,
    excluded_grants,
    layout,
    new_worker_id,
    now_ms,
    policies_of,
    run_partition_with,
    standing_grants,
)
from service.payouts.payees import Payee, registry_payees
from service.payouts.pools import PartitionPool, close_shared_pools, shared_process_pool
from service.payouts.seals import MoneyEvent, seal_batch_lines, unsealed
from service.payouts.states import BatchState, LineState
from service.payouts.tables import grant, in_lists, payout_batch, payout_candidate, payout_partition

__all__ = [
    "BatchWorkers",
    "LeaseLostError",
    "RunGroup",
    "RunSettings",
    "claim",
    "claimable",
    "claimable_groups",
    "create_batch",
    "create_batches",
    "new_worker_id",
    "release",
    "run_batch",
    "run_batches",
    "together",
]

log = logging.getLogger("benefits.payouts")

_CANDIDATES_PER_PAGE = 5000  # what a batch's end holds of its candidates at a time


def run_batch(
    engine: Engine,
    policies: PolicySet,
    batch_id: str,
    *,
    worker: str,
    settings: RunSettings = DEFAULT_SETTINGS,
    stop: threading.Event | None = None,
    pool: PartitionPool | None = None,
) -> bool:
    """Run a RUNNING batch to DRAFT, resuming each partition after its cursor: in this thread, or
    with `settings.workers` > 1 (or a `pool`) in worker processes. False when the batch is not
    RUNNING, another worker holds it, or `stop` was set (the batch is then given back)."""
    return batch_id in run_batches(engine, policies, [batch_id], worker=worker, settings=settings, stop=stop, pool=pool)


def run_batches(
    engine: Engine,
    policies: PolicySet,
    batch_ids: Sequence[str],
    *,
    worker: str,
    settings: RunSettings = DEFAULT_SETTINGS,
    stop: threading.Event | None = None,
    pool: PartitionPool | None = None,
) -> list[str]:
    """Run RUNNING batches to DRAFT, together where they can be (`together`); the ids of those
    that reached DRAFT. A batch another worker holds is left alone; when `stop` is set, every
    batch not yet DRAFT is given back. A group that fails does not hold up the others: they run,
    and then the first failure is raised (its batches are not given back: they are retried when
    their lease runs out, not at once and again)."""
    claimed = [batch_id for batch_id in batch_ids if claim(engine, batch_id, worker, settings.lease_seconds)]
    runs: list[_Run] = []
    failures: list[tuple[list[str], Exception]] = []
    for batch_id in claimed:
        try:
            runs.append(_Run.load(engine, policies, batch_id, worker, settings))
        except Exception as exc:  # its rule text no longer loads, say
            failures.append(([batch_id], exc))
    finished: list[str] = []
    failed: set[str] = set()
    for group in together(engine, runs, settings) if runs else []:
        try:
            refresh_statistics(engine)  # the records and grants of the groups before
            if not _run_partitions(group, stop, pool):
                break
            refresh_statistics(engine)  # the end reads this group's records back
            for run in group.runs:  # in the order of creation: a conflict group's later batch sees the earlier's grants
                try:
                    run.finish()
                    finished.append(run.batch_id)
                except LeaseLostError:
                    log.warning("batch %s: lease lost to another worker; it continues the batch", run.batch_id)
        except LeaseLostError as lost:
            log.warning("lease lost (%s): the batches continue with their new worker or on the next scan", lost)
        except Exception as exc:
            failures.append(([run.batch_id for run in group.runs], exc))
            failed.update(run.batch_id for run in group.runs if run.batch_id not in finished)
    _release(engine, [run for run in runs if run.batch_id not in finished and run.batch_id not in failed], worker)
    for batch_ids_failed, error in failures[1:]:
        log.error(
            "batch %s failed; it will be retried: %s",
            ", ".join(batch_ids_failed),
            error_text(error),
            exc_info=redacted(error),
        )
    if failures:
        raise failures[0][1]
    return finished


@dataclass
class RunGroup:
    """Batches that run together, in the order of creation, and the partitions they share (one
    layout: each batch has its own rows, with the same ranges, cursors and ends)."""

    runs: list[_Run]
    partitions: list[Any]


def together(engine: Engine, runs: Sequence[_Run], settings: RunSettings) -> list[RunGroup]:
    """The batches in groups that run together: the same period and evaluation date, partitions
    laid out alike (so made when they start together) and one rule text per policy among them and
    their rivals."""
    count = settings.partitions or settings.workers
    partitions = ensure_partitions(engine, [run.batch_id for run in runs], count)
    groups: list[RunGroup] = []
    keys: list[tuple[Any, ...]] = []
    for run in sorted(runs, key=lambda r: (r.row.created_at, r.batch_id)):
        key = (run.period, run.evaluator.today, layout(partitions[run.batch_id]))
        home = next((g for g, k in zip(groups, keys) if k == key and _one_text_each([*g.runs, run])), None)
        if home is None:
            groups.append(RunGroup([run], partitions[run.batch_id]))
            keys.append(key)
        else:
            home.runs.append(run)
    return groups


def _one_text_each(runs: Sequence[_Run]) -> bool:
    try:
        policies_of([run.evaluator for run in runs])
    except ValueError:
        return False
    return True


def _run_partitions(group: RunGroup, stop: threading.Event | None, pool: PartitionPool | None) -> bool:
    """Every partition of the group's batches to its end; False when stopped first."""
    first = group.runs[0]
    settings, engine = first.settings, first.engine
    url = engine.url.render_as_string(hide_password=False)
    batches = tuple(run.batch_task() for run in group.runs)
    tasks = [
        PartitionTask(url, batches, p.partition_no, first.worker, settings) for p in group.partitions if not p.done
    ]
    stopped = stop.is_set if stop is not None else (lambda: False)
    names = ", ".join(run.batch_id for run in group.runs)
    if pool is None and settings.workers <= 1:
        for task in tasks:
            run_partition_with(engine, [run.evaluator for run in group.runs], task, stop=stopped)
            if stopped():
                return False
        return True
    if pool is None:
        pool = shared_process_pool(settings.workers)

    def heartbeat() -> None:
        for run in group.runs:
            run.renew_lease()

    results = pool.run(tasks, heartbeat=heartbeat, stopped=stopped, interval=max(settings.lease_seconds / 3, 0.2))
    for result in results or ():
        log.info(
            "batches %s partition %d: %d enterprises evaluated in process %d",
            names,
            result.partition_no,
            result.evaluated,
            result.pid,
        )
    return results is not None


def create_batch(
    engine: Engine,
    policies: PolicySet,
    *,
    policy_id: str,
    period: int,
    request_id: str,
    actor: Actor,
    today: date,
    settings: RunSettings = DEFAULT_SETTINGS,
) -> Batch:
    """Start a batch and run it to DRAFT in the calling thread (the CLI and tests; the server runs
    batches in `BatchWorkers`). A repeated request returns its batch as it stands."""
    return create_batches(
        engine, policies, [(policy_id, request_id)], period=period, actor=actor, today=today, settings=settings
    )[0]


def create_batches(
    engine: Engine,
    policies: PolicySet,
    requests: Sequence[tuple[str, str]],
    *,
    period: int,
    actor: Actor,
    today: date,
    settings: RunSettings = DEFAULT_SETTINGS,
) -> list[Batch]:
    """Start a batch per (policy id, request id) and run them to DRAFT together in the calling
    thread: one pass over the registry for all. Repeated requests return their batches as they stand."""
    batches = [
        start_batch(
            engine, policies, policy_id=policy_id, period=period, request_id=request_id, actor=actor, today=today
        )
        for policy_id, request_id in requests
    ]
    running = [batch.batch_id for batch in batches if batch.state == BatchState.RUNNING]
    if running:
        run_batches(engine, policies, running, worker=new_worker_id(), settings=settings)
    return [get_batch(engine, batch.batch_id) for batch in batches]


def claim(engine: Engine, batch_id: str, worker: str, lease_seconds: float) -> bool:
    """Take a RUNNING batch whose lease is free or ran out (or is already ours)."""
    now = now_ms()
    with engine.begin() as conn:
        changed = conn.execute(
            payout_batch.update()
            .where(
                payout_batch.c.batch_id == batch_id,
                payout_batch.c.state == BatchState.RUNNING,
                or_(payout_batch.c.worker.is_(None), payout_batch.c.worker == worker, payout_batch.c.lease_until < now),
            )
            .values(worker=worker, lease_until=now + int(lease_seconds * 1000))
        )
    return changed.rowcount == 1


def release(engine: Engine, batch_id: str, worker: str) -> None:
    """Give a batch back (on shutdown), so the next server resumes it without waiting."""
    with engine.begin() as conn:
        # Partitions first, then the batch: the order a committing chunk takes them in
        # (`partitions._advance`), or the two deadlock on PostgreSQL.
        conn.execute(
            payout_partition.update()
            .where(
                payout_partition.c.batch_id == batch_id,
                payout_partition.c.worker.startswith(f"{worker}/", autoescape=True),
            )
            .values(worker=None, lease_until=0)
        )
        conn.execute(
            payout_batch.update()
            .where(payout_batch.c.batch_id == batch_id, payout_batch.c.worker == worker)
            .values(worker=None, lease_until=0)
        )


def _release(engine: Engine, runs: Sequence[_Run], worker: str) -> None:
    for run in runs:
        release(engine, run.batch_id, worker)


def claimable(engine: Engine) -> list[str]:
    """RUNNING batches that nobody holds: new ones, and those of a worker that died."""
    return [batch_id for group in claimable_groups(engine) for batch_id in group]


def claimable_groups(engine: Engine) -> list[list[str]]:
    """RUNNING batches that nobody holds (new ones, and those of a worker that died), by period
    and evaluation date: the batches that may run together; oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(payout_batch.c.batch_id, payout_batch.c.period, payout_batch.c.evaluated_on)
            .where(
                payout_batch.c.state == BatchState.RUNNING,
                or_(payout_batch.c.worker.is_(None), payout_batch.c.lease_until < now_ms()),
            )
            .order_by(payout_batch.c.created_at)
        ).all()
    groups: dict[tuple[int, str], list[str]] = {}
    for row in rows:
        groups.setdefault((row.period, row.evaluated_on), []).append(row.batch_id)
    return list(groups.values())


class _Run:
    """One coordinator's run of one batch: what its partitions need, and its end (DRAFT)."""

    def __init__(self, engine: Engine, row: Any, evaluator: ChunkEvaluator, worker: str, settings: RunSettings) -> None:
        self.engine, self.row, self.evaluator = engine, row, evaluator
        self.policy, self.rivals, self.excluded = evaluator.policy, evaluator.rivals, evaluator.excluded
        self.worker, self.settings = worker, settings
        self.batch_id: str = row.batch_id
        self.period: int = row.period
        self.actor = evaluator.actor

    @classmethod
    def load(cls, engine: Engine, policies: PolicySet, batch_id: str, worker: str, settings: RunSettings) -> _Run:
        with engine.connect() as conn:
            row = conn.execute(select(payout_batch).where(payout_batch.c.batch_id == batch_id)).one()
            policy = _policy_version(conn, policies, row.policy_id, row.rule_sha256)
            rivals = [
                _policy_version(conn, policies, rival_id, sha256) for rival_id, sha256 in orjson.loads(row.rival_rules)
            ]
        # The exclusions of the text the batch runs under, and those the current rules add.
        excluded = frozenset(policy.excludes) | (
            policies.excluded(policy.id) if policy.id in {p.id for p in policies} else frozenset()
        )
        return cls(engine, row, ChunkEvaluator.for_batch(row, policy, rivals, sorted(excluded)), worker, settings)

    def batch_task(self) -> BatchTask:
        """The batch as a partition task carries it to a worker."""
        return BatchTask(self.batch_id, tuple(p.source for p in (self.policy, *self.rivals)), tuple(self.excluded))

    def renew_lease(self) -> None:
        with self.engine.begin() as conn:
            self._renew(conn)

    def _budget_left(self, conn: Connection) -> int | None:
        """The period's budget less what standing grants of earlier batches already spent."""
        if self.policy.budget_fen is None:
            return None
        spent = conn.execute(
            select(func.coalesce(func.sum(grant.c.amount_fen), 0)).where(
                grant.c.policy_id == self.policy.id, grant.c.period == self.period, grant.c.released == ""
            )
        ).scalar_one()
        return max(self.policy.budget_fen - int(spent), 0)

    def _renew(self, conn: Connection, **values: Any) -> None:
        # First statement of every write: proves the lease is still ours and extends it.
        changed = conn.execute(
            payout_batch.update()
            .where(
                payout_batch.c.batch_id == self.batch_id,
                payout_batch.c.state == BatchState.RUNNING,
                payout_batch.c.worker == self.worker,
            )
            .values(**{"lease_until": now_ms() + int(self.settings.lease_seconds * 1000), **values})
        )
        if changed.rowcount != 1:
            raise LeaseLostError(self.batch_id)

    # -- the end ----------------------------------------------------------------------------------

    def finish(self) -> None:
        """Stack, pro-rate, grant, take each payee from the registry, seal and turn DRAFT - one
        transaction, reading the candidates a page at a time: what it holds for the whole batch
        is a few numbers and the payee per line to pay (pro-rating needs every amount at once)."""
        with ledger_transaction(self.engine) as conn:
            self._renew(conn)
            if not all_done(conn, self.batch_id):
                raise LeaseLostError(f"{self.batch_id}: a partition is still running")
            payable: dict[str, int] = {}
            tops_up: dict[str, str] = {}
            payees: dict[str, Payee] = {}
            for page in self._founded_candidates(conn):
                self._stack_page(conn, page, payable, tops_up, payees)
            # A share of 0 fen (the budget is spent) grants nothing: the enterprise stays for a batch
            # with budget left, instead of holding a grant that never pays.
            paid = {s.uscc: s.paid_fen for s in prorate(payable, self._budget_left(conn)) if s.paid_fen > 0}
            del payable
            decisions, count, total = RootBuilder(), 0, 0
            for page in self._founded_candidates(conn):  # the same pages again, now paid
                lines = []
                for candidate in page:
                    if candidate.uscc in paid:
                        count += 1
                        lines.append(
                            self._line(
                                count,
                                candidate,
                                paid[candidate.uscc],
                                tops_up.get(candidate.uscc),
                                payees[candidate.uscc],
                            )
                        )
                if lines:
                    conn.execute(insert(grant), lines)
                for line in lines:
                    decisions.add(bytes.fromhex(str(line["record_sha256"])))
                    total += int(line["amount_fen"])
            if count != len(paid):
                raise RuntimeError(f"batch {self.batch_id}: its candidates changed while it reached DRAFT")
            merkle_root = decisions.root().hex()
            self._renew(
                conn,
                state=BatchState.DRAFT,
                running_key=None,
                worker=None,
                lease_until=0,
                line_count=count,
                total_fen=total,
                merkle_root=merkle_root,
            )
            seal_batch_lines(
                conn,
                MoneyEvent.DRAFT,
                self.batch_id,
                self.actor,
                decisions={"leaf_count": count, "merkle_root": merkle_root},
            )

    def _stack_page(
        self,
        conn: Connection,
        page: Sequence[Any],
        payable: dict[str, int],
        tops_up: dict[str, str],
        payees: dict[str, Payee],
    ) -> None:
        """What each candidate of the page is owed now: nothing when it holds a grant of the
        policy, is barred or has no account any more; else its award stacked against the standing
        grants of its conflict group (就高不重复)."""
        if not page:
            return
        usccs = {c.uscc for c in page}
        standing = standing_grants(conn, self.period, sorted(usccs))
        # Checked again here, under the ledger lock: a batch of an excluded policy may have
        # reached DRAFT since the chunk was evaluated.
        barred = excluded_grants(conn, self.excluded, self.period, usccs)
        barred.update(self._unsealed_history(conn, usccs))
        accounts = registry_payees(conn, usccs)
        group = self.policy.model.conflict_group
        group_grants = self._group_grants(conn, usccs, group) if group else {}
        for c in page:
            if self.policy.id in standing.get(c.uscc, {}) or c.uscc in barred:
                continue
            account = accounts[c.uscc]
            if account is None:  # the account went away since evaluation: a later batch pays
                log.warning("batch %s: %s has no bank account on record any more; not paid", self.batch_id, c.uscc)
                continue
            in_group = group_grants.get(c.uscc, {})
            awards = {**orjson.loads(c.group_awards), self.policy.id: c.full_fen}
            award = stack(awards, {p: fen for p, (fen, _) in in_group.items() if p != self.policy.id})[self.policy.id]
            if award.payable_fen > 0:
                payable[c.uscc] = award.payable_fen
                payees[c.uscc] = account
                if award.tops_up:
                    tops_up[c.uscc] = in_group[award.tops_up][1]

    def _group_grants(self, conn: Connection, usccs: set[str], group: str) -> dict[str, dict[str, tuple[int, str]]]:
        """The standing grants of the conflict group in the period held by `usccs`:
        USCC -> policy -> (fen, grant id); one query over the USCC range of the page."""
        out: dict[str, dict[str, tuple[int, str]]] = defaultdict(dict)
        for g in conn.execute(
            select(grant.c.uscc, grant.c.policy_id, grant.c.amount_fen, grant.c.grant_id).where(
                grant.c.conflict_group == group,
                grant.c.period == self.period,
                grant.c.released == "",
                grant.c.uscc.between(min(usccs), max(usccs)),
            )
        ):
            if g.uscc in usccs:
                out[g.uscc][g.policy_id] = (int(g.amount_fen), str(g.grant_id))
        return out

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
            history += [
                dict(r._mapping)
                for r in conn.execute(
                    select(grant).where(grant.c.period == self.period, grant.c.uscc.in_(chunk), or_(*deciding))
                )
            ]
        altered = set(unsealed(conn, history))
        out = {}
        for line in history:
            if str(line["grant_id"]) in altered:
                log.error(
                    "batch %s: grant %s of %s differs from what the ledger sealed; %s is not paid",
                    self.batch_id,
                    line["grant_id"],
                    line["uscc"],
                    line["uscc"],
                )
                out[str(line["uscc"])] = f"grant {line['grant_id']} differs from its seal"
        return out

    def _founded_candidates(self, conn: Connection) -> Iterator[list[Any]]:
        """The batch's evaluated candidates that agree with the evaluation record each cites (the
        records are sealed, the candidates are only a work table), in USCC order, a page at a
        time: one that does not agree was altered and is not paid."""
        decision = evaluation_record
        last = ""
        while True:
            rows = conn.execute(
                select(
                    payout_candidate,
                    decision.c.uscc.label("decision_uscc"),
                    decision.c.policy_id.label("decision_policy"),
                    decision.c.outcome.label("decision_outcome"),
                    decision.c.amount_fen.label("decision_fen"),
                    decision.c.record_sha256.label("decision_sha256"),
                )
                .select_from(
                    payout_candidate.outerjoin(decision, decision.c.evaluation_id == payout_candidate.c.evaluation_id)
                )
                .where(
                    payout_candidate.c.batch_id == self.batch_id,
                    payout_candidate.c.error.is_(None),
                    payout_candidate.c.uscc > last,
                )
                .order_by(payout_candidate.c.uscc)
                .limit(_CANDIDATES_PER_PAGE)
            ).all()
            if not rows:
                return
            last = rows[-1].uscc
            founded = []
            for row in rows:
                if (
                    row.decision_uscc,
                    row.decision_policy,
                    row.decision_outcome,
                    row.decision_fen,
                    row.decision_sha256,
                ) == (row.uscc, self.policy.id, Outcome.ELIGIBLE, row.full_fen, row.record_sha256):
                    founded.append(row)
                else:
                    log.error(
                        "batch %s: the candidate %s does not match its evaluation record %s; not paid",
                        self.batch_id,
                        row.uscc,
                        row.evaluation_id,
                    )
            yield founded

    def _line(self, number: int, candidate: Any, amount_fen: int, tops_up: str | None, payee: Payee) -> dict[str, Any]:
        """A new line with every column given (its leaf is sealed as written)."""
        return {
            "grant_id": f"{self.batch_id}-{number:06d}",
            "uscc": candidate.uscc,
            "policy_id": self.policy.id,
            "period": self.period,
            "conflict_group": self.policy.model.conflict_group,
            "batch_id": self.batch_id,
            "full_fen": int(candidate.full_fen),
            "amount_fen": amount_fen,
            "tops_up": tops_up,
            "evaluation_id": candidate.evaluation_id,
            "record_sha256": candidate.record_sha256,
            "payee_name": payee.name,
            "payee_account_no": payee.account_no,
            "payee_bank": payee.bank,
            "state": LineState.PENDING.value,
            "return_reason": None,
            "result_by": None,
            "confirmed_by": None,
            "withdraw_reason": None,
            "released": "",
        }


def _policy_version(conn: Connection, policies: PolicySet, policy_id: str, rule_sha256: str) -> LoadedPolicy:
    """The policy exactly as the batch started under it, even if the rules were reloaded since."""
    loaded = next((p for p in policies if p.id == policy_id and p.sha256 == rule_sha256), None)
    if loaded is not None:
        return loaded
    source = conn.execute(
        select(policy_version.c.source).where(policy_version.c.rule_sha256 == rule_sha256)
    ).scalar_one()
    return load_policy_text(source.encode(), CATALOGUE, origin=f"policy_version {rule_sha256[:12]}")


class BatchWorkers:
    """Runs RUNNING batches in background threads: new ones when woken, and any batch whose
    worker died (its lease ran out) on the next scan - which, at start, resumes a crashed run."""

    def __init__(
        self,
        engine: Engine,
        policies: Callable[[], PolicySet],
        settings: RunSettings = DEFAULT_SETTINGS,
        *,
        max_parallel: int = 2,
        pool: PartitionPool | None = None,
    ) -> None:
        self.engine, self.policies, self.settings = engine, policies, settings
        self.max_parallel = max_parallel
        self.pool = pool  # where partitions run (a Dask cluster); None: per settings.workers
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
        close_shared_pools()

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
        # The batches found waiting, one thread per period and evaluation date (those may run
        # together: `run_batches`), up to `max_parallel` threads.
        for batch_ids in claimable_groups(self.engine):
            with self._lock:
                waiting = [batch_id for batch_id in batch_ids if batch_id not in self._active]
                if not waiting or len(set(self._active.values())) >= self.max_parallel:
                    continue
                thread = threading.Thread(target=self._run, args=(waiting,), name=f"batch-{waiting[0]}", daemon=True)
                for batch_id in waiting:
                    self._active[batch_id] = thread
            thread.start()

    def _run(self, batch_ids: Sequence[str]) -> None:
        try:
            for batch_id in run_batches(
                self.engine,
                self.policies(),
                batch_ids,
                worker=self.worker,
                settings=self.settings,
                stop=self._stop,
                pool=self.pool,
            ):
                log.warning("batch %s is DRAFT", batch_id)
        except Exception as exc:  # the lease runs out and a later scan (here or elsewhere) retries
            log.error(
                "batch %s failed; it will be retried: %s", ", ".join(batch_ids), error_text(exc), exc_info=redacted(exc)
            )
        finally:
            with self._lock:
                for batch_id in batch_ids:
                    self._active.pop(batch_id, None)
            self._wake.set()
