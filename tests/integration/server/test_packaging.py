"""The package as a user gets it: `python -m build` on a copy of the tracked files (so gen/ and
anything else untracked cannot leak in), the wheel installed into a fresh virtual environment,
and that installation's `benefits serve`, run from an unrelated directory, answering over a real
socket with the policies it carries."""

from __future__ import annotations

import hashlib
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from benefits.v1 import (
    benefit_service_pb2,
    benefit_service_pb2_grpc,
    evaluation_pb2,
    policy_service_pb2,
    policy_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2
from testkit.api_fixtures import CLIENT_OPTIONS, POLICY_IDS, SJR, TIMEOUT, bearer
from testkit.grpc_stubs import health_stub
from testkit.paths import REPO_ROOT, RULES_DIR
from testkit.server_process import LISTENING, STARTUP_SECONDS, ServerProcess

PROTOS = sorted(p.stem for p in (REPO_ROOT / "proto" / "benefits" / "v1").glob("*.proto"))
STEP_SECONDS = 300


def _run(command: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _tracked_copy(dest: Path) -> Path:
    """The repository's tracked files (as they are in the work tree) copied into dest: what a
    fresh clone holds."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
    for name in listed.stdout.decode().split("\0"):
        if name and (REPO_ROOT / name).is_file():  # a tracked file deleted in the work tree is gone
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, dest / name)
    return dest


def _isolated_env() -> dict[str, str]:
    """The environment without anything that would point Python at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin/ folder of a fresh virtual environment holding the project's wheel."""
    work = tmp_path_factory.mktemp("packaging")
    env = _isolated_env()
    source = _tracked_copy(work / "clone")
    # The default `python -m build` (an sdist, then the wheel built from the unpacked sdist), so the
    # sdist must carry proto/ and the build hook too. --no-isolation builds with the dev
    # environment's setuptools and grpcio-tools instead of downloading them again; build still
    # checks that they satisfy [build-system].requires.
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", work / "dist", source], source, env)
    assert not (source / "gen").exists() and not (source / "benefits").exists(), (
        "the build wrote generated code into the source tree"
    )
    wheels = list((work / "dist").glob("benefits-*.whl"))
    assert len(wheels) == 1, wheels

    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], work, env)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheels[0]],
        work,
        env,
    )
    # The runtime dependencies come from the dev environment instead of the network (seconds, not
    # minutes): a .pth file appends its site-packages to the fresh environment's sys.path. Only its
    # folders are added - its own .pth files, among them the editable install of this checkout,
    # are not run - so the project itself can only come from the wheel (asserted below). Written
    # after the install, so that pip does not take the checkout's editable install for this one.
    # --system-site-packages would not do: the dev environment is itself a venv, not the system.
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], work, env).strip())
    dev_site = dict.fromkeys(site.getsitepackages())
    (purelib / "dev-environment.pth").write_text("".join(f"{folder}\n" for folder in dev_site), encoding="utf-8")
    yield venv / "bin"


def test_the_wheel_holds_the_generated_code_and_the_package_data(installed: Path) -> None:
    probe = (
        "import benefits.v1, rules, service, pathlib; "
        "print(pathlib.Path(benefits.v1.__file__).parent); print(pathlib.Path(rules.__file__).parent); "
        "print(pathlib.Path(service.__file__).parent)"
    )
    outside = installed.parent.parent
    lines = _run([installed / "python", "-I", "-c", probe], outside, _isolated_env()).split()
    generated, rules_dir, service_dir = (Path(line) for line in lines)
    site_packages = installed.parent / "lib"
    for folder in (generated, rules_dir, service_dir):
        assert folder.is_relative_to(site_packages), f"{folder} is not the installed copy"
    assert sorted(p.name for p in generated.glob("*_pb2.py")) == [f"{stem}_pb2.py" for stem in PROTOS]
    assert sorted(p.name for p in generated.glob("*_pb2_grpc.py")) == [f"{stem}_pb2_grpc.py" for stem in PROTOS]
    assert (rules_dir / "grammar.lark").read_bytes() == (RULES_DIR / "grammar.lark").read_bytes()


def test_the_installed_server_serves_from_another_directory(installed: Path, tmp_path: Path) -> None:
    env = _isolated_env()
    db_url = f"sqlite:///{tmp_path / 'benefits.db'}"
    benefits = installed / "benefits"
    _run([benefits, "registry", "synth", "--count", "40", "--seed", "7", "--out", "registry.jsonl"], tmp_path, env)
    _run([benefits, "registry", "load", "registry.jsonl", "--db", db_url], tmp_path, env)
    _run([benefits, "demo-auth", "--db", db_url, "--out", "auth.yaml"], tmp_path, env)
    auth = yaml.safe_load((tmp_path / "auth.yaml").read_text(encoding="utf-8"))
    principals = {p["role"]: p for p in auth["principals"]}
    enterprise = principals["enterprise"]

    # no --rules: the server must find the policies it was installed with
    command = [str(benefits), "serve", "--db", db_url, "--auth-file", "auth.yaml", "--listen", "127.0.0.1:0"]
    with (
        open(tmp_path / "server.log", "w", encoding="utf-8") as log,
        subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8"
        ) as proc,
    ):
        server = ServerProcess(proc)
        try:
            port = int(server.wait_for(LISTENING, STARTUP_SECONDS).group(1))
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS) as channel:
                health = health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
                assert health.status == health_pb2.HealthCheckResponse.SERVING

                policies = (
                    policy_service_pb2_grpc.PolicyServiceStub(channel)
                    .ListPolicies(
                        policy_service_pb2.ListPoliciesRequest(),
                        metadata=bearer(principals["admin"]["token"]),
                        timeout=TIMEOUT,
                    )
                    .policies
                )
                assert sorted(p.policy_id for p in policies) == sorted(POLICY_IDS)
                for policy in policies:
                    policy_file = RULES_DIR / "policies" / f"{policy.policy_id}.yaml"
                    assert policy.rule_sha256 == hashlib.sha256(policy_file.read_bytes()).hexdigest()

                explained = benefit_service_pb2_grpc.BenefitServiceStub(channel).ExplainEligibility(
                    benefit_service_pb2.ExplainEligibilityRequest(uscc=enterprise["uscc"], policy_id=SJR, period=2025),
                    metadata=bearer(enterprise["token"]),
                    timeout=TIMEOUT,
                )
                assert explained.evaluation.uscc == enterprise["uscc"]
                assert explained.evaluation.outcome != evaluation_pb2.OUTCOME_UNSPECIFIED
                assert explained.explanation

                with pytest.raises(grpc.RpcError) as refused:
                    policy_service_pb2_grpc.PolicyServiceStub(channel).ListPolicies(
                        policy_service_pb2.ListPoliciesRequest(), timeout=TIMEOUT
                    )
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            server.join()
