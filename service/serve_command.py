"""The argument list that starts `benefits serve` in a child process.

Benchmarks and tests that signal, kill or time a real server process build it here, so the
options they all pass are written once."""

from __future__ import annotations

import sys
from pathlib import Path


def serve_command(db_url: str, rules_dir: Path, auth_file: Path, *extra: str) -> list[str]:
    """`python -m service.cli serve` with this interpreter, on this database, policy directory and
    auth file; `extra` goes after (e.g. `--listen`, `--workers`)."""
    return [
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--db",
        db_url,
        "--rules",
        str(rules_dir),
        "--auth-file",
        str(auth_file),
        *extra,
    ]
