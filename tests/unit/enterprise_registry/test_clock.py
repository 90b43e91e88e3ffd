"""Tests of the clock: the date is Shanghai's, whatever zone the instant is given in."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from enterprise_registry.clock import SHANGHAI, Clock


@pytest.mark.parametrize(
    ("instant", "today"),
    [
        (datetime(2026, 12, 2, 15, 59, 59, tzinfo=UTC), date(2026, 12, 2)),  # 23:59:59 in Shanghai
        (datetime(2026, 12, 2, 16, 0, 0, tzinfo=UTC), date(2026, 12, 3)),  # midnight in Shanghai
        (datetime(2026, 12, 2, 17, 0, 0, tzinfo=UTC), date(2026, 12, 3)),
        (datetime(2026, 12, 2, 9, 0, tzinfo=timezone(timedelta(hours=-8))), date(2026, 12, 3)),
        (datetime(2026, 12, 3, 0, 30, tzinfo=SHANGHAI), date(2026, 12, 3)),
    ],
)
def test_today_is_the_shanghai_date(instant: datetime, today: date) -> None:
    clock = Clock.fixed(instant)
    assert clock.today() == today
    assert clock.now() == instant and clock.now().utcoffset() == timedelta(hours=8)


def test_a_fixed_clock_refuses_a_naive_instant() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        Clock.fixed(datetime(2026, 12, 2, 17, 0))


def test_the_real_clock_follows_the_system_time() -> None:
    before = datetime.now(SHANGHAI).date()
    today = Clock().today()
    after = datetime.now(SHANGHAI).date()
    assert before <= today <= after


def test_a_clock_reads_its_source_each_time() -> None:
    instants = iter([datetime(2026, 12, 2, 15, 0, tzinfo=UTC), datetime(2026, 12, 2, 16, 0, tzinfo=UTC)])
    clock = Clock(lambda: next(instants))
    assert (clock.today(), clock.today()) == (date(2026, 12, 2), date(2026, 12, 3))
