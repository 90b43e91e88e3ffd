"""Benchmark: the gRPC API end to end, against a baseline measured on the same server in the same run.

  baseline:  grpc.health.v1.Health/Check        (no auth, no database, minimal handler work)
  explain:   BenefitService/ExplainEligibility  (admin token; a random USCC of the registry and a
                                                 random policy in force for the period, per call)

The server runs in a subprocess (`python -m service.cli serve`), so the load generator does not
share its GIL. Each client is a thread with its own channel (`grpc.use_local_subchannel_pool`:
one real HTTP/2 connection per client) making blocking unary calls back to back. With
--client-procs N the clients are spread over N processes (spawned), for when one Python process
cannot generate the load; the CPU columns show which side is busy (100 % = one core).

The registry (N synthetic enterprises, `enterprise_registry.synthetic`) is built once and cached
under var/bench/ as JSON Lines and a SQLite database; later runs with the same --count and --seed
reuse it.

Usage: python benchmarks/bench_api.py [--count 100000] [--seconds 10] [--clients 1,8,32]
                                      [--client-procs 1] [--workers 16] [--seed 7] [--period 2025]
Prints figures only; nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from bench_server import CACHE, ServerProcess, own_cpu, policies_in_force, prepare_registry, wait_serving

if TYPE_CHECKING:
    from bench_server import Health

CLIENT_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
CALL_TIMEOUT = 30.0
BARRIER_TIMEOUT = 300.0  # a broken run fails instead of hanging


# ---------------------------------------------------------------------------------------------
# The load: one client = one thread with its own channel.
@dataclass
class Job:
    kind: str  # "health" or "explain"
    target: str
    token: str
    usccs: list[str]
    policies: list[str]
    period: int
    warmup: float
    seconds: float


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)  # seconds, calls in the window
    errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[int] = field(default_factory=Counter)


def _client(job: Job, index: int, barrier: Any, result: ClientResult) -> None:
    import grpc
    from benefits.v1 import benefit_service_pb2, benefit_service_pb2_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    rng = random.Random(index * 7919 + 1)
    channel = grpc.insecure_channel(job.target, options=CLIENT_OPTIONS)
    try:
        if job.kind == "health":
            check = cast("Health", health_pb2_grpc.HealthStub(channel)).Check
            request = health_pb2.HealthCheckRequest()

            def call() -> None:
                check(request, timeout=CALL_TIMEOUT)
        else:
            explain = benefit_service_pb2_grpc.BenefitServiceStub(channel).ExplainEligibility
            metadata = (("authorization", f"Bearer {job.token}"),)
            usccs, policies, period = job.usccs, job.policies, job.period
            Request = benefit_service_pb2.ExplainEligibilityRequest

            def call() -> None:
                response = explain(
                    Request(uscc=rng.choice(usccs), policy_id=rng.choice(policies), period=period),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT,
                )
                result.outcomes[response.evaluation.outcome] += 1

        try:
            grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
            call()  # connection and first-call costs stay out of the measurement
        except (grpc.RpcError, grpc.FutureTimeoutError) as err:
            # Counted, never fatal before the barrier: a client that died here would leave the
            # others waiting for it.
            code = err.code().name if isinstance(err, grpc.RpcError) else "CONNECT_TIMEOUT"
            result.errors[f"warm-up {code}"] += 1
        barrier.wait(timeout=BARRIER_TIMEOUT)
        start = time.perf_counter()
        measure_from = start + job.warmup
        end = measure_from + job.seconds
        latencies = result.latencies
        clock = time.perf_counter
        while (before := clock()) < end:
            try:
                call()
            except grpc.RpcError as err:
                result.errors[err.code().name] += 1
                continue
            if before >= measure_from:
                latencies.append(clock() - before)
    finally:
        channel.close()


def _run_threads(job: Job, first_index: int, count: int, barrier: Any) -> ClientResult:
    """Run `count` clients as threads of this process; their results merged."""
    results = [ClientResult() for _ in range(count)]
    threads = [
        threading.Thread(target=_client, args=(job, first_index + i, barrier, results[i]), daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = ClientResult()
    for r in results:
        merged.latencies.extend(r.latencies)
        merged.errors.update(r.errors)
        merged.outcomes.update(r.outcomes)
    return merged


def _process_main(job: Job, first_index: int, count: int, barrier: Any, queue: Any) -> None:
    """A client process: `count` threads; sends back (result, CPU seconds in the window)."""
    cpu: list[float] = []

    def sample_cpu() -> None:
        # CPU of this process over the measurement window: sampled by a helper thread that passes
        # the barrier with the clients and sleeps through the warm-up.
        barrier.wait(timeout=BARRIER_TIMEOUT)
        time.sleep(job.warmup)
        cpu.append(own_cpu())
        time.sleep(job.seconds)
        cpu.append(own_cpu())

    sampler = threading.Thread(target=sample_cpu, daemon=True)
    sampler.start()
    result = _run_threads(job, first_index, count, barrier)
    sampler.join()
    queue.put((result, cpu[1] - cpu[0]))


@dataclass
class Phase:
    kind: str
    clients: int
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu: float | None  # share of one core
    client_cpu: float  # share of one core, all client processes
    errors: Counter[str]
    outcomes: Counter[int]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


def run_phase(job: Job, clients: int, procs: int, server: ServerProcess) -> Phase:
    procs = max(1, min(procs, clients))
    if procs == 1:
        # The clients and this thread, which samples the CPU of this process (= the clients).
        barrier: Any = threading.Barrier(clients + 1)
        holder: dict[str, ClientResult] = {}
        runner = threading.Thread(target=lambda: holder.update(r=_run_threads(job, 0, clients, barrier)), daemon=True)
        runner.start()
    else:
        ctx = multiprocessing.get_context("spawn")
        # Every client thread of every process, one CPU sampler per process, and this thread.
        barrier = ctx.Barrier(clients + procs + 1)
        queue = ctx.Queue()
        shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        children = []
        first = 0
        for share in shares:
            child = ctx.Process(target=_process_main, args=(job, first, share, barrier, queue), daemon=True)
            child.start()
            children.append(child)
            first += share

    barrier.wait(timeout=BARRIER_TIMEOUT)
    time.sleep(job.warmup)
    server_before, own_before, wall_before = server.cpu_seconds(), own_cpu(), time.perf_counter()
    time.sleep(job.seconds)
    server_after, own_after, wall_after = server.cpu_seconds(), own_cpu(), time.perf_counter()
    window = wall_after - wall_before

    if procs == 1:
        runner.join()
        merged = holder["r"]
        client_cpu = [own_after - own_before]
    else:
        merged = ClientResult()
        client_cpu = []
        for _ in children:
            part, cpu = queue.get()
            merged.latencies.extend(part.latencies)
            merged.errors.update(part.errors)
            merged.outcomes.update(part.outcomes)
            client_cpu.append(cpu)
        for child in children:
            child.join()

    latencies = sorted(merged.latencies)
    server_cpu = None
    if server_before is not None and server_after is not None:
        server_cpu = (server_after - server_before) / window
    return Phase(
        job.kind,
        clients,
        len(latencies),
        window,
        _percentile(latencies, 0.50) * 1000,
        _percentile(latencies, 0.99) * 1000,
        server_cpu,
        sum(client_cpu) / window,
        merged.errors,
        merged.outcomes,
    )


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="synthetic enterprises")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--period", type=int, default=2025)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument(
        "--client-procs", type=int, default=1, help="client processes the clients are spread over (1: threads only)"
    )
    parser.add_argument("--workers", type=int, default=16, help="server thread pool size")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",") if n.strip()]

    db_url, usccs = prepare_registry(args.count, args.seed)
    policies = policies_in_force(args.period)
    token = secrets.token_urlsafe(24)
    auth_file = CACHE / "bench-auth.yaml"
    auth_file.write_text(
        f"principals:\n  - principal: bench-admin\n    role: admin\n    token: {token}\n", encoding="utf-8"
    )
    os.chmod(auth_file, 0o600)
    print(
        f"{len(usccs):,} enterprises on record; policies in force for {args.period}: {', '.join(policies)}", flush=True
    )

    server = ServerProcess(db_url, auth_file, args.workers)
    phases: list[tuple[Phase, Phase]] = []
    try:
        wait_serving(server.target)
        print(
            f"server pid {server.process.pid} on {server.target} ({args.workers} worker threads); "
            f"{os.cpu_count()} CPUs; clients: threads in {args.client_procs} process(es); "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s measured per phase",
            flush=True,
        )
        for clients in levels:
            pair = []
            for kind in ("health", "explain"):
                job = Job(kind, server.target, token, usccs, policies, args.period, args.warmup, args.seconds)
                phase = run_phase(job, clients, args.client_procs, server)
                pair.append(phase)
                print(
                    f"  {kind:8} {clients:>3} clients: {phase.rate:9,.0f} calls/s  "
                    f"p50 {phase.p50_ms:7.2f} ms  p99 {phase.p99_ms:7.2f} ms  "
                    f"server CPU {_pct(phase.server_cpu)}  client CPU {_pct(phase.client_cpu)}"
                    + (f"  errors {dict(phase.errors)}" if phase.errors else ""),
                    flush=True,
                )
            phases.append((pair[0], pair[1]))
    finally:
        server.stop()

    print()
    print(
        f"gRPC API, {len(usccs):,} enterprises (SQLite), server in a subprocess with "
        f"{args.workers} threads, {os.cpu_count()} CPUs, {args.seconds:g} s per phase"
    )
    print(f"{'':8}|{'baseline: Health/Check':^34}|{'ExplainEligibility':^34}|{'ratio base/explain':^20}")
    print(
        f"{'clients':>8}|{'calls/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'srv CPU':>8}"
        f"|{'calls/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'srv CPU':>8}|{'calls/s':>10}{'p50':>10}"
    )
    for base, explain in phases:
        print(
            f"{base.clients:>8}|{base.rate:>10,.0f}{base.p50_ms:>8.2f}{base.p99_ms:>8.2f}"
            f"{_pct(base.server_cpu):>8}|{explain.rate:>10,.0f}{explain.p50_ms:>8.2f}"
            f"{explain.p99_ms:>8.2f}{_pct(explain.server_cpu):>8}|"
            f"{base.rate / explain.rate if explain.rate else float('nan'):>9.1f}x"
            f"{explain.p50_ms / base.p50_ms if base.p50_ms else float('nan'):>9.1f}x"
        )
    outcomes: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for base, explain in phases:
        outcomes.update(explain.outcomes)
        errors.update(base.errors)
        errors.update(explain.errors)
    from benefits.v1 import evaluation_pb2

    names = {evaluation_pb2.Outcome.Name(k): v for k, v in sorted(outcomes.items())}
    print(f"ExplainEligibility outcomes (all phases, warm-up included): {names}")
    print(f"errors: {dict(errors) if errors else 'none'}")
    print("CPU is a share of one core (100 % = one core busy); client CPU per phase is printed above.")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


if __name__ == "__main__":
    main()
