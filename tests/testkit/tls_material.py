"""Certificates for the TLS tests, made on the fly with trustme (nothing secret is committed): a
CA, a server certificate for localhost, 127.0.0.1 and ::1, and a client certificate, as PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA's certificate: clients trust it; mutual TLS requires clients signed by it
    server_cert: Path  # chain, leaf first
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """A fresh CA and the certificates it signs, written below `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    client = ca.issue_cert("finance-client.benefits.test")
    files = TlsFiles(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    for leaf, cert_file, key_file in (
        (server, files.server_cert, files.server_key),
        (client, files.client_cert, files.client_key),
    ):
        cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_file))
    return files
