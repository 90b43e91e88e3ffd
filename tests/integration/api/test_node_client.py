"""The contract from another language: a Node.js client (@grpc/grpc-js + @grpc/proto-loader, built
from proto/ alone) against the real server on a loopback port.

Skipped, and said so, when `node` or tests/node/node_modules is missing (`make node-deps`
installs it); BENEFITS_REQUIRE_NODE=1 turns that skip into a failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict, Unpack

import pytest
import yaml
from testkit.api_fixtures import load_registry
from testkit.paths import REPO_ROOT
from testkit.tls_material import TlsFiles, make_tls_files

from enterprise_registry.uscc import make
from service.config import ServeConfig
from service.server import RunningServer, create_server

NODE_DIR = REPO_ROOT / "tests" / "node"
CLIENT = NODE_DIR / "client.js"
REQUIRE_NODE = os.environ.get("BENEFITS_REQUIRE_NODE") == "1"
TIMEOUT = 60.0

# Synthetic codes: 17 characters never using I O S V Z, the check character computed.
OWN = make("91420600MA4K20001")  # the enterprise caller, eligible for stable-jobs-refund 2025
FOREIGN = make("91420600MA4K20002")  # another enterprise on record
ENTERPRISE_TOKEN = "node-enterprise-token-0123456789"
ADMIN_TOKEN = "node-admin-token-0123456789"
SJR = "stable-jobs-refund"
# 1,234,567.15 yuan of premiums x 30 % (large enterprise, 2025) = 370,370.145 -> 370,370.15 yuan.
PREMIUMS_FEN = 123456715
AMOUNT_FEN = 37037015
POLICY_IDS = [
    "above-size-entry-reward",
    "high-tech-reward",
    "job-expansion-subsidy",
    "little-giant-reward",
    "single-champion-reward",
    "stable-jobs-refund",
]
SJR_CONDITIONS = [
    "registered-active",
    "not-credit-listed",
    "employer-type",
    "not-labor-dispatch",
    "premiums-paid-in-full",
    "layoff-rate",
]
PERMISSION_DENIED = 7


def _node_or_skip() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "`node` is not on PATH"
    elif (
        not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir()
        or not (NODE_DIR / "node_modules" / "@grpc" / "proto-loader").is_dir()
    ):
        problem = f"{NODE_DIR / 'node_modules'} is missing (run `make node-deps`, i.e. npm ci there)"
    if problem is None:
        assert node is not None
        return node
    message = f"Node.js client tests SKIPPED: {problem}"
    if REQUIRE_NODE:
        pytest.fail(message + " (BENEFITS_REQUIRE_NODE=1 forbids skipping)")
    pytest.skip(message)


def _records() -> list[dict[str, object]]:
    def enterprise(uscc: str) -> dict[str, object]:
        return {
            "kind": "enterprise",
            "uscc": uscc,
            "source": "market_regulation",
            "as_of": "2025-12-31",
            "name": f"襄阳节点示例{uscc[-4:]}有限公司",
            "org_type": "enterprise",
            "region_code": "420606",
            "industry_code": "C3670",
            "established_on": "2008-06-18",
            "status": "active",
            "labor_dispatch": False,
            "bank_account": {
                "bank_name": "中国工商银行襄阳分行",
                "account_no": "1804000109200012345",
                "account_name": f"襄阳节点示例{uscc[-4:]}有限公司",
            },
        }

    def social_insurance(uscc: str) -> dict[str, object]:
        return {
            "kind": "social_insurance_year",
            "uscc": uscc,
            "source": "human_resources",
            "as_of": "2025-01-31",
            "year": 2024,
            "insured_start": 1000,
            "insured_end": 1000,
            "insured_avg_monthly": 1000,
            "ui_months_paid": 36,
            "ui_premium_paid_fen": PREMIUMS_FEN,
            "ui_back_payment_fen": 0,
            "ui_late_fee_fen": 0,
            "ui_arrears": False,
            "layoffs": 30,
            "ui_benefit_claimants": 30,
            "size_class": "large",
        }

    return [enterprise(OWN), social_insurance(OWN), enterprise(FOREIGN), social_insurance(FOREIGN)]


@pytest.fixture(scope="module")
def node() -> str:
    return _node_or_skip()


class _TlsFiles(TypedDict, total=False):
    """The TLS fields of ServeConfig a test may set."""

    tls_cert: Path
    tls_key: Path
    client_ca: Path


def _serve(folder: Path, **tls: Unpack[_TlsFiles]) -> Iterator[RunningServer]:
    """A server on a loopback port over `_records()`, with the TLS settings in `tls`."""
    db_url = f"sqlite:///{folder / 'registry.db'}"
    load_registry(db_url, _records())
    auth_file = folder / "auth.yaml"
    auth_file.write_text(
        yaml.safe_dump(
            {
                "principals": [
                    {"principal": "node-enterprise", "role": "enterprise", "uscc": OWN, "token": ENTERPRISE_TOKEN},
                    {"principal": "node-admin", "role": "admin", "token": ADMIN_TOKEN},
                ]
            }
        ),
        encoding="utf-8",
    )
    running = create_server(
        ServeConfig(db_url=db_url, rules_dir=REPO_ROOT / "rules", auth_file=auth_file, listen="127.0.0.1:0", **tls)
    )
    try:
        yield running
    finally:
        running.stop(grace=None)  # also disposes the server's engine


@pytest.fixture(scope="module")
def server(node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from _serve(tmp_path_factory.mktemp("node-client"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("node-pki"))


@pytest.fixture(scope="module")
def mtls_server(node: str, pki: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Mutual TLS: a client needs a certificate signed by the test CA."""
    yield from _serve(
        tmp_path_factory.mktemp("node-mtls"), tls_cert=pki.server_cert, tls_key=pki.server_key, client_ca=pki.ca
    )


def _run_client(node: str, port: int, token: str, uscc: str, *tls: str) -> tuple[int, dict[str, Any], str]:
    """Run the Node.js client (extra TLS options in `tls`): (exit status, the JSON object it
    printed, stderr)."""
    env = {**os.environ, "BENEFITS_TOKEN": token}  # the token through the environment, not argv
    completed = subprocess.run(
        [node, str(CLIENT), "--target", f"127.0.0.1:{port}", "--uscc", uscc, "--policy", SJR, "--period", "2025", *tls],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, (
        f"expected one JSON line, exit {completed.returncode}\nstdout: {completed.stdout}\nstderr: {completed.stderr}"
    )
    return completed.returncode, json.loads(lines[0]), completed.stderr


def test_node_client_lists_policies_and_explains(node: str, server: RunningServer) -> None:
    status, printed, stderr = _run_client(node, server.port, ENTERPRISE_TOKEN, OWN)
    assert status == 0, stderr
    assert printed["policy_ids"] == POLICY_IDS
    evaluation = printed["evaluation"]
    assert evaluation["uscc"] == OWN
    assert evaluation["policy_id"] == SJR
    assert evaluation["period"] == 2025
    assert evaluation["fact_year"] == 2024
    assert evaluation["outcome"] == "OUTCOME_ELIGIBLE"
    # int64 arrives as a decimal string (proto-loader `longs: String`).
    assert evaluation["amount_fen"] == str(AMOUNT_FEN)
    assert [c["id"] for c in evaluation["conditions"]] == SJR_CONDITIONS
    assert {c["result"] for c in evaluation["conditions"]} == {"CONDITION_RESULT_TRUE"}
    assert {c["result"] for c in evaluation["payable_conditions"]} == {"CONDITION_RESULT_TRUE"}
    assert evaluation["missing_facts"] == []
    assert evaluation["held_conditions"] == []


def test_node_client_enterprise_reading_another_uscc_is_denied(node: str, server: RunningServer) -> None:
    status, printed, stderr = _run_client(node, server.port, ENTERPRISE_TOKEN, FOREIGN)
    assert status != 0
    assert printed["error"]["code"] == PERMISSION_DENIED, printed
    assert printed["error"]["status"] == "PERMISSION_DENIED"
    assert printed["error"]["rpc"] == "benefits.v1.BenefitService/ExplainEligibility"
    assert "PERMISSION_DENIED (7)" in stderr


def test_node_client_admin_may_read_any_uscc(node: str, server: RunningServer) -> None:
    status, printed, stderr = _run_client(node, server.port, ADMIN_TOKEN, FOREIGN)
    assert status == 0, stderr
    assert printed["evaluation"]["uscc"] == FOREIGN
    assert printed["evaluation"]["outcome"] == "OUTCOME_ELIGIBLE"


def test_node_client_over_mutual_tls(node: str, mtls_server: RunningServer, pki: TlsFiles) -> None:
    status, printed, stderr = _run_client(
        node,
        mtls_server.port,
        ENTERPRISE_TOKEN,
        OWN,
        "--ca",
        str(pki.ca),
        "--cert",
        str(pki.client_cert),
        "--key",
        str(pki.client_key),
    )
    assert status == 0, stderr
    assert printed["policy_ids"] == POLICY_IDS
    assert printed["evaluation"]["outcome"] == "OUTCOME_ELIGIBLE"
    assert printed["evaluation"]["amount_fen"] == str(AMOUNT_FEN)
    # without its certificate the same client is refused in the handshake
    status, printed, _ = _run_client(node, mtls_server.port, ENTERPRISE_TOKEN, OWN, "--ca", str(pki.ca))
    assert status == 1 and printed["error"]["status"] == "UNAVAILABLE", printed
