"""`benefits batch ...` against a real server: the finance bureau's cycle from the command line,
and the auditor's `benefits audit prove` for a line of the settled batch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from testkit.api_fixtures import E_SMALL, TOKENS, A, registry_records, serving
from testkit.paths import REPO_ROOT

from service.cli import main
from service.server import RunningServer


@pytest.fixture(scope="module")
def api_server(api_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("batch-cli")
    with serving(
        api_db_url, registry_records(), folder, payers_file=REPO_ROOT / "examples" / "payers.yaml", batch_chunk_size=2
    ) as running:
        yield running


def _batch(api_server: RunningServer, role: str, *args: str) -> int:
    return main(["batch", args[0], "--target", f"127.0.0.1:{api_server.port}", "--token", TOKENS[role], *args[1:]])


def test_the_whole_cycle_from_the_command_line(
    api_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], api_db_url: str
) -> None:
    assert (
        _batch(
            api_server,
            "finance_operator",
            "create",
            "--policy",
            "stable-jobs-refund",
            "--period",
            "2025",
            "--request-id",
            "cli-request-0001",
        )
        == 0
    )
    created = capsys.readouterr()
    assert "DRAFT, 2 lines" in created.out and "merkle root" in created.out
    assert "enterprises" in created.err  # the progress bar
    batch_id = created.out.split()[1]

    assert _batch(api_server, "finance_operator", "approve", batch_id) == 1  # four eyes
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert _batch(api_server, "finance_approver", "approve", batch_id) == 0
    assert "APPROVED" in capsys.readouterr().out

    bank_file = tmp_path / "batch.xml"
    assert (
        _batch(api_server, "finance_operator", "export", batch_id, "--format", "pain001", "--out", str(bank_file)) == 0
    )
    assert "bytes (pain001)" in capsys.readouterr().out
    ns = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"}
    assert etree.parse(str(bank_file)).findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs", namespaces=ns) == "2"

    assert _batch(api_server, "finance_operator", "lines", batch_id) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.splitlines()[1:]]
    assert sorted(row[1] for row in rows) == sorted([A, E_SMALL])
    results = tmp_path / "results.csv"
    results.write_text(
        f"line_id,state,return_reason\n{rows[0][0]},PAID,\n{rows[1][0]},RETURNED,AC04 账户已销户\n", encoding="utf-8"
    )
    assert _batch(api_server, "finance_operator", "results", batch_id, "--file", str(results)) == 0
    assert "EXPORTED" in capsys.readouterr().out  # the return awaits a second principal
    assert _batch(api_server, "finance_operator", "confirm-returns", batch_id) != 0  # not the recorder's role
    capsys.readouterr()
    assert _batch(api_server, "finance_approver", "confirm-returns", batch_id) == 0
    out = capsys.readouterr().out
    assert "confirmed 1 return(s)" in out and "SETTLED" in out

    assert main(["audit", "prove", "--db", api_db_url, rows[0][0]]) == 0
    assert "VERIFIED: the line is in its batch" in capsys.readouterr().out


def test_a_malformed_results_file_is_named_with_its_line(
    api_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results.csv"
    results.write_text("line_id,state,return_reason\nx-1,PAID,\nx-2,MAYBE,\n", encoding="utf-8")
    assert _batch(api_server, "finance_operator", "results", "pb_whatever", "--file", str(results)) == 2
    assert f"{results}:3:" in capsys.readouterr().err


def test_a_call_without_a_token_is_refused_before_any_call(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENEFITS_TOKEN", raising=False)
    assert main(["batch", "get", "pb_x", "--target", "127.0.0.1:1"]) == 2
    assert "BENEFITS_TOKEN" in capsys.readouterr().err
