"""TLS and mutual TLS over real sockets, with certificates made on the fly (trustme): who gets
through, who is refused in the handshake, and a server that refuses to start with settings that
cannot work, saying why (SQLite; the transport does not depend on the database)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypedDict, Unpack, cast

import grpc
import pytest
from benefits.v1 import policy_service_pb2, policy_service_pb2_grpc
from grpc_health.v1 import health_pb2
from testkit.api_fixtures import TOKENS, A, as_role, load_registry, registry_records, serving, write_auth_file
from testkit.grpc_stubs import health_stub
from testkit.paths import REPO_ROOT, RULES_DIR
from testkit.server_process import server_process
from testkit.tls_material import TlsFiles, make_tls_files

from service.cli import main
from service.config import ServeConfig
from service.errors import ServerStartError, TlsConfigError
from service.serve_command import serve_command
from service.server import RunningServer, create_server
from service.tls import Endpoint, client_tls, is_loopback, open_channel

CALL_SECONDS = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Another CA altogether: its certificates must be refused."""
    return make_tls_files(tmp_path_factory.mktemp("other-pki"))


def _server(folder: Path, **tls: object) -> Iterator[RunningServer]:
    with serving(f"sqlite:///{folder / 'registry.db'}", registry_records(), folder, principals=(), **tls) as running:
        yield running


@pytest.fixture(scope="module")
def tls_server(pki: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from _server(tmp_path_factory.mktemp("tls"), tls_cert=pki.server_cert, tls_key=pki.server_key)


@pytest.fixture(scope="module")
def mtls_server(pki: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from _server(
        tmp_path_factory.mktemp("mtls"), tls_cert=pki.server_cert, tls_key=pki.server_key, client_ca=pki.ca
    )


def _health(target: str | Endpoint) -> int:
    """The serving status (a HealthCheckResponse.ServingStatus value)."""
    with open_channel(target) as channel:
        return health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_SECONDS).status


def _policy_ids(target: str | Endpoint) -> list[str]:
    with open_channel(target) as channel:
        reply = policy_service_pb2_grpc.PolicyServiceStub(channel).ListPolicies(
            policy_service_pb2.ListPoliciesRequest(), metadata=as_role("admin"), timeout=CALL_SECONDS
        )
    return [p.policy_id for p in reply.policies]


def _refused(target: str | Endpoint) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        _health(target)
    return info.value.code()


def _address(running: RunningServer) -> str:
    return f"127.0.0.1:{running.port}"


# ---------------------------------------------------------------------------------------------
# Who gets through.
def test_a_tls_server_answers_a_client_trusting_its_ca(tls_server: RunningServer, pki: TlsFiles) -> None:
    endpoint = Endpoint(_address(tls_server), client_tls(pki.ca))
    assert _health(endpoint) == health_pb2.HealthCheckResponse.SERVING
    assert "stable-jobs-refund" in _policy_ids(endpoint)  # an authenticated call, over TLS
    # the certificate names localhost: the same server reached by that name
    assert (
        _health(Endpoint(f"localhost:{tls_server.port}", client_tls(pki.ca))) == health_pb2.HealthCheckResponse.SERVING
    )


def test_a_tls_server_refuses_plaintext_and_a_client_trusting_another_ca(
    tls_server: RunningServer, other_pki: TlsFiles
) -> None:
    assert _refused(_address(tls_server)) == grpc.StatusCode.UNAVAILABLE
    assert _refused(Endpoint(_address(tls_server), client_tls(other_pki.ca))) == grpc.StatusCode.UNAVAILABLE


def test_the_server_name_override_checks_the_name_in_the_certificate(tls_server: RunningServer, pki: TlsFiles) -> None:
    named = Endpoint(_address(tls_server), client_tls(pki.ca, server_name="localhost"))
    assert _health(named) == health_pb2.HealthCheckResponse.SERVING
    wrong = Endpoint(_address(tls_server), client_tls(pki.ca, server_name="elsewhere.example"))
    assert _refused(wrong) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_its_ca(
    mtls_server: RunningServer, pki: TlsFiles, other_pki: TlsFiles
) -> None:
    address = _address(mtls_server)
    assert _refused(Endpoint(address, client_tls(pki.ca))) == grpc.StatusCode.UNAVAILABLE  # no certificate
    foreign = client_tls(pki.ca, other_pki.client_cert, other_pki.client_key)
    assert _refused(Endpoint(address, foreign)) == grpc.StatusCode.UNAVAILABLE
    proper = Endpoint(address, client_tls(pki.ca, pki.client_cert, pki.client_key))
    assert _health(proper) == health_pb2.HealthCheckResponse.SERVING
    assert "stable-jobs-refund" in _policy_ids(proper)


def test_the_private_key_is_never_in_the_client_settings_repr(pki: TlsFiles) -> None:
    settings = client_tls(pki.ca, pki.client_cert, pki.client_key)
    assert settings is not None and settings.private_key
    assert "PRIVATE" not in repr(settings) and "PRIVATE" not in repr(Endpoint("x:1", settings))


# ---------------------------------------------------------------------------------------------
# The command-line clients.
def test_benefits_lookup_over_tls_and_mutual_tls(
    tls_server: RunningServer, mtls_server: RunningServer, pki: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    lookup = ["lookup", "--uscc", A, "--period", "2025", "--token", TOKENS["enterprise"]]
    assert main([*lookup, "--target", _address(tls_server), "--ca", str(pki.ca)]) == 0
    out = capsys.readouterr().out
    assert f"企业 {A} 在 2025 年度" in out and "stable-jobs-refund" in out
    assert main([*lookup, "--target", _address(tls_server)]) == 1  # plaintext against TLS
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert (
        main(
            [
                *lookup,
                "--target",
                _address(mtls_server),
                "--ca",
                str(pki.ca),
                "--cert",
                str(pki.client_cert),
                "--key",
                str(pki.client_key),
            ]
        )
        == 0
    )
    assert f"企业 {A} 在 2025 年度" in capsys.readouterr().out


def test_benefits_batch_over_mutual_tls(
    mtls_server: RunningServer, pki: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = [
        "batch",
        "get",
        "pb_none",
        "--target",
        _address(mtls_server),
        "--token",
        TOKENS["finance_operator"],
        "--ca",
        str(pki.ca),
    ]
    assert main(batch) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err  # no client certificate: refused in the handshake
    assert main([*batch, "--cert", str(pki.client_cert), "--key", str(pki.client_key)]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err  # through, authenticated, and answered


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--cert", "{client_cert}", "--key", "{client_key}"], "--cert, --key and --server-name need --ca"),
        (["--ca", "{ca}", "--cert", "{client_cert}"], "--cert and --key go together"),
        (["--ca", "{ca}", "--cert", "{client_cert}", "--key", "{server_key}"], "does not belong to the certificate"),
        (["--ca", "{client_key}"], "is not a PEM certificate"),
    ],
    ids=["no-ca", "cert-without-key", "key-of-another-certificate", "ca-not-a-certificate"],
)
def test_client_tls_mistakes_are_named_before_any_call(
    pki: TlsFiles, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    files = {"ca": pki.ca, "client_cert": pki.client_cert, "client_key": pki.client_key, "server_key": pki.server_key}
    args = [arg.format(**files) for arg in extra]
    assert main(["lookup", "--uscc", A, "--token", TOKENS["enterprise"], "--target", "127.0.0.1:1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err


# ---------------------------------------------------------------------------------------------
# A server that cannot start says why.
class _Transport(TypedDict, total=False):
    """The transport fields of ServeConfig a test may set."""

    tls_cert: Path
    tls_key: Path
    client_ca: Path
    insecure: bool


def _config(folder: Path, **fields: Unpack[_Transport]) -> ServeConfig:
    return ServeConfig(
        db_url=f"sqlite:///{folder / 'never.db'}",
        rules_dir=RULES_DIR,
        auth_file=folder / "auth.yaml",
        listen="127.0.0.1:0",
        **fields,
    )


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"tls_cert": "server_cert"}, "--tls-cert and --tls-key go together"),
        ({"tls_key": "server_key"}, "--tls-cert and --tls-key go together"),
        ({"client_ca": "ca"}, "--client-ca needs --tls-cert and --tls-key"),
        ({"tls_cert": "missing", "tls_key": "server_key"}, "cannot read TLS certificate {missing}: No such file"),
        ({"tls_cert": "server_key", "tls_key": "server_key"}, "TLS certificate {server_key} is not a PEM certificate"),
        ({"tls_cert": "server_cert", "tls_key": "server_cert"}, "TLS key {server_cert} is not a PEM private key"),
        (
            {"tls_cert": "server_cert", "tls_key": "client_key"},
            "TLS key {client_key} does not belong to the certificate",
        ),
        (
            {"tls_cert": "server_cert", "tls_key": "server_key", "client_ca": "client_key"},
            "client CA {client_key} is not a PEM certificate",
        ),
    ],
    ids=[
        "cert-only",
        "key-only",
        "client-ca-only",
        "missing-file",
        "cert-not-pem",
        "key-not-pem",
        "key-mismatch",
        "client-ca-not-pem",
    ],
)
def test_tls_settings_that_cannot_work_are_refused_before_the_database(
    pki: TlsFiles, tmp_path: Path, fields: dict[str, str], says: str
) -> None:
    files = {
        "ca": pki.ca,
        "server_cert": pki.server_cert,
        "server_key": pki.server_key,
        "client_key": pki.client_key,
        "missing": tmp_path / "missing.pem",
    }
    # the parameters name TLS fields only (the file paths of `files`)
    config = _config(tmp_path, **cast(_Transport, {name: files[value] for name, value in fields.items()}))
    with pytest.raises(TlsConfigError) as info:
        create_server(config)
    assert says.format(**files) in str(info.value)
    assert not (tmp_path / "never.db").exists()


def test_an_expired_server_certificate_is_refused(tmp_path: Path) -> None:
    import datetime

    import trustme

    leaf = trustme.CA().issue_cert(
        "localhost", not_before=datetime.datetime(2020, 1, 1), not_after=datetime.datetime(2021, 1, 1)
    )
    cert, key = tmp_path / "old.pem", tmp_path / "old-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    with pytest.raises(TlsConfigError, match="expired on 2021-01-01"):
        create_server(_config(tmp_path, tls_cert=cert, tls_key=key))


def test_plaintext_beyond_loopback_needs_insecure_and_insecure_contradicts_tls(pki: TlsFiles, tmp_path: Path) -> None:
    for address in ("0.0.0.0:0", "[::]:0", "192.168.1.20:50051", "benefits.example:50051", ":50051"):
        with pytest.raises(ServerStartError, match=r"refusing to listen on .* without TLS.*--insecure"):
            create_server(replace(_config(tmp_path), listen=address))
    with pytest.raises(ServerStartError, match="--insecure contradicts --tls-cert"):
        create_server(_config(tmp_path, tls_cert=pki.server_cert, tls_key=pki.server_key, insecure=True))
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:1", True),
        ("[::1]:50051", True),
        ("localhost:50051", True),
        ("LOCALHOST:1", True),
        ("unix:/run/benefits.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.0.0.5:50051", False),
        ("[::ffff:127.0.0.1]:1", False),
        ("host.example:1", False),
        (":50051", False),
    ],
)
def test_what_counts_as_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_a_port_in_use_is_said_not_a_traceback(tmp_path: Path) -> None:
    load_registry(f"sqlite:///{tmp_path / 'never.db'}", registry_records())
    write_auth_file(tmp_path / "auth.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ServerStartError, match=f"cannot listen on {address}: the address is in use"):
            create_server(replace(_config(tmp_path), listen=address))


# ---------------------------------------------------------------------------------------------
# The real command in a process.
def _serve_process(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command(f"sqlite:///{tmp_path / 'never.db'}", RULES_DIR, tmp_path / "auth.yaml", *extra),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_benefits_serve_with_a_key_not_matching_its_certificate_exits_saying_why(
    pki: TlsFiles, other_pki: TlsFiles, tmp_path: Path
) -> None:
    done = _serve_process(
        tmp_path, "--listen", "127.0.0.1:0", "--tls-cert", str(pki.server_cert), "--tls-key", str(other_pki.server_key)
    )
    assert done.returncode == 2, done.stderr
    assert f"error: TLS key {other_pki.server_key} does not belong to the certificate {pki.server_cert}" in done.stderr
    assert "Traceback" not in done.stderr and "BEGIN" not in done.stderr + done.stdout  # no key material either
    assert not (tmp_path / "never.db").exists()


def test_benefits_serve_refuses_plaintext_beyond_loopback(tmp_path: Path) -> None:
    done = _serve_process(tmp_path, "--listen", "0.0.0.0:0")
    assert done.returncode == 2, done.stderr
    assert "error: refusing to listen on 0.0.0.0:0 without TLS" in done.stderr and "Traceback" not in done.stderr


def test_benefits_serve_insecure_beyond_loopback_starts_and_warns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    load_registry(url, registry_records())
    log_file = tmp_path / "server.log"
    with server_process(
        url, write_auth_file(tmp_path / "auth.yaml"), log_file, "--listen", "0.0.0.0:0", "--insecure"
    ) as (_child, port):
        assert _health(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING
    log = log_file.read_text(encoding="utf-8")
    assert "WARNING" in log and "listening on 0.0.0.0:0 WITHOUT TLS (--insecure)" in log
