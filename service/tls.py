"""Transport security: the server's TLS (and mutual TLS) credentials, the clients' channels, and
the rule that plaintext is for loopback only.

Every file is read and checked here with `cryptography` before gRPC sees it, so that a key that
is not the certificate's, or a file that is not PEM, stops the server with a sentence naming the
file instead of a handshake failure on the first call.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from service.errors import ServerStartError, TlsConfigError

DEFAULT_TARGET = "127.0.0.1:50051"
_LOOPBACK_NAMES = frozenset({"localhost"})
_LOCAL_SOCKET_PREFIXES = ("unix:", "unix-abstract:")  # no network at all


# ---------------------------------------------------------------------------------------------
# Files.
def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _certificates(path: Path, what: str) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsConfigError(f"{what} {path} is not a PEM certificate") from None
    return data, certificates


def _private_key(path: Path) -> tuple[bytes, Any]:
    data = _read(path, "TLS key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying the key needs a password
        raise TlsConfigError(f"TLS key {path} is encrypted; give an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsConfigError(f"TLS key {path} is not a PEM private key") from None
    return data, key


def _public_der(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def load_key_pair(cert_file: Path, key_file: Path, *, what: str = "TLS certificate") -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM), once the key is known to be the first
    certificate's and that certificate has not expired."""
    chain, certificates = _certificates(cert_file, what)
    key_pem, key = _private_key(key_file)
    leaf = certificates[0]
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        raise TlsConfigError(
            f"TLS key {key_file} does not belong to the certificate {cert_file} (their public keys differ)"
        )
    if leaf.not_valid_after_utc < datetime.now(UTC):
        raise TlsConfigError(f"{what} {cert_file} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    return chain, key_pem


def load_ca(path: Path, what: str) -> bytes:
    """The PEM of one or more CA certificates, once they parse."""
    return _certificates(path, what)[0]


# ---------------------------------------------------------------------------------------------
# The server.
def server_credentials(
    cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None
) -> grpc.ServerCredentials | None:
    """TLS credentials for the server; with a client CA, mutual TLS (a client without a valid
    certificate signed by that CA is refused during the handshake). None without TLS settings."""
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise TlsConfigError("--client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
        return None
    if cert_file is None or key_file is None:
        raise TlsConfigError("--tls-cert and --tls-key go together: give both")
    chain, key = load_key_pair(cert_file, key_file)
    client_ca = load_ca(client_ca_file, "client CA") if client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def is_loopback(listen: str) -> bool:
    """Whether a listen address (host:port, [v6]:port, unix:path) is reachable from this machine
    only: 127.0.0.0/8, ::1, localhost, or a local socket. Other host names are not resolved, so
    they count as reachable from the network."""
    if listen.startswith(_LOCAL_SOCKET_PREFIXES):
        return True
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    host = host.removeprefix("[").removesuffix("]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or empty (every interface)
        return False


def check_transport(listen: str, *, tls: bool, insecure: bool) -> None:
    """Plaintext beyond loopback only when asked for by name (bearer tokens and bank accounts
    would cross the network in clear)."""
    if tls and insecure:
        raise ServerStartError("--insecure contradicts --tls-cert: give one or the other")
    if not tls and not insecure and not is_loopback(listen):
        raise ServerStartError(
            f"refusing to listen on {listen} without TLS: give --tls-cert and --tls-key "
            "(and --client-ca for mutual TLS), or --insecure to accept plaintext "
            "on the network"
        )


# ---------------------------------------------------------------------------------------------
# Clients.
@dataclass(frozen=True)
class ClientTls:
    """What a client trusts and shows: the server's CA, and for mutual TLS its own certificate."""

    root_certificates: bytes
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)  # never printed or logged
    server_name: str | None = None  # the name to expect in the server's certificate


@dataclass(frozen=True)
class Endpoint:
    """A server address and how to reach it (plaintext when `tls` is None)."""

    address: str
    tls: ClientTls | None = None


def client_tls(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None, server_name: str | None = None
) -> ClientTls | None:
    """A client's TLS settings from files; None (plaintext) when no CA is given."""
    if ca_file is None:
        if cert_file is not None or key_file is not None or server_name is not None:
            raise TlsConfigError(
                "--cert, --key and --server-name need --ca (the CA that signed the server's certificate)"
            )
        return None
    if (cert_file is None) != (key_file is None):
        raise TlsConfigError("--cert and --key go together: give both for mutual TLS, or neither")
    root = load_ca(ca_file, "server CA")
    if cert_file is None or key_file is None:
        return ClientTls(root, server_name=server_name)
    chain, key = load_key_pair(cert_file, key_file, what="client certificate")
    return ClientTls(root, chain, key, server_name)


def open_channel(target: str | Endpoint, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to the server: TLS when the endpoint says so, plaintext for a bare address."""
    endpoint = target if isinstance(target, Endpoint) else Endpoint(target)
    if endpoint.tls is None:
        return grpc.insecure_channel(endpoint.address, options=list(options))
    tls = endpoint.tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates, private_key=tls.private_key, certificate_chain=tls.certificate_chain
    )
    if tls.server_name:
        options = [
            *options,
            ("grpc.ssl_target_name_override", tls.server_name),
            ("grpc.default_authority", tls.server_name),
        ]
    return grpc.secure_channel(endpoint.address, credentials, options=list(options))


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--target and the TLS options of every command that calls the server."""
    group = parser.add_argument_group("connection")
    group.add_argument("--target", default=DEFAULT_TARGET, help="the server's host:port")
    group.add_argument(
        "--ca", type=Path, default=None, help="CA certificate (PEM) that signed the server's certificate; turns TLS on"
    )
    group.add_argument(
        "--cert", type=Path, default=None, help="this client's certificate (PEM) for mutual TLS, with --key"
    )
    group.add_argument("--key", type=Path, default=None, help="the private key (PEM) of --cert")
    group.add_argument(
        "--server-name",
        default=None,
        help="the name the server's certificate must carry, when it is not the target's host",
    )


def endpoint_from_args(args: argparse.Namespace) -> Endpoint:
    """The endpoint the options of `add_connection_arguments` describe (files checked now)."""
    return Endpoint(args.target, client_tls(args.ca, args.cert, args.key, args.server_name))
