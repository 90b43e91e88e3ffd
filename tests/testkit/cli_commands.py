"""Argument lists for `benefits` commands that CLI tests run again and again."""

from __future__ import annotations


def evaluate_command(
    db_url: str, uscc: str, policy: str = "stable-jobs-refund", period: int = 2025, as_of: str = "2026-03-31"
) -> list[str]:
    """`evaluate --json` of one enterprise under one policy and period, on one evaluation date."""
    return [
        "evaluate",
        "--db",
        db_url,
        "--uscc",
        uscc,
        "--policy",
        policy,
        "--period",
        str(period),
        "--as-of",
        as_of,
        "--json",
    ]
