"""Backups of a test database, and their restore, as an operator makes them: the SQLite file
copied while no connection is open; on PostgreSQL every table copied into a backup schema, and
the restore recreating the database's schema empty and copying the rows back (the shape of
pg_dump and pg_restore into a fresh database)."""

from __future__ import annotations

import shutil
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, Engine

from enterprise_registry.db import create_schema, make_engine
from service.audit import checkpoints
from service.payouts.tables import create_payout_schema

Restore = Callable[[], None]


def create_every_table(engine: Engine) -> None:
    """The registry's, the audit trail's and the money tables, with their append-only triggers."""
    create_schema(engine)
    create_payout_schema(engine)


def write_checkpoint(engine: Engine, key: Ed25519PrivateKey, file: Path) -> checkpoints.Checkpoint:
    """A checkpoint of the ledger now, signed with `key` and appended to `file`."""
    with engine.connect() as conn:
        checkpoint = checkpoints.checkpoint_now(conn, key)
    checkpoints.write(checkpoint, file)
    return checkpoint


@dataclass
class RestoredLedger:
    """A ledger checkpointed (`kept`, line 1 of `file`), backed up, grown and checkpointed again
    (`lost`, line 2), then restored from the real backup: it holds the kept entries again."""

    url: str
    engine: Engine
    key: Ed25519PrivateKey
    file: Path
    kept: checkpoints.Checkpoint
    lost: checkpoints.Checkpoint


@contextmanager
def restored_ledger(
    db_url: str, folder: Path, before: Callable[[Engine], None], lost: Callable[[Engine], None]
) -> Iterator[RestoredLedger]:
    """Every table created at `db_url`, a ledger key made in `folder`; `before` appends the entries
    the backup keeps, `lost` those after it; then the backup restored (see `RestoredLedger`). The
    engine it yields is disposed afterwards."""
    engine = make_engine(db_url)
    create_every_table(engine)
    key = checkpoints.generate_key(folder / "ledger-key.pem")
    file = folder / "checkpoints.jsonl"
    before(engine)
    kept = write_checkpoint(engine, key, file)
    engine.dispose()
    with backed_up(db_url) as restore_backup:
        engine = make_engine(db_url)
        lost(engine)
        abandoned = write_checkpoint(engine, key, file)
        engine.dispose()
        restore_backup()
    engine = make_engine(db_url)
    try:
        yield RestoredLedger(db_url, engine, key, file, kept, abandoned)
    finally:
        engine.dispose()


@contextmanager
def backed_up(db_url: str) -> Iterator[Restore]:
    """Back up the database at `db_url` now; yields the function that restores this backup over
    it (callable more than once). The caller disposes its engines first: a restore replaces the
    database under them. The backup is removed afterwards."""
    if db_url.startswith("sqlite:///"):
        yield from _sqlite_backup(Path(db_url.removeprefix("sqlite:///")))
    else:
        yield from _postgres_backup(db_url)


def _sqlite_backup(path: Path) -> Iterator[Restore]:
    # WAL: the last connection closed has folded the log into the file, which is whole.
    copy = path.with_name(path.name + ".backup")
    shutil.copyfile(path, copy)

    def restore() -> None:
        for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(copy, path)

    try:
        yield restore
    finally:
        copy.unlink(missing_ok=True)


def _postgres_backup(db_url: str) -> Iterator[Restore]:
    schema = _search_path(db_url)
    backup = f"{schema}_backup"
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            tables = MetaData()
            tables.reflect(conn, schema=schema)
            order = [table.name for table in tables.sorted_tables]  # parents before children
            conn.execute(text(f'create schema "{backup}"'))
            for name in order:
                conn.execute(text(f'create table "{backup}"."{name}" as table "{schema}"."{name}"'))
    finally:
        engine.dispose()

    def restore() -> None:
        target = make_engine(db_url)
        try:
            with target.begin() as conn:
                conn.execute(text(f'drop schema "{schema}" cascade'))
                conn.execute(text(f'create schema "{schema}"'))
            create_every_table(target)
            with target.begin() as conn:
                for name in order:
                    conn.execute(text(f'insert into "{schema}"."{name}" table "{backup}"."{name}"'))
                _advance_sequences(conn, schema)
        finally:
            target.dispose()

    try:
        yield restore
    finally:
        admin = make_engine(db_url)
        try:
            with admin.begin() as conn:
                conn.execute(text(f'drop schema if exists "{backup}" cascade'))
        finally:
            admin.dispose()


def _advance_sequences(conn: Connection, schema: str) -> None:
    """Serial and identity columns continue after the restored rows, as pg_restore leaves them."""
    columns = conn.execute(
        text(
            "select table_name, column_name from information_schema.columns where table_schema = :schema "
            "and (column_default like 'nextval%' or is_identity = 'YES')"
        ),
        {"schema": schema},
    ).all()
    for table, column in columns:
        conn.execute(
            text(
                f"select setval(pg_get_serial_sequence(:table, :column), "
                f'coalesce(max("{column}"), 1), max("{column}") is not null) from "{schema}"."{table}"'
            ),
            {"table": f'"{schema}"."{table}"', "column": column},
        )


def _search_path(db_url: str) -> str:
    """The private schema of a URL made by testing_databases.private_schema."""
    options = urllib.parse.parse_qs(urllib.parse.urlsplit(db_url).query)["options"][0]
    return options.removeprefix("-csearch_path=")
