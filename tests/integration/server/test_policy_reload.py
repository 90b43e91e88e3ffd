"""`benefits serve` as a process reloads its policy directory and its auth file on SIGHUP: a valid
change serves the new version (a new token admitted, a removed one refused), a broken file keeps
the old rules or principals serving with the error (file and line) in the log, and Health stays
SERVING throughout (SQLite)."""

from __future__ import annotations

import re
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from benefits.v1 import benefit_service_pb2, evaluation_pb2, policy_service_pb2
from grpc_health.v1 import health_pb2
from testkit.api_fixtures import (
    TOKENS,
    A,
    Stubs,
    as_role,
    bearer,
    load_registry,
    registry_records,
    status_code,
    write_auth_file,
)
from testkit.grpc_stubs import health_stub
from testkit.paths import POLICIES_DIR
from testkit.server_process import ServerProcess, server_process

POLICY = "stable-jobs-refund"
OLD_VERSION, NEW_VERSION = "2025.2", "2025.9"
RELOADED = re.compile(r"^policies reloaded$")
REFUSED = re.compile(r"^policy reload refused")
AUTH_RELOADED = re.compile(r"^auth file reloaded$")
AUTH_REFUSED = re.compile(r"^auth file reload refused")
NEW_TOKEN = "a-new-auditor-token-0123456789"


@dataclass
class Running:
    child: ServerProcess
    stubs: Stubs
    policy_file: Path
    log_file: Path
    auth_file: Path

    def versions(self) -> dict[str, str]:
        reply = self.stubs.policy.ListPolicies(
            policy_service_pb2.ListPoliciesRequest(), metadata=as_role("admin"), timeout=10
        )
        return {p.policy_id: p.version for p in reply.policies}

    def get_version(self) -> str:
        reply = self.stubs.policy.GetPolicy(
            policy_service_pb2.GetPolicyRequest(policy_id=POLICY), metadata=as_role("admin"), timeout=10
        )
        return str(reply.version)

    def explain(self) -> evaluation_pb2.Evaluation:
        """How the running rules decide enterprise A under POLICY (2025)."""
        reply = self.stubs.benefit.ExplainEligibility(
            benefit_service_pb2.ExplainEligibilityRequest(uscc=A, policy_id=POLICY, period=2025),
            metadata=as_role("admin"),
            timeout=30,
        )
        evaluation: evaluation_pb2.Evaluation = reply.evaluation
        return evaluation

    def health(self) -> int:
        reply = health_stub(self.stubs.channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        return int(reply.status)

    def sighup(self, outcome: re.Pattern[str]) -> None:
        self.child.proc.send_signal(signal.SIGHUP)
        self.child.wait_for(outcome, timeout=30)  # the server says on stdout once it has acted

    def rewrite(self, old: str, new: str) -> int:
        """Replace `old` (once) in the policy file; returns the 1-based line it was on."""
        text = self.policy_file.read_text(encoding="utf-8")
        assert text.count(old) == 1
        self.policy_file.write_text(text.replace(old, new), encoding="utf-8")
        return text[: text.index(old)].count("\n") + 1


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    load_registry(url, registry_records())
    rules = tmp_path / "rules"
    shutil.copytree(POLICIES_DIR, rules / "policies")  # the server's own copy, edited below
    log_file = tmp_path / "server.log"
    auth_file = write_auth_file(tmp_path / "auth.yaml")
    with server_process(url, auth_file, log_file, rules_dir=rules) as (child, port):
        stubs = Stubs.connect(port)
        try:
            yield Running(child, stubs, rules / "policies" / f"{POLICY}.yaml", log_file, auth_file)
        finally:
            stubs.channel.close()


def test_sighup_serves_a_valid_change(running: Running) -> None:
    before = running.versions()
    assert before[POLICY] == OLD_VERSION
    decided = running.explain()
    assert decided.policy_version == OLD_VERSION
    running.rewrite(f'version: "{OLD_VERSION}"', f'version: "{NEW_VERSION}"')
    running.sighup(RELOADED)
    assert running.get_version() == NEW_VERSION
    assert running.versions() == {**before, POLICY: NEW_VERSION}
    # Evaluations run on the new rules too (same conditions: same outcome and amount).
    again = running.explain()
    assert again.policy_version == NEW_VERSION
    assert (again.outcome, again.amount_fen) == (decided.outcome, decided.amount_fen)
    assert running.health() == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("old", "broken"),
    [
        pytest.param('expr: enterprise.status == "active"', "expr: [enterprise.status", id="bad-yaml"),
        pytest.param('expr: enterprise.status == "active"', "expr: enterprise.status == 1", id="type-error"),
    ],
)
def test_sighup_with_a_broken_file_keeps_the_old_rules_and_logs_file_and_line(
    running: Running, old: str, broken: str
) -> None:
    before = running.versions()
    # The version changes too: were the broken file taken in part, it would show.
    running.rewrite(f'version: "{OLD_VERSION}"', f'version: "{NEW_VERSION}"')
    line = running.rewrite(old, broken)
    running.sighup(REFUSED)
    assert running.versions() == before
    assert running.get_version() == OLD_VERSION
    assert running.health() == health_pb2.HealthCheckResponse.SERVING
    log = running.log_file.read_text(encoding="utf-8")
    refusal = next(entry for entry in log.splitlines() if "policy reload refused" in entry)
    where = re.search(re.escape(str(running.policy_file)) + r":(\d+)", refusal)
    assert where is not None, refusal
    assert abs(int(where.group(1)) - line) <= 1  # YAML may place a flow error on the next line

    # Once repaired, the next SIGHUP takes the change.
    running.rewrite(broken, old)
    running.sighup(RELOADED)
    assert running.get_version() == NEW_VERSION


def _list_as(running: Running, token: str) -> grpc.StatusCode:
    return status_code(
        lambda: running.stubs.policy.ListPolicies(
            policy_service_pb2.ListPoliciesRequest(), metadata=bearer(token), timeout=10
        )
    )


def test_sighup_takes_a_new_auth_file_a_new_token_in_a_removed_one_out(running: Running) -> None:
    principals = yaml.safe_load(running.auth_file.read_text(encoding="utf-8"))["principals"]
    kept = [p for p in principals if p["principal"] != "test-auditor"]
    kept.append({"principal": "new-auditor", "role": "auditor", "token": NEW_TOKEN})
    assert _list_as(running, NEW_TOKEN) == grpc.StatusCode.UNAUTHENTICATED
    running.auth_file.write_text(yaml.safe_dump({"principals": kept}), encoding="utf-8")
    running.sighup(AUTH_RELOADED)
    assert _list_as(running, NEW_TOKEN) == grpc.StatusCode.OK
    assert _list_as(running, TOKENS["auditor"]) == grpc.StatusCode.UNAUTHENTICATED
    assert _list_as(running, TOKENS["admin"]) == grpc.StatusCode.OK


def test_sighup_with_a_broken_auth_file_keeps_the_principals_and_logs_the_entry(running: Running) -> None:
    principals = yaml.safe_load(running.auth_file.read_text(encoding="utf-8"))["principals"]
    principals.append({"principal": "broken", "role": "nobody", "token": NEW_TOKEN})
    running.auth_file.write_text(yaml.safe_dump({"principals": principals}), encoding="utf-8")
    running.sighup(AUTH_REFUSED)
    assert _list_as(running, TOKENS["auditor"]) == grpc.StatusCode.OK
    assert running.health() == health_pb2.HealthCheckResponse.SERVING
    log = running.log_file.read_text(encoding="utf-8")
    refusal = next(entry for entry in log.splitlines() if "auth file reload refused" in entry)
    assert f"{running.auth_file}: principals[{len(principals) - 1}]: `role` must be one of" in refusal
    assert _list_as(running, NEW_TOKEN) == grpc.StatusCode.UNAUTHENTICATED  # nothing of the file taken
