"""Planning without a database: when a harvest date closes in each zone, and what a catch-up plans
(moved from test_operator_safety)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idb_stats import planning


@pytest.mark.parametrize(
    ("now", "zone", "settle", "closed"),
    [
        ("2026-11-25T23:30:00+00:00", "UTC", 0, "2026-11-25"),  # today's date covers yesterday
        ("2026-11-25T00:00:00+00:00", "UTC", 0, "2026-11-25"),  # closes exactly at midnight
        ("2026-11-24T23:59:59+00:00", "UTC", 0, "2026-11-24"),
        ("2026-11-25T23:30:00+00:00", "Pacific/Auckland", 0, "2026-11-26"),  # already the 26th there
        ("2026-11-25T03:30:00+00:00", "America/New_York", 0, "2026-11-24"),  # still the 24th there
        ("2026-11-25T00:30:00+00:00", "UTC", 3600, "2026-11-24"),  # settle: late rows may still come
    ],
)
def test_last_closed_day(now: str, zone: str, settle: int, closed: str) -> None:
    moment = datetime.fromisoformat(now)
    last = planning.last_closed_day(moment, ZoneInfo(zone), timedelta(seconds=settle))
    assert last == date.fromisoformat(closed)
    assert planning.is_closed(last, last) and not planning.is_closed(last + timedelta(days=1), last)


@settings(max_examples=60, deadline=None)
@given(
    complete=st.sets(st.integers(0, 40), max_size=30),
    closed=st.integers(0, 45),
)
def test_catch_up_plans_every_missing_closed_day(complete: set[int], closed: int) -> None:
    origin = date(2026, 1, 1)
    days = {origin + timedelta(days=d) for d in complete}
    last_closed = origin + timedelta(days=closed)
    plan = planning.catch_up(days, last_closed, max_days=1000)
    if not days:
        assert plan.days == [last_closed]
        return
    expected = [
        origin + timedelta(days=d)
        for d in range(min(complete), closed + 1)
        if origin + timedelta(days=d) not in days
    ]
    assert plan.days == expected  # holes included, nothing after the last closed day
    through = planning.complete_through(days, last_closed)
    if expected:
        assert through == expected[0] - timedelta(days=1)
    else:
        assert through == max((d for d in days if d <= last_closed), default=None)

