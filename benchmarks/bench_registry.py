"""The synthetic registry of the benchmarks that cache it (bench.py, bench_api.py): its JSON Lines
feed written through a .part file (an interrupted run leaves no half feed behind), and loaded
into a database."""

from __future__ import annotations

from pathlib import Path

from enterprise_registry.db import create_schema, make_engine
from enterprise_registry.importer import LoadReport, load_jsonl
from enterprise_registry.synthetic import write_jsonl


def write_feed(feed: Path, count: int, seed: int) -> int:
    """Write the feed of `count` synthetic units to `feed`; the number of records written."""
    partial = feed.with_suffix(".jsonl.part")
    records = write_jsonl(partial, count, seed)
    partial.replace(feed)
    return records


def load_feed(url: str, feed: Path) -> LoadReport:
    """Create the registry's tables at `url` and load `feed` into them."""
    engine = make_engine(url)
    try:
        create_schema(engine)
        return load_jsonl(feed, engine)
    finally:
        engine.dispose()
