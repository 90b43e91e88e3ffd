"""The calls of the load run (load_run.py): one client's weighted mix of the API's methods, each
call checked against what it asked for, and per-method counts, status codes and latencies.

A client is one thread with its own channel (one HTTP/2 connection). Whom it calls as: an
enterprise reads only its own USCC, admin and auditor any; a registry feed imports; Health is
called without a token. A call answering OK but with the wrong content counts as WRONG_ANSWER,
an error like any non-OK status but RESOURCE_EXHAUSTED (rate limits), which is counted apart.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    import grpc
    from bench_server import Health

CLIENT_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]  # one connection per client
CALL_TIMEOUT = 60.0
OK, WRONG_ANSWER, RATE_LIMITED = "OK", "WRONG_ANSWER", "RESOURCE_EXHAUSTED"
SEEN_IDS = 2_000  # evaluation ids a client remembers for GetEvaluation
WRONG_SAMPLES = 5  # wrong answers described per method

# The mix, by weight. Lookups (ListMatchedBenefits evaluates every policy in force) are the
# slow calls; the weights are what a run of CALLS calls makes of each.
MIX: tuple[tuple[str, int], ...] = (
    ("ListMatchedBenefits", 10),
    ("ExplainEligibility", 20),
    ("GetEnterprise", 12),
    ("ListPolicies", 6),
    ("ListEvaluations", 10),
    ("GetEvaluation", 16),
    ("ImportFacts", 6),
    ("Health/Check", 20),
)


@dataclass(frozen=True)
class Tokens:
    """The bearer tokens of the run's principals; enterprises as (USCC, token)."""

    admin: str
    auditor: str
    feed: str
    operator: str
    approver: str
    enterprises: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Workload:
    """Everything a client needs (picklable: client processes are spawned)."""

    target: str
    calls: int  # calls in all, over every client
    warmup_calls: int  # the first calls, whose latencies are not measured
    period: int
    policies: tuple[str, ...]  # in force for the period
    usccs: tuple[str, ...]
    tokens: Tokens
    feed_lines: tuple[str, ...]  # records of the registry feed, JSON
    import_size: int  # records per ImportFacts stream


@dataclass
class MethodStats:
    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, OK calls after the warm-up
    wrong: list[str] = field(default_factory=list)  # what was wrong, a few samples

    def merge(self, other: MethodStats) -> None:
        self.codes.update(other.codes)
        self.latencies.extend(other.latencies)
        self.wrong.extend(other.wrong[: max(0, WRONG_SAMPLES - len(self.wrong))])


Stats = dict[str, MethodStats]
# evaluation id -> (USCC, policy, period, outcome as stored: "ELIGIBLE", ..., amount in fen), as answered
Decision = tuple[str, str, int, str, int]
Decisions = dict[str, Decision]


def merge_stats(into: Stats, other: Stats) -> None:
    for method, stats in other.items():
        into.setdefault(method, MethodStats()).merge(stats)


class WrongAnswerError(Exception):
    """An OK reply whose content does not answer the request."""


class _Shared(Protocol):
    """What TicketCounter needs of a multiprocessing Value."""

    value: int

    def get_lock(self) -> AbstractContextManager[object]: ...


class TicketCounter:
    """Hands out call numbers 0 .. calls-1 across threads (and processes: `value` and `lock`
    may be a multiprocessing Value and its lock)."""

    def __init__(self, value: _Shared, calls: int) -> None:
        self._value, self._calls = value, calls

    def take(self) -> int | None:
        with self._value.get_lock():
            ticket = int(self._value.value)
            if ticket >= self._calls:
                return None
            self._value.value = ticket + 1
        return ticket


def record(stats: Stats, method: str, code: str, seconds: float, measured: bool) -> None:
    entry = stats.setdefault(method, MethodStats())
    entry.codes[code] += 1
    if measured and code == OK:
        entry.latencies.append(seconds)


def merge_decisions(into: Decisions, other: Decisions) -> list[str]:
    """Add `other` to `into`; the ids answered with two different decisions."""
    conflicts = [key for key, decision in other.items() if into.setdefault(key, decision) != decision]
    return conflicts


def run_client(work: Workload, index: int, tickets: TicketCounter, stats: Stats, decisions: Decisions) -> None:
    """One client: calls from the mix until the run's calls are all taken; the decisions it was
    answered with go to `decisions`."""
    import grpc

    channel = grpc.insecure_channel(work.target, options=CLIENT_OPTIONS)
    try:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
        client = _Client(work, channel, random.Random(index * 7919 + 1), decisions)
        methods = [name for name, _ in MIX]
        weights = [weight for _, weight in MIX]
        while (ticket := tickets.take()) is not None:
            method = client.rng.choices(methods, weights)[0]
            started = time.perf_counter()
            try:
                method = client.call(method)
                code = OK
            except grpc.RpcError as err:
                code = err.code().name
            except WrongAnswerError as wrong:
                code = WRONG_ANSWER
                samples = stats.setdefault(method, MethodStats()).wrong
                if len(samples) < WRONG_SAMPLES:
                    samples.append(str(wrong))
            record(stats, method, code, time.perf_counter() - started, ticket >= work.warmup_calls)
    finally:
        channel.close()


class _Client:
    """One client's stubs and what it has seen (evaluation ids and their USCCs)."""

    def __init__(self, work: Workload, channel: grpc.Channel, rng: random.Random, decisions: Decisions) -> None:
        from benefits.v1 import (
            audit_service_pb2_grpc,
            benefit_service_pb2_grpc,
            policy_service_pb2_grpc,
            registry_service_pb2_grpc,
        )
        from grpc_health.v1 import health_pb2_grpc

        self.work, self.rng, self.decisions = work, rng, decisions
        self.benefits = benefit_service_pb2_grpc.BenefitServiceStub(channel)
        self.registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        self.policies = policy_service_pb2_grpc.PolicyServiceStub(channel)
        self.audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        self.health = cast("Health", health_pb2_grpc.HealthStub(channel))
        self.seen: deque[tuple[str, str]] = deque(maxlen=SEEN_IDS)  # (evaluation id, USCC)
        self._calls: dict[str, Callable[[], None]] = {
            "ListMatchedBenefits": self.list_matched,
            "ExplainEligibility": self.explain,
            "GetEnterprise": self.get_enterprise,
            "ListPolicies": self.list_policies,
            "ListEvaluations": self.list_evaluations,
            "GetEvaluation": self.get_evaluation,
            "ImportFacts": self.import_facts,
            "Health/Check": self.check_health,
        }

    def call(self, method: str) -> str:
        """Make one call of `method`; the method called (an audit read before any evaluation id
        was seen is an explanation instead)."""
        if method in ("GetEvaluation", "ListEvaluations") and not self.seen:
            method = "ExplainEligibility"
        self._calls[method]()
        return method

    # whom a read is made as: half the time an enterprise for itself, else a staff role for any
    def _reader(self, staff: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        if self.rng.random() < 0.5:
            uscc, token = self.rng.choice(self.work.tokens.enterprises)
        else:
            uscc, token = self.rng.choice(self.work.usccs), staff
        return uscc, _bearer(token)

    def _auditor(self) -> tuple[tuple[str, str], ...]:
        tokens = self.work.tokens
        return _bearer(tokens.auditor if self.rng.random() < 0.5 else tokens.admin)

    def list_matched(self) -> None:
        from benefits.v1 import benefit_service_pb2 as pb

        uscc, metadata = self._reader(self.work.tokens.admin)
        reply = self.benefits.ListMatchedBenefits(
            pb.ListMatchedBenefitsRequest(uscc=uscc, period=self.work.period), metadata=metadata, timeout=CALL_TIMEOUT
        )
        wrong = [b.policy_id for b in reply.benefits if b.period != self.work.period]
        if wrong:
            raise WrongAnswerError(f"ListMatchedBenefits {uscc}: periods other than {self.work.period}: {wrong}")

    def explain(self) -> None:
        from benefits.v1 import benefit_service_pb2 as pb

        uscc, metadata = self._reader(self.work.tokens.admin)
        policy = self.rng.choice(self.work.policies)
        reply = self.benefits.ExplainEligibility(
            pb.ExplainEligibilityRequest(uscc=uscc, policy_id=policy, period=self.work.period),
            metadata=metadata,
            timeout=CALL_TIMEOUT,
        )
        got = reply.evaluation
        if (got.uscc, got.policy_id, got.period) != (uscc, policy, self.work.period) or not got.evaluation_id:
            raise WrongAnswerError(f"ExplainEligibility {uscc} {policy}: answered {got.uscc} {got.policy_id}")
        from benefits.v1 import evaluation_pb2

        decision = (
            uscc,
            policy,
            got.period,
            evaluation_pb2.Outcome.Name(got.outcome).removeprefix("OUTCOME_"),
            got.amount_fen,
        )
        if self.decisions.setdefault(got.evaluation_id, decision) != decision:
            raise WrongAnswerError(
                f"ExplainEligibility {got.evaluation_id}: answered before as {self.decisions[got.evaluation_id]}"
            )
        self.seen.append((got.evaluation_id, uscc))

    def get_enterprise(self) -> None:
        from benefits.v1 import registry_service_pb2 as pb

        uscc, metadata = self._reader(self.work.tokens.auditor)
        reply = self.registry.GetEnterprise(pb.GetEnterpriseRequest(uscc=uscc), metadata=metadata, timeout=CALL_TIMEOUT)
        if reply.uscc != uscc or not reply.records:
            raise WrongAnswerError(f"GetEnterprise {uscc}: answered {reply.uscc} with {len(reply.records)} records")

    def list_policies(self) -> None:
        from benefits.v1 import policy_service_pb2 as pb

        _, token = self.rng.choice(self.work.tokens.enterprises)
        reply = self.policies.ListPolicies(
            pb.ListPoliciesRequest(page_size=100), metadata=_bearer(token), timeout=CALL_TIMEOUT
        )
        missing = set(self.work.policies) - {p.policy_id for p in reply.policies}
        if missing:
            raise WrongAnswerError(f"ListPolicies: policies in force missing: {sorted(missing)}")

    def list_evaluations(self) -> None:
        from benefits.v1 import audit_service_pb2 as pb

        _, uscc = self.rng.choice(self.seen)
        reply = self.audit.ListEvaluations(
            pb.ListEvaluationsRequest(uscc=uscc, page_size=20), metadata=self._auditor(), timeout=CALL_TIMEOUT
        )
        others = {e.uscc for e in reply.evaluations} - {uscc}
        if not reply.evaluations or others:
            raise WrongAnswerError(f"ListEvaluations {uscc}: {len(reply.evaluations)} records, other USCCs {others}")

    def get_evaluation(self) -> None:
        from benefits.v1 import audit_service_pb2 as pb

        evaluation_id, uscc = self.rng.choice(self.seen)
        reply = self.audit.GetEvaluation(
            pb.GetEvaluationRequest(evaluation_id=evaluation_id), metadata=self._auditor(), timeout=CALL_TIMEOUT
        )
        if (reply.evaluation_id, reply.uscc) != (evaluation_id, uscc):
            raise WrongAnswerError(f"GetEvaluation {evaluation_id}: answered {reply.evaluation_id} {reply.uscc}")

    def import_facts(self) -> None:
        """A small stream of the feed's own records: keyed and replaced by as_of, so sending one
        again changes nothing."""
        from benefits.v1 import registry_service_pb2 as pb

        lines = self.work.feed_lines
        start = self.rng.randrange(len(lines) - self.work.import_size)
        stream = (pb.ImportFactsRequest(record_json=line) for line in lines[start : start + self.work.import_size])
        reply = self.registry.ImportFacts(stream, metadata=_bearer(self.work.tokens.feed), timeout=CALL_TIMEOUT)
        if reply.received_count != self.work.import_size or reply.rejected_count:
            raise WrongAnswerError(
                f"ImportFacts: received {reply.received_count} of {self.work.import_size}, "
                f"rejected {reply.rejected_count}: {[r.reason for r in reply.rejects][:2]}"
            )

    def check_health(self) -> None:
        from grpc_health.v1 import health_pb2

        reply = self.health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise WrongAnswerError(f"Health/Check: status {reply.status}")


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
