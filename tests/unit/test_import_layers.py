"""The import layering of docs/architecture.md ("Layers"), read from the code by
tools/import_layers.py: what may import what, and no module imports, directly or through others,
a module that imports it back."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tools.import_layers import cycles, external_imports, import_graph, layer, module_files, module_imports

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
    assert "rules.loader" not in imports.get("rules.vectorised", set())  # under TYPE_CHECKING only


def test_rules_knows_nothing_of_the_service_the_registry_sql_or_grpc() -> None:
    wrong = {
        m: sorted(
            t & ({"service", "enterprise_registry"} | SQL | TRANSPORT)
            | {x for x in t if x.startswith(("service.", "enterprise_registry."))}
        )
        for m, t in _imports_of("rules").items()
    }
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_registry_knows_nothing_of_policies_the_service_or_grpc() -> None:
    wrong = {
        m: sorted(x for x in t if x.startswith(("rules", "service")) or x in TRANSPORT)
        for m, t in _imports_of("enterprise_registry").items()
    }
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
    # the demo's auth file names the API's roles (service/api/auth.py); the gRPC clients (above the
    # API, as the command is) read the proto enums through its pairs (service/api/enums.py)
    assert importers - {"service.api"} == {
        "service.server",
        "service.demo_auth",
        "service.client",
        "service.batch_client",
        "service.cli",
    }


def test_no_import_cycle_among_the_project_packages() -> None:
    found = cycles(module_imports())
    assert found == [], "import cycles:\n" + "\n".join(" -> ".join(path) for path in found)


def test_the_graph_sees_the_project_imports() -> None:
    graph = module_imports()
    assert "service.cli" in graph and "rules.loader" in graph
    assert "rules.loader" in graph["service.cli.defaults"]  # `from rules.loader import ...`
    assert "service.payouts.batches" in graph["service.payouts.export"]  # `from service.payouts import batches`


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return module_files(root, ["pkg"])


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import thing\n",
            "pkg/b.py": "from . import c\nthing = 1\n",
            "pkg/c.py": "def later():\n    import pkg.a\n",
            "pkg/d.py": "import pkg.a\n",
        },
    )
    assert cycles(import_graph(modules)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_type_checking_imports_make_no_cycle_but_its_else_branch_does(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\n",
            "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\n",
            "pkg/c.py": "import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n    from pkg.d import Y\n",
            "pkg/d.py": "from pkg import c\n",
        },
    )
    assert cycles(import_graph(modules)) == [["pkg.c", "pkg.d", "pkg.c"]]
