"""Demo tokens for `make run` (`benefits demo-auth`): one principal per role, never for production."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from enterprise_registry.kinds import DEPARTMENTS
from enterprise_registry.models import Enterprise
from service.api.auth import ROLES


def write_demo_auth(engine: Engine, out: Path) -> list[dict[str, Any]]:
    """An auth file with one demo principal per role; the enterprise is a registered company,
    the feed writes for every department."""
    with engine.connect() as conn:
        uscc = conn.execute(
            select(col(Enterprise.uscc))
            .where(col(Enterprise.org_type) == "enterprise")
            .where(col(Enterprise.status) == "active")
            .order_by(Enterprise.uscc)
            .limit(1)
        ).scalar_one()
    principals: list[dict[str, Any]] = []
    for role in ROLES:
        entry: dict[str, Any] = {
            "principal": f"demo-{role.replace('_', '-')}",
            "role": role,
            "token": f"demo-{role.replace('_', '-')}-{secrets.token_hex(8)}",
        }
        if role == "enterprise":
            entry["uscc"] = uscc
        if role == "registry_feed":
            entry["sources"] = list(DEPARTMENTS)
        principals.append(entry)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Demo tokens for `make run` only; never for production.\n"
        + yaml.safe_dump({"principals": principals}, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    out.chmod(0o600)
    return principals
