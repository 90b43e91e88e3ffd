"""The `benefits` command: one parser over the commands on a local database (`local`), the audit
trail's (`audit`), the gRPC client's (`remote`) and the demonstrations' (`demos`). Bad input ends
with `error: ...` and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from enterprise_registry.db import error_text, is_database_error
from rules.errors import RuleError
from service.cli import audit, demos, local, remote
from service.errors import ServiceError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (RuleError, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _registry_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_database_error(exc):
            raise
        # Not the traceback: its chained messages hold PostgreSQL's DETAIL (the row's values).
        print(f"error: database: {error_text(exc)}", file=sys.stderr)
        return 2


def _registry_errors() -> tuple[type[BaseException], ...]:
    from enterprise_registry.errors import RegistryError

    return (RegistryError,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benefits", description="Apply-free benefits (免申即享) service")
    commands = parser.add_subparsers(title="commands")
    for group in (local, audit, remote, demos):
        group.add_commands(commands)
    return parser
