"""The report's x axis: every period start of a range, as the stores truncate dates."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from idb_stats.report import STEPS, period_start, periods

days = st.dates(min_value=date(1999, 12, 1), max_value=date(2031, 3, 1))


@given(days, st.integers(min_value=0, max_value=1200), st.sampled_from(sorted(STEPS)))
def test_periods_are_the_distinct_starts_of_every_day_in_the_range(
    first: date, length: int, interval: str
) -> None:
    last = first + timedelta(days=length)
    every_day = (first + timedelta(days=n) for n in range(length + 1))
    assert periods(first, last, interval) == sorted({period_start(day, interval) for day in every_day})


def test_period_starts() -> None:
    assert period_start(date(2024, 2, 29), "week") == date(2024, 2, 26)
    assert period_start(date(2024, 2, 29), "month") == date(2024, 2, 1)
    assert period_start(date(2024, 2, 29), "year") == date(2024, 1, 1)
    assert periods(date(2024, 1, 31), date(2024, 3, 1), "month") == [
        date(2024, 1, 1),
        date(2024, 2, 1),
        date(2024, 3, 1),
    ]
