"""The import layering of docs/architecture.md ("Layers"), read from the code by
tools/import_layers.py: what may import what."""
from __future__ import annotations

from tools.import_layers import external_imports, layer, module_imports

TRANSPORT = {"grpc", "grpc_status", "grpc_health", "grpc_reflection", "google", "benefits"}
SQL = {"sqlalchemy", "sqlmodel", "sqlite3", "psycopg"}


def _imports_of(prefix: str) -> dict[str, set[str]]:
    project, external = module_imports(), external_imports()
    names = {m for m in {*project, *external} if m == prefix or m.startswith(prefix + ".")}
    return {m: project.get(m, set()) | external.get(m, set()) for m in names}


def test_the_analysis_reads_the_code() -> None:
    imports = module_imports()
    assert "rules.compiler" in imports["rules.loader"]
    assert "service.audit.ledger" in imports["service.audit.checkpoints"]
    assert "rules.loader" not in imports.get("rules.vectorised", set())   # under TYPE_CHECKING only


def test_rules_knows_nothing_of_the_service_the_registry_sql_or_grpc() -> None:
    wrong = {m: sorted(t & ({"service", "enterprise_registry"} | SQL | TRANSPORT) |
                       {x for x in t if x.startswith(("service.", "enterprise_registry."))})
             for m, t in _imports_of("rules").items()}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_registry_knows_nothing_of_policies_the_service_or_grpc() -> None:
    wrong = {m: sorted(x for x in t if x.startswith(("rules", "service")) or x in TRANSPORT)
             for m, t in _imports_of("enterprise_registry").items()}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_only_the_engine_driver_imports_durable_rules() -> None:
    users = {m for m, t in external_imports().items() if t & {"durable_rules_engine", "durable"}}
    assert users == {"rules.engine"}


def test_the_decide_audit_and_money_layers_know_nothing_of_grpc() -> None:
    for name in ("service.evaluation", "service.audit", "service.payouts"):
        wrong = {m: sorted(t & TRANSPORT) for m, t in _imports_of(name).items()}
        assert {m: t for m, t in wrong.items() if t} == {}, name


def test_nothing_below_the_api_imports_it() -> None:
    importers = {layer(m) for m, t in module_imports().items() if any(layer(x) == "service.api" for x in t)}
    assert importers - {"service.api"} == {"service.server"}
