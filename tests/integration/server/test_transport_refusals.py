"""Red-team review of the transport (SQLite; the transport does not depend on the database).

On a mutual-TLS server a client without a certificate from the client CA reaches nothing - not
health, not reflection, not the payout service; a client with one still needs a token for
everything but health (reflection and PayoutService answer UNAUTHENTICATED without one, and
PERMISSION_DENIED for a role that may not). Plaintext on an address that is not loopback is
refused in every spelling gRPC would bind to the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from benefits.v1 import payout_service_pb2, payout_service_pb2_grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from testkit.api_fixtures import as_role, bearer, registry_records, serving, status_code, write_auth_file
from testkit.grpc_stubs import health_stub, reflection_stub
from testkit.paths import RULES_DIR
from testkit.tls_material import TlsFiles, make_tls_files

from service.config import ServeConfig
from service.errors import ServerStartError
from service.server import RunningServer, create_server
from service.tls import Endpoint, client_tls, open_channel

SECONDS = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("review-pki"))


@pytest.fixture(scope="module")
def mtls_server(pki: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("review-mtls")
    with serving(
        f"sqlite:///{folder / 'registry.db'}",
        registry_records(),
        folder,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        client_ca=pki.ca,
    ) as running:
        yield running


def _calls(endpoint: Endpoint, metadata: list[tuple[str, str]] | None) -> dict[str, grpc.StatusCode]:
    with open_channel(endpoint) as channel:
        health = health_stub(channel)
        reflection = reflection_stub(channel)
        # grpc's stubs type metadata as a tuple; the calls take any sequence of pairs.
        pairs = None if metadata is None else tuple(metadata)
        payout = payout_service_pb2_grpc.PayoutServiceStub(channel)
        return {
            "health": status_code(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=SECONDS)),
            "health-watch": status_code(
                lambda: next(iter(health.Watch(health_pb2.HealthCheckRequest(), timeout=SECONDS)))
            ),
            "reflection": status_code(
                lambda: list(
                    reflection.ServerReflectionInfo(
                        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                        metadata=pairs,
                        timeout=SECONDS,
                    )
                )
            ),
            "payout": status_code(
                lambda: payout.GetPayoutBatch(
                    payout_service_pb2.GetPayoutBatchRequest(batch_id="pb_none"), metadata=metadata, timeout=SECONDS
                )
            ),
            "export": status_code(
                lambda: list(
                    payout.ExportPayoutBatch(
                        payout_service_pb2.ExportPayoutBatchRequest(
                            batch_id="pb_none", format=payout_service_pb2.EXPORT_FORMAT_CSV
                        ),
                        metadata=metadata,
                        timeout=SECONDS,
                    )
                )
            ),
        }


def test_without_a_client_certificate_nothing_is_reachable_on_mutual_tls(
    mtls_server: RunningServer, pki: TlsFiles
) -> None:
    """PASSES. No certificate, or a plaintext channel: every call, health and reflection
    included, fails in the handshake (UNAVAILABLE) - even with a valid token."""
    address = f"127.0.0.1:{mtls_server.port}"
    for endpoint in (Endpoint(address, client_tls(pki.ca)), Endpoint(address)):
        for metadata in (None, as_role("finance_operator")):
            codes = _calls(endpoint, metadata)
            assert set(codes.values()) == {grpc.StatusCode.UNAVAILABLE}, (endpoint.tls is not None, codes)


def test_a_client_certificate_is_no_token(mtls_server: RunningServer, pki: TlsFiles) -> None:
    """PASSES. With a valid client certificate, health answers; reflection and every payout call
    still need a token (UNAUTHENTICATED without, or with an unknown one), and the role decides."""
    endpoint = Endpoint(f"127.0.0.1:{mtls_server.port}", client_tls(pki.ca, pki.client_cert, pki.client_key))
    assert _calls(endpoint, None) == {
        "health": grpc.StatusCode.OK,
        "health-watch": grpc.StatusCode.OK,
        "reflection": grpc.StatusCode.UNAUTHENTICATED,
        "payout": grpc.StatusCode.UNAUTHENTICATED,
        "export": grpc.StatusCode.UNAUTHENTICATED,
    }
    unknown = _calls(endpoint, bearer("an-unknown-token-0123456789"))
    assert {k: unknown[k] for k in ("reflection", "payout", "export")} == dict.fromkeys(
        ("reflection", "payout", "export"), grpc.StatusCode.UNAUTHENTICATED
    )
    enterprise = _calls(endpoint, as_role("enterprise"))
    assert (enterprise["payout"], enterprise["export"]) == (grpc.StatusCode.PERMISSION_DENIED,) * 2
    operator = _calls(endpoint, as_role("finance_operator"))
    assert (operator["reflection"], operator["payout"], operator["export"]) == (
        grpc.StatusCode.OK,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.NOT_FOUND,
    )


@pytest.mark.parametrize(
    "listen",
    [
        "0.0.0.0:0",
        "dns:///0.0.0.0:0",
        "ipv4:0.0.0.0:0",
        "[::ffff:0.0.0.0]:0",
        "[::ffff:127.0.0.1]:0",
        "0:0",
        "localhost.:0",
        "127.0.0.1.nip.io:0",
        "[0:0:0:0:0:0:0:0]:0",
        "[::]:0",
    ],
)
def test_plaintext_on_a_network_address_is_refused_in_every_spelling(tmp_path: Path, listen: str) -> None:
    """PASSES. Whatever the spelling, a listen address that is not provably loopback is refused
    without TLS, before the database is touched."""
    url = f"sqlite:///{tmp_path / 'never.db'}"
    config = ServeConfig(
        db_url=url, rules_dir=RULES_DIR, auth_file=write_auth_file(tmp_path / "auth.yaml"), listen="127.0.0.1:0"
    )
    with pytest.raises(ServerStartError, match="without TLS"):
        create_server(replace(config, listen=listen))
    assert not (tmp_path / "never.db").exists()


def test_loopback_plaintext_still_serves(tmp_path: Path) -> None:
    """PASSES (control): the same configuration on loopback starts and answers."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with serving(url, registry_records(), tmp_path) as running:
        codes = _calls(Endpoint(f"127.0.0.1:{running.port}"), None)
    assert codes["health"] == grpc.StatusCode.OK and codes["payout"] == grpc.StatusCode.UNAUTHENTICATED
