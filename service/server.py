"""The gRPC server: servicers, authentication, health, reflection, graceful shutdown.

The server is grpc.aio on an event loop of its own thread (`_Loop`): waiting for a silent
caller's body, a client stream's next record or a batch a watcher follows costs a coroutine, not
a thread. The servicers' blocking work (the database, the engine) runs in a bounded thread pool,
the loop's default executor (`service.api.interceptor`). The rest of the service, and its tests,
see a synchronous server: `create_server` returns it started, `RunningServer.stop` stops it."""

from __future__ import annotations

import asyncio
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from benefits.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    benefit_service_pb2,
    benefit_service_pb2_grpc,
    payout_service_pb2,
    payout_service_pb2_grpc,
    policy_service_pb2,
    policy_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from enterprise_registry.db import create_schema, make_engine, refresh_statistics
from rules.errors import PolicyFileError
from rules.loader import PolicyStore
from service.api.admission import Admission
from service.api.auth import AuthTable
from service.api.interceptor import ApiInterceptor
from service.api.servicers import (
    AuditServicer,
    BenefitServicer,
    PayoutServicer,
    PolicyServicer,
    RegistryServicer,
)
from service.audit import checkpoints, signatures
from service.audit.ledger import ledger_transaction
from service.audit.records import remember_policy
from service.catalogue import CATALOGUE
from service.config import ServeConfig
from service.errors import AuthFileError, LedgerKeyError, ServerStartError
from service.evaluation.lookups import Lookups
from service.evaluation.recorder import Recorder
from service.payouts.export import load_payers
from service.payouts.pools import dask_pool
from service.payouts.runner import BatchWorkers, RunSettings
from service.payouts.tables import create_payout_schema
from service.tls import check_transport, is_loopback, server_credentials

log = logging.getLogger("benefits.server")
T = TypeVar("T")
MAX_STREAMS_PER_CONNECTION = 100  # HTTP/2 streams one connection may hold open
CALLS_PER_WORKER = 64  # calls open at once, server-wide, per pool thread (most of them waiting)
CHECKPOINT_INTERVAL_SECONDS = 300
CHECKPOINT_RETRY_SECONDS = (1.0, 5.0, 15.0, 60.0)  # after a failure: soon, then less often (a full disk stays full)
SERVICE_NAMES = tuple(
    m.DESCRIPTOR.services_by_name[n].full_name
    for m, n in (
        (policy_service_pb2, "PolicyService"),
        (registry_service_pb2, "RegistryService"),
        (benefit_service_pb2, "BenefitService"),
        (payout_service_pb2, "PayoutService"),
        (audit_service_pb2, "AuditService"),
    )
)


class Checkpointer:
    """Signs the ledger head and appends it to the checkpoint file (outside the database): at
    `start`, when called (after each export), every `interval` seconds on its own thread, and a
    last time at `stop`. A failure (disk full, database away, anything) is logged and retried
    after a short, growing pause; it never reaches the caller, so an export that succeeded is
    reported as such and the server keeps serving."""

    def __init__(
        self,
        engine: Any,
        key: Any = None,
        file: Path | None = None,
        *,
        interval: float = CHECKPOINT_INTERVAL_SECONDS,
        retry_seconds: Sequence[float] = CHECKPOINT_RETRY_SECONDS,
    ) -> None:
        self.engine, self.key, self.file = engine, key, file
        self.interval, self.retry_seconds = interval, tuple(retry_seconds)
        self.failures = 0  # consecutive failed attempts; 0 after a success
        self._due = time.monotonic() + interval
        self._stopping = False
        self._cond = threading.Condition()  # one attempt at a time: lines never interleave
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.key is not None and self.file is not None

    def __call__(self) -> bool:
        """Checkpoint now; False (logged, retried soon) when it failed."""
        with self._cond:
            done = self._attempt()
            self._cond.notify()  # the ticking thread waits for the new due time
            return done

    def start(self) -> None:
        """A first checkpoint now (so that verification never meets entries without any), then
        one every `interval` seconds on a thread of its own."""
        if self.enabled and self._thread is None:
            self()
            self._thread = threading.Thread(target=self._tick, name="checkpoints", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop ticking; one last checkpoint: what the ledger held when the server stopped."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            if not self._attempt():
                log.error(
                    "the ledger's head at shutdown is not checkpointed; the next server's first "
                    "checkpoint will cover it"
                )

    def _tick(self) -> None:
        with self._cond:
            while not self._stopping:
                wait = self._due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                else:
                    self._attempt()

    def _attempt(self) -> bool:
        # Called with self._cond held.
        if not self.enabled:
            return True
        try:
            with self.engine.connect() as conn:
                checkpoint = checkpoints.checkpoint_now(conn, self.key)
            checkpoints.write(checkpoint, self.file)  # type: ignore[arg-type]
        except Exception as exc:  # whatever it is, the server goes on
            pause = self.retry_seconds[min(self.failures, len(self.retry_seconds) - 1)]
            self.failures += 1
            self._due = time.monotonic() + min(pause, self.interval)
            # The exception's first line only: no traceback, no SQL parameters, never the key.
            reason = (str(exc).splitlines() or [""])[0][:200]
            log.error(
                "checkpoint to %s failed (%s: %s), attempt %d; retrying in %.0f s",
                self.file,
                type(exc).__name__,
                reason,
                self.failures,
                min(pause, self.interval),
            )
            return False
        if self.failures:
            log.warning("checkpoint to %s written again after %d failed attempts", self.file, self.failures)
        self.failures = 0
        self._due = time.monotonic() + self.interval
        return True


class _Loop:
    """The server's event loop, run by a thread of its own."""

    def __init__(self, pool: futures.ThreadPoolExecutor) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(pool)  # servicers' blocking work: bounded, shared
        self.pool = pool
        self._thread = threading.Thread(target=self.loop.run_forever, name="rpc-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop; wait for its result here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.pool.shutdown(wait=True)  # a servicer still running after the grace finishes its work
        self.loop.close()


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    policies: PolicyStore
    engine: Any
    workers: BatchWorkers
    checkpoint: Checkpointer
    recorder: Recorder
    lookups: Lookups
    loop: _Loop
    interceptor: ApiInterceptor
    auth_file: Path

    @property
    def admission(self) -> Admission:
        """Each principal's calls in flight and rate, as the interceptor counts them."""
        return self.interceptor.admission

    def stop(self, grace: float | None = None) -> None:
        self.loop.run(self.health.enter_graceful_shutdown())  # NOT_SERVING, and stays so
        self.loop.run(self.server.stop(grace))
        self.loop.close()
        self.recorder.stop()  # the lookups' last records committed before the last checkpoint
        log.info("lookups: %d read and decided in %d chunks", self.lookups.lookups_read, self.lookups.chunks_read)
        self.workers.stop(grace)  # running batches stop after their chunk and are given back
        self.checkpoint.stop()  # the last word on what the ledger held when the server stopped
        self.engine.dispose()

    def reload_auth(self) -> bool:
        """Read the auth file again (SIGHUP): new principals, tokens and limits apply to the next
        call. A refused file keeps the running principals; the error goes to the log."""
        try:
            fresh = AuthTable.from_file(self.auth_file)
        except AuthFileError as exc:
            log.error("auth file reload refused, the running principals stay: %s", exc)
            return False
        self.interceptor.auth = fresh  # one reference swapped: a call sees the old table or the new
        log.warning("auth file reloaded from %s: %d principals", self.auth_file, len(fresh))
        return True

    def reload_policies(self) -> bool:
        """Load the policy directory again (SIGHUP). A refused file keeps the running rules
        serving; the error, with its file and line, goes to the log."""
        try:
            fresh = self.policies.reload()
        except (PolicyFileError, OSError) as exc:
            log.error("policy reload refused, the running rules stay in place: %s", exc)
            return False
        log.warning(
            "policies reloaded from %s: %s",
            self.policies.root,
            ", ".join(f"{policy.id}@{policy.version}" for policy in fresh),
        )
        return True


def create_server(config: ServeConfig) -> RunningServer:
    """Build and start the server; health turns SERVING once rules and database are ready.
    Listening on port 0 picks a free port, returned in `.port`. Settings that cannot work (TLS
    files, plaintext beyond loopback, a missing ledger key) are refused before the database is
    touched."""
    credentials = server_credentials(config.tls_cert, config.tls_key, config.client_ca)
    check_transport(config.listen, tls=credentials is not None, insecure=config.insecure)
    key = _ledger_key(config)
    auth = AuthTable.from_file(config.auth_file)
    policies = PolicyStore(config.rules_dir, CATALOGUE)
    engine = make_engine(config.db_url, timeouts=config.db_timeouts)
    create_schema(engine)
    create_payout_schema(engine)  # the audit trail's tables included
    refresh_statistics(engine)  # a registry loaded or restored outside the service
    signatures.sign_with(engine, key)  # every money event this server writes is signed with the ledger key
    with ledger_transaction(engine) as conn:  # every loaded policy version, by hash
        for policy in policies.current:
            remember_policy(conn, policy)
    recorder = Recorder(engine)  # lookups' records, group-committed; started with the server
    lookups = Lookups(engine, recorder)
    checkpoint = Checkpointer(engine, key, config.checkpoint_file)
    workers = BatchWorkers(
        engine,
        lambda: policies.current,
        RunSettings(
            config.batch_chunk_size,
            config.batch_lease_seconds,
            workers=config.batch_workers,
            db_timeouts=config.db_timeouts,
        ),
        pool=dask_pool(config.dask_scheduler) if config.dask_scheduler else None,
    )
    servicers = (
        (policy_service_pb2_grpc.add_PolicyServiceServicer_to_server, PolicyServicer(policies)),
        (registry_service_pb2_grpc.add_RegistryServiceServicer_to_server, RegistryServicer(engine, config.clock)),
        (
            benefit_service_pb2_grpc.add_BenefitServiceServicer_to_server,
            BenefitServicer(policies, lookups, config.clock),
        ),
        (
            payout_service_pb2_grpc.add_PayoutServiceServicer_to_server,
            PayoutServicer(
                policies, engine, workers, config.clock, payers=load_payers(config.payers_file), on_export=checkpoint
            ),
        ),
        (
            audit_service_pb2_grpc.add_AuditServiceServicer_to_server,
            AuditServicer(engine, checkpoint_file=config.checkpoint_file, public_key=key.public_key() if key else None),
        ),
    )
    pool = futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="rpc")
    interceptor = ApiInterceptor(auth, Admission(), pool, config.request_idle_seconds)
    loop = _Loop(pool)
    try:
        server, health_servicer, port = loop.run(_listening(config, credentials, interceptor, servicers))
    except ServerStartError:
        loop.close()
        engine.dispose()
        raise
    if credentials is None and config.insecure and not is_loopback(config.listen):
        log.warning(
            "listening on %s WITHOUT TLS (--insecure): bearer tokens and enterprise data cross "
            "the network in clear text",
            config.listen,
        )
    checkpoint.start()  # before the first call: a verification finds the ledger covered
    recorder.start()
    loop.run(server.start())
    workers.start()  # resumes any batch a stopped or crashed server left RUNNING
    loop.run(_set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING))
    return RunningServer(
        server,
        port,
        health_servicer,
        policies,
        engine,
        workers,
        checkpoint,
        recorder,
        lookups,
        loop,
        interceptor,
        config.auth_file,
    )


async def _listening(
    config: ServeConfig,
    credentials: grpc.ServerCredentials | None,
    interceptor: ApiInterceptor,
    servicers: Sequence[tuple[Callable[[Any, grpc.aio.Server], None], object]],
) -> tuple[grpc.aio.Server, HealthServicer, int]:
    """The aio server with every servicer, bound to its address (not yet started); built on the
    loop that will run it."""
    server = grpc.aio.server(
        interceptors=[interceptor],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.max_workers * CALLS_PER_WORKER,
    )
    for add_to_server, servicer in servicers:
        add_to_server(servicer, server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return server, health_servicer, _listen(server, config.listen, credentials)


async def _set_health(servicer: HealthServicer, status: int) -> None:
    for name in ("", *SERVICE_NAMES):
        await servicer.set(name, status)


def _ledger_key(config: ServeConfig) -> Any:
    """The checkpoint signing key, or None (and a warning) when the server is to run without."""
    if config.ledger_key is None:
        if config.checkpoint_file is not None:
            raise LedgerKeyError("--checkpoints needs --ledger-key (the key that signs them)")
        log.warning(
            "no --ledger-key: the ledger is not checkpointed, so a rebuilt chain or a cut tail "
            "cannot be detected (make a key once with `benefits audit keygen --out FILE`)"
        )
        return None
    if config.checkpoint_file is None:
        raise LedgerKeyError("--ledger-key needs --checkpoints (the file the signed checkpoints go to)")
    return checkpoints.load_private_key(config.ledger_key)


def _listen(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        port = (
            server.add_secure_port(listen, credentials) if credentials is not None else server.add_insecure_port(listen)
        )
    except RuntimeError:  # gRPC's "Failed to bind to address"
        port = 0
    if port == 0:
        raise ServerStartError(f"cannot listen on {listen}: the address is in use or not valid")
    return port


def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT; in-flight calls get the grace period to finish."""
    running = create_server(config)
    host = config.listen.rsplit(":", 1)[0]
    transport = ("mutual TLS" if config.client_ca else "TLS") if config.tls_cert else "plaintext"
    log.warning("benefits gRPC server listening on %s:%d (%s)", host, running.port, transport)
    print(f"listening on {host}:{running.port}", flush=True)
    # The handler only queues the signal (SimpleQueue.put is safe there); this thread acts on it.
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def on_signal(signum: int, _frame: Any) -> None:
        signals.put(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    while signals.get() == signal.SIGHUP:  # checkpoints tick on their own thread (Checkpointer)
        reloaded = running.reload_policies()
        print("policies reloaded" if reloaded else "policy reload refused: the running rules stay", flush=True)
        reloaded = running.reload_auth()
        print("auth file reloaded" if reloaded else "auth file reload refused: the principals stay", flush=True)
    print("shutting down: finishing in-flight calls", flush=True)
    running.stop(config.shutdown_grace_seconds)
