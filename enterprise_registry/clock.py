"""What day it is where the departments are: the Asia/Shanghai date, from a clock tests can fix.

A fact is true as of a day; no department can report a day that has not begun in China, so the
date that matters is Shanghai's, whatever zone the server runs in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Clock:
    """The current instant and the Asia/Shanghai date; `Clock.fixed(...)` for tests."""

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now or (lambda: datetime.now(UTC))

    @classmethod
    def fixed(cls, instant: datetime) -> Clock:
        """A clock that always reads `instant` (which must carry its time zone)."""
        if instant.tzinfo is None or instant.utcoffset() is None:
            # A naive time is ambiguous by up to a day here: refuse rather than guess the zone.
            raise ValueError(f"a fixed clock needs an aware datetime, got {instant.isoformat()}")
        return cls(lambda: instant)

    def now(self) -> datetime:
        """The current instant, in Asia/Shanghai time."""
        return self._now().astimezone(SHANGHAI)

    def today(self) -> date:
        """The Asia/Shanghai date: e.g. 2026-12-03 from 2026-12-02T17:00Z onwards."""
        return self.now().date()
