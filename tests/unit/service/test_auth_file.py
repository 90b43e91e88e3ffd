"""The auth file's feed entries: a registry_feed names its departments, nobody else has any."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from enterprise_registry.kinds import DEPARTMENTS
from service.api.auth import METHOD_ROLES, AuthTable
from service.config import ServeConfig
from service.errors import AuthFileError
from service.server import create_server

RULES_DIR = Path(__file__).resolve().parents[3] / "rules"
ADMIN: dict[str, object] = {"principal": "ops", "role": "admin", "token": "admin-token-0123456789"}


def feed(**fields: object) -> dict[str, object]:
    return {"principal": "tax-feed", "role": "registry_feed", "token": "tax-feed-token-0123456789", **fields}


def table(*entries: dict[str, object]) -> AuthTable:
    return AuthTable.from_data({"principals": list(entries)}, "auth.yaml")


def refusal(*entries: dict[str, object]) -> str:
    with pytest.raises(AuthFileError) as info:
        table(*entries)
    return str(info.value)


def test_a_feed_has_the_sources_it_names() -> None:
    auth = table(ADMIN, feed(sources=["tax", "credit"]))
    principal = auth.authenticate([("authorization", "Bearer tax-feed-token-0123456789")])
    assert (principal.name, principal.role, principal.sources) == ("tax-feed", "registry_feed", ("tax", "credit"))
    admin = auth.authenticate([("authorization", "Bearer admin-token-0123456789")])
    assert admin.sources == ()


def test_every_department_is_a_source() -> None:
    principal = table(feed(sources=list(DEPARTMENTS))).authenticate(
        [("authorization", "Bearer tax-feed-token-0123456789")]
    )
    assert principal.sources == DEPARTMENTS


@pytest.mark.parametrize(
    ("sources", "shown"),
    [
        (["customs"], "'customs'"),
        (["tax", "Tax"], "'Tax'"),
        (["tax", 7], "7"),
        (["tax", None], "None"),
    ],
)
def test_an_unknown_source_is_refused_naming_the_entry_and_the_value(sources: list[object], shown: str) -> None:
    message = refusal(ADMIN, feed(sources=sources))
    assert message.startswith("auth.yaml: principals[1]: `sources` holds ")
    assert f"holds {shown}, which is no source department" in message
    assert all(department in message for department in DEPARTMENTS)


@pytest.mark.parametrize(
    "fields", [{}, {"sources": []}, {"sources": None}, {"sources": "tax"}, {"sources": {"tax": True}}], ids=repr
)
def test_a_feed_without_a_list_of_sources_is_refused(fields: dict[str, object]) -> None:
    assert refusal(feed(**fields)).startswith(
        "auth.yaml: principals[0]: a registry_feed needs `sources`, a non-empty list"
    )


def test_a_source_named_twice_is_refused() -> None:
    assert refusal(feed(sources=["tax", "credit", "tax"])) == "auth.yaml: principals[0]: `sources` names 'tax' twice"


@pytest.mark.parametrize("role", ["admin", "auditor", "enterprise", "finance_operator", "finance_approver"])
def test_sources_on_any_other_role_are_refused(role: str) -> None:
    entry: dict[str, object] = {"principal": "p", "role": role, "token": "other-token-0123456789", "sources": ["tax"]}
    if role == "enterprise":
        entry["uscc"] = "91420600MA4T00019H"
    assert refusal(feed(sources=["tax"]), entry) == "auth.yaml: principals[1]: only a registry_feed has `sources`"


def test_only_feeds_import_facts() -> None:
    assert METHOD_ROLES["/benefits.v1.RegistryService/ImportFacts"] == {"registry_feed"}


def test_the_server_does_not_start_with_an_unknown_source(tmp_path: Path) -> None:
    auth_file = tmp_path / "auth.yaml"
    auth_file.write_text(yaml.safe_dump({"principals": [ADMIN, feed(sources=["tax", "customs"])]}), encoding="utf-8")
    db = tmp_path / "registry.db"
    with pytest.raises(AuthFileError, match=r"auth\.yaml: principals\[1\]: `sources` holds 'customs'"):
        create_server(
            ServeConfig(db_url=f"sqlite:///{db}", rules_dir=RULES_DIR, auth_file=auth_file, listen="127.0.0.1:0")
        )
    assert not db.exists()  # refused before anything else was set up


def test_the_demo_auth_file_loads_and_its_feed_writes_for_every_department(tmp_path: Path) -> None:
    from enterprise_registry.db import create_schema, make_engine
    from enterprise_registry.importer import load_records
    from service.demo_auth import write_demo_auth

    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        create_schema(engine)
        load_records(
            [
                {
                    "kind": "enterprise",
                    "uscc": "91420600MA4T00019H",
                    "source": "market_regulation",
                    "as_of": "2025-06-30",
                    "name": "襄阳市测试精密机械有限公司",
                    "org_type": "enterprise",
                    "region_code": "420600",
                    "industry_code": "C3484",
                    "established_on": "2012-03-15",
                    "status": "active",
                    "labor_dispatch": False,
                    "bank_account": None,
                }
            ],
            engine,
        )
        principals = write_demo_auth(engine, tmp_path / "demo-auth.yaml")
    finally:
        engine.dispose()
    auth = AuthTable.from_file(tmp_path / "demo-auth.yaml")
    by_role = {p["role"]: auth.authenticate([("authorization", f"Bearer {p['token']}")]) for p in principals}
    assert by_role["registry_feed"].sources == DEPARTMENTS
    assert by_role["enterprise"].uscc == "91420600MA4T00019H"
    assert all(p.sources == () for role, p in by_role.items() if role != "registry_feed")
