"""The ledger key from the command line: `benefits audit keygen` makes it once (0600, never
overwritten), `benefits serve` refuses a missing one instead of making it, and `benefits audit
verify --public-key` checks the checkpoints with the public half alone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from testkit.api_fixtures import A, enterprise_record, load_registry, si_record
from testkit.cli_commands import evaluate_command
from testkit.paths import REPO_ROOT, RULES_DIR

from service.audit import checkpoints
from service.cli import main
from service.serve_command import serve_command


def test_keygen_makes_a_private_key_0600_and_the_public_key_beside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys" / "ledger-key.pem"
    assert main(["audit", "keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_mode & 0o777 == 0o600
    public = tmp_path / "keys" / "ledger-key.pem.pub"
    key_id = checkpoints.key_id(checkpoints.load_public_key(public))
    assert f"key id {key_id}" in printed and str(public) in printed
    assert checkpoints.key_id(checkpoints.load_private_key(out).public_key()) == key_id
    assert "PRIVATE KEY" not in printed


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ledger-key.pem"
    assert main(["audit", "keygen", "--out", str(out)]) == 0
    capsys.readouterr()
    before = out.read_bytes()
    assert main(["audit", "keygen", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} already exists; refusing to overwrite")
    assert out.read_bytes() == before


def test_serve_refuses_a_missing_ledger_key_and_makes_none(tmp_path: Path) -> None:
    key = tmp_path / "ledger-key.pem"
    done = subprocess.run(
        serve_command(
            f"sqlite:///{tmp_path / 'never.db'}",
            RULES_DIR,
            tmp_path / "auth.yaml",
            "--listen",
            "127.0.0.1:0",
            "--ledger-key",
            str(key),
            "--checkpoints",
            str(tmp_path / "checkpoints.jsonl"),
        ),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert (
        f"error: ledger key {key} does not exist; make it once with `benefits audit keygen --out {key}`" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not key.exists() and not (tmp_path / "never.db").exists()


def test_verify_with_the_public_key_checks_the_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    load_registry(db, [enterprise_record(A), si_record(A)])
    key_file, checkpoint_file = tmp_path / "ledger-key.pem", tmp_path / "checkpoints.jsonl"
    key = checkpoints.generate_key(key_file)
    assert main(evaluate_command(db, A)) == 0
    capsys.readouterr()
    verify = ["audit", "verify", "--db", db, "--checkpoints", str(checkpoint_file)]
    public = ["--public-key", str(checkpoints.public_key_path(key_file))]

    assert main([*verify, *public]) == 1  # entries, but no checkpoint
    assert "does not exist: its checkpoints were removed or never written" in capsys.readouterr().out

    from enterprise_registry.db import make_engine

    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            checkpoints.write(checkpoints.checkpoint_now(conn, key), checkpoint_file)
    finally:
        engine.dispose()
    assert main([*verify, *public]) == 0
    assert capsys.readouterr().out.startswith("VALID: 1 entries checked")
    assert main([*verify, "--ledger-key", str(key_file)]) == 0  # the private key serves as well
    capsys.readouterr()

    # another evaluation date: a new record (the same one would be answered from its record)
    assert main(evaluate_command(db, A, as_of="2026-04-01")) == 0
    capsys.readouterr()
    assert main([*verify, *public]) == 0
    assert "1 entries after the newest checkpoint are not yet covered" in capsys.readouterr().out

    forged = json.loads(checkpoint_file.read_text(encoding="utf-8"))
    forged["entry_count"] = 2
    with checkpoint_file.open("a", encoding="utf-8") as appended:
        appended.write(json.dumps(forged) + "\n")
    assert main([*verify, *public]) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID (checkpoint): ")
    assert f"{checkpoint_file} line 2: checkpoint signature does not verify" in out

    checkpoint_file.write_text("", encoding="utf-8")  # emptied
    assert main([*verify, *public]) == 1
    assert "holds no checkpoint" in capsys.readouterr().out

    assert main([*verify, "--public-key", str(tmp_path / "absent.pub")]) == 2
    assert "error: public key" in capsys.readouterr().err
