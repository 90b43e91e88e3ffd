"""What the `benefits` commands take when not told otherwise, and the two steps the commands on a
database share: the policies loaded, the database opened."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Engine

import rules as rules_package
from enterprise_registry.db import DEFAULT_DB_URL, create_schema, make_engine
from rules.loader import PolicySet, load_policy_dir
from service.catalogue import CATALOGUE
from service.tls import DEFAULT_TARGET

DEFAULT_RULES = Path(rules_package.__file__).resolve().parent  # the policies shipped with the package
DEFAULT_LISTEN = DEFAULT_TARGET  # the server listens where its clients call by default

__all__ = ["DEFAULT_DB_URL", "DEFAULT_LISTEN", "DEFAULT_RULES", "load_policies", "open_database"]


def load_policies(root: Path = DEFAULT_RULES) -> PolicySet:
    """Every policy file below `root`, checked against the service's fact catalogue."""
    return load_policy_dir(root, CATALOGUE)


@contextmanager
def open_database(url: str) -> Iterator[Engine]:
    """An engine with the schema in place, disposed afterwards (no connection left open)."""
    engine = make_engine(url)
    try:
        create_schema(engine)
        yield engine
    finally:
        engine.dispose()
