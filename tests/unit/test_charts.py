"""The report's chart geometry: a path that leaves out points must still draw every point."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from idb_stats.charts import line_chart, polyline


def path_points(path: str) -> list[tuple[float, float]]:
    assert path.startswith("M")
    return [(float(x), float(y)) for x, y in (p.split(",") for p in path[1:].split(" L"))]


def height_at(points: list[tuple[float, float]], x: float) -> float:
    """The polyline's y at x (points ordered by x)."""
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    assert len(points) == 1 and points[0][0] == x
    return points[0][1]


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=80))
def test_every_value_lies_on_the_drawn_line(values: list[int]) -> None:
    xs = [f"{j}.0," for j in range(len(values))]
    drawn = path_points(polyline(xs, values, lambda v: 10.0 * v))
    for j, value in enumerate(values):
        assert height_at(drawn, j) == 10.0 * value
    # Only inner points of flat runs are left out.
    kept = {int(x) for x, _ in drawn}
    assert len(drawn) == len(kept)
    for j in set(range(len(values))) - kept:
        assert values[j - 1] == values[j] == values[j + 1]


def test_a_quiet_year_is_a_few_points() -> None:
    axis = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    chart = line_chart("view", "records per day", axis, {"records": [0] * 200 + [4] + [0] * 164})
    # the first day, the day before the peak, the peak, the day after it, the last day
    assert len(path_points(chart.lines[0].path)) == 5
    assert chart.lines[0].total == 4
