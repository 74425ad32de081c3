"""Pure geometry of the report's line charts: scales, ticks and paths, drawn by the templates as SVG.

No I/O and no markup here; a chart is numbers the template places, so it renders from disk with
no script and no library.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

# Colour-blind safe (Okabe-Ito), in legend order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9")

WIDTH, HEIGHT = 560, 220
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 36, 12, 40


@dataclass
class Line:
    name: str
    colour: str
    path: str  # SVG path data
    total: int


@dataclass
class Tick:
    position: float
    label: str


@dataclass
class Chart:
    title: str
    unit: str
    width: int = WIDTH
    height: int = HEIGHT
    lines: list[Line] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    plot_left: int = MARGIN_LEFT
    plot_right: int = WIDTH - MARGIN_RIGHT
    plot_top: int = MARGIN_TOP
    plot_bottom: int = HEIGHT - MARGIN_BOTTOM

    @property
    def empty(self) -> bool:
        return all(line.total == 0 for line in self.lines)


def nice_step(span: float, ticks: int = 4) -> float:
    """A 1, 2 or 5 times a power of ten step giving about `ticks` intervals over span."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))  # float: int ** int is typed Any (a negative power)
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return max(1.0, factor * power)
    return max(1.0, 10 * power)


def format_number(value: float) -> str:
    """Short axis labels: 950, 12k, 1.5M."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.0f}{suffix}" if scaled == int(scaled) else f"{scaled:.1f}{suffix}"
    return f"{value:.0f}"


def line_chart(
    title: str, unit: str, periods: Sequence[date], series: Mapping[str, Sequence[int]], max_x_ticks: int = 6
) -> Chart:
    """A chart of one value per period for each named series (all the same length as periods)."""
    chart = Chart(title, unit)
    left, right, top, bottom = chart.plot_left, chart.plot_right, chart.plot_top, chart.plot_bottom
    peak = max((max(values, default=0) for values in series.values()), default=0)
    step = nice_step(peak)
    y_max = step * max(1, math.ceil(peak / step))
    n = len(periods)

    def y(value: float) -> float:
        return bottom - (bottom - top) * value / y_max

    xs = _x_labels(n, left, right)
    for i, (name, values) in enumerate(series.items()):
        chart.lines.append(Line(name, PALETTE[i % len(PALETTE)], polyline(xs, values, y), sum(values)))
    chart.y_ticks = [Tick(y(v), format_number(v)) for v in _range(0, y_max, step)]
    every = max(1, math.ceil(n / max_x_ticks))
    chart.x_ticks = [Tick(_x(i, n, left, right), periods[i].isoformat()) for i in range(0, n, every)]
    return chart


def _x(i: int, n: int, left: int, right: int) -> float:
    return left + (right - left) * (i / (n - 1) if n > 1 else 0.5)


@functools.lru_cache(maxsize=8)
def _x_labels(n: int, left: int, right: int) -> tuple[str, ...]:
    """The x coordinates of n points as path text; every chart of a report shares one axis."""
    return tuple(f"{_x(i, n, left, right):.1f}," for i in range(n))


def polyline(xs: Sequence[str], values: Sequence[int], y: Callable[[float], float]) -> str:
    """SVG path data through every point, leaving out the inner points of flat runs (they lie on
    the line already): a quiet recordset's year of zeros is two points, not 365."""
    last = len(values) - 1
    ys: dict[int, str] = {}  # values repeat a lot; format each once
    points = []
    for j, value in enumerate(values):
        if 0 < j < last and values[j - 1] == value == values[j + 1]:
            continue
        label = ys.get(value)
        if label is None:
            label = ys[value] = f"{y(value):.1f}"
        points.append(xs[j] + label)
    return "M" + " L".join(points) if points else ""


def _range(start: float, stop: float, step: float) -> list[float]:
    count = round((stop - start) / step)
    return [start + i * step for i in range(count + 1)]
