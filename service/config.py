"""Settings of the gRPC server, read once from the command line (or given by tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from enterprise_registry.clock import Clock
from enterprise_registry.db import DEFAULT_TIMEOUTS, DatabaseTimeouts

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# The longest wait for a call's request message (a unary body, or a client stream's next): a
# caller that opened a call and went silent is ended after it (`service.api.interceptor`).
REQUEST_IDLE_SECONDS = 30.0


@dataclass(frozen=True)
class ServeConfig:
    db_url: str
    rules_dir: Path
    auth_file: Path
    listen: str = "127.0.0.1:50051"
    max_workers: int = 16
    max_message_bytes: int = MAX_MESSAGE_BYTES
    request_idle_seconds: float = REQUEST_IDLE_SECONDS
    shutdown_grace_seconds: float = 10.0
    ledger_key: Path | None = None  # Ed25519 key signing ledger checkpoints (never in the DB),
    # made by `benefits audit keygen`
    checkpoint_file: Path | None = None  # where signed checkpoints are written
    payers_file: Path | None = None  # paying accounts by funding (YAML); needed to export
    batch_chunk_size: int = 200  # enterprises a running batch commits at a time
    batch_workers: int = 1  # worker processes evaluating a batch's partitions (1: in the server)
    dask_scheduler: str | None = None  # a Dask scheduler's address: partitions run on its workers
    batch_lease_seconds: float = 30.0  # after this long without progress, another worker takes a batch over
    clock: Clock = field(default_factory=Clock)  # "today" for imports: the Asia/Shanghai date; tests fix it
    tls_cert: Path | None = None  # certificate chain (PEM), leaf first; with tls_key: TLS
    tls_key: Path | None = None  # the certificate's private key (PEM, unencrypted)
    client_ca: Path | None = None  # CA of the client certificates required (mutual TLS)
    insecure: bool = False  # plaintext on a non-loopback address, said explicitly
    db_timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS  # connect, statement, lock and SQLite busy timeouts
