"""Day ranges of totals: adding and removing a day equals the same on a plain set of days."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from idb_stats.totals import add_day, remove_day

START = date(2020, 1, 1)
day_offsets = st.integers(min_value=0, max_value=60)


def ranges_of(days: set[date]) -> list[tuple[date, date]]:
    """The reference: sorted, non-adjacent ranges covering exactly these days."""
    out: list[tuple[date, date]] = []
    for day in sorted(days):
        if out and out[-1][1] + timedelta(days=1) == day:
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


@given(st.sets(day_offsets), day_offsets)
def test_add_and_remove_day_match_set_semantics(offsets: set[int], offset: int) -> None:
    days = {START + timedelta(days=o) for o in offsets}
    day = START + timedelta(days=offset)
    assert add_day(ranges_of(days), day) == ranges_of(days | {day})
    assert remove_day(ranges_of(days), day) == ranges_of(days - {day})
