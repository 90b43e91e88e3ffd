"""The gRPC server: servicers, authentication, health, reflection, graceful shutdown."""
from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from grpc_reflection.v1alpha import reflection

from enterprise_registry.db import create_schema, make_engine
from rules.loader import PolicyStore
from service.api.auth import AuthTable
from service.api.servicers import (
    AuditServicer,
    BenefitServicer,
    PayoutServicer,
    PolicyServicer,
    RegistryServicer,
)
from service.api.status import ApiInterceptor
from service.audit import checkpoints
from service.audit.ledger import ledger_transaction
from service.audit.records import remember_policy
from service.catalogue import CATALOGUE
from service.config import ServeConfig
from service.payouts.export import load_payers
from service.payouts.runner import BatchWorkers, RunSettings
from service.payouts.tables import create_payout_schema

log = logging.getLogger("benefits.server")
CHECKPOINT_INTERVAL_SECONDS = 300
SERVICE_NAMES = tuple(m.DESCRIPTOR.services_by_name[n].full_name for m, n in (
    (policy_service_pb2, "PolicyService"), (registry_service_pb2, "RegistryService"),
    (benefit_service_pb2, "BenefitService"), (payout_service_pb2, "PayoutService"),
    (audit_service_pb2, "AuditService")))


@dataclass
class Checkpointer:
    """Signs the ledger head and writes it outside the database (when configured)."""
    engine: Any
    key: Any = None
    file: Path | None = None

    def __call__(self) -> None:
        if self.key is None or self.file is None:
            return
        with self.engine.connect() as conn:
            checkpoints.write(checkpoints.checkpoint_now(conn, self.key), self.file)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    policies: PolicyStore
    engine: Any
    workers: BatchWorkers
    checkpoint: Checkpointer

    def stop(self, grace: float | None = None) -> None:
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()
        self.workers.stop(grace)  # running batches stop after their chunk and are given back
        self.checkpoint()  # the last word on what the ledger held when the server stopped
        self.engine.dispose()


def create_server(config: ServeConfig) -> RunningServer:
    """Build and start the server; health turns SERVING once rules and database are ready.
    Listening on port 0 picks a free port, returned in `.port`."""
    auth = AuthTable.from_file(config.auth_file)
    policies = PolicyStore(config.rules_dir, CATALOGUE)
    engine = make_engine(config.db_url)
    create_schema(engine)
    create_payout_schema(engine)  # the audit trail's tables included
    with ledger_transaction(engine) as conn:  # every loaded policy version, by hash
        for policy in policies.current:
            remember_policy(conn, policy)
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", config.max_message_bytes),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.max_workers,
                                                    thread_name_prefix="rpc"),
                         interceptors=[ApiInterceptor(auth)], options=options,
                         maximum_concurrent_rpcs=config.max_workers * 8)
    policy_service_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(policies), server)
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(engine, config.clock), server)
    benefit_service_pb2_grpc.add_BenefitServiceServicer_to_server(
        BenefitServicer(policies, engine), server)
    key = checkpoints.load_or_create_key(config.ledger_key) if config.ledger_key else None
    checkpoint = Checkpointer(engine, key, config.checkpoint_file)
    workers = BatchWorkers(engine, lambda: policies.current,
                           RunSettings(config.batch_chunk_size, config.batch_lease_seconds))
    payout_service_pb2_grpc.add_PayoutServiceServicer_to_server(
        PayoutServicer(policies, engine, workers, payers=load_payers(config.payers_file), on_export=checkpoint),
        server)
    audit_service_pb2_grpc.add_AuditServiceServicer_to_server(
        AuditServicer(engine, checkpoint_file=config.checkpoint_file,
                      public_key=key.public_key() if key else None), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    server.start()
    workers.start()  # resumes any batch a stopped or crashed server left RUNNING
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, policies, engine, workers, checkpoint)


def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT; in-flight calls get the grace period to finish."""
    running = create_server(config)
    host = config.listen.rsplit(":", 1)[0]
    log.warning("benefits gRPC server listening on %s:%d", host, running.port)
    print(f"listening on {host}:{running.port}", flush=True)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.wait(CHECKPOINT_INTERVAL_SECONDS):
        running.checkpoint()
    print("shutting down: finishing in-flight calls", flush=True)
    running.stop(config.shutdown_grace_seconds)
