"""Progress of a long run: elapsed time, rate and ETA (pure), and a tracker that hands each
estimate to its sinks (the terminal bar, systemd's STATUS= line) with the clock passed in.

The rate is the average since the start (done / elapsed): days differ in size, so a recent
window would swing with each day; over a run the average is the better guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    done: int
    total: int
    elapsed: float  # seconds since the start

    @property
    def rate(self) -> float | None:
        """Units per second; None before anything is done (or no time has passed)."""
        return self.done / self.elapsed if self.done > 0 and self.elapsed > 0 else None

    @property
    def remaining(self) -> float | None:
        """Seconds left at the average rate so far; 0 when done, None when unknown."""
        if self.total and self.done >= self.total:
            return 0.0
        rate = self.rate
        if rate is None or self.total <= 0:
            return None
        return (self.total - self.done) / rate


def duration_text(seconds: float) -> str:
    """4.2 s, 2 min 29 s, 1 h 02 min, 3 d 04 h."""
    if seconds < 59.95:  # what would print as 60.0 s is 1 min 00 s
        return f"{seconds:.1f} s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def rate_text(rate: float, unit: str) -> str:
    """The rate in the largest time unit that shows it as at least 1 (5.5 days/min, not 0.09/s)."""
    for per, seconds in (("s", 1), ("min", 60), ("h", 3600)):
        if rate * seconds >= 1:
            return f"{rate * seconds:.1f} {unit}/{per}"
    return f"{rate * 86400:.1f} {unit}/d"


def describe(estimate: Estimate, unit: str, details: Sequence[str] = ()) -> str:
    """`12/30 days, 2 min 10 s elapsed, 5.5 days/min, ETA 3 min 16 s`, details after the count."""
    parts = [
        f"{estimate.done:,}/{estimate.total:,} {unit}" if estimate.total else f"{estimate.done:,} {unit}",
        *details,
    ]
    parts.append(f"{duration_text(estimate.elapsed)} elapsed")
    if estimate.rate is not None:
        parts.append(rate_text(estimate.rate, unit))
    remaining = estimate.remaining
    if remaining is not None and estimate.done < estimate.total:
        parts.append(f"ETA {duration_text(remaining)}")
    return ", ".join(parts)


Sink = Callable[[Estimate, str], None]


class Tracker:
    """Counts a run's units against a total and hands each estimate (with a label, such as the
    day just finished) to every sink."""

    def __init__(
        self,
        total: int = 0,
        sinks: Sequence[Sink] = (),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total = total
        self.sinks = list(sinks)
        self.clock = clock
        self.started = clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def update(self, done: int, label: str = "", total: int | None = None) -> Estimate:
        if total is not None:
            self.total = total
        estimate = Estimate(done, self.total, self.elapsed())
        for sink in self.sinks:
            sink(estimate, label)
        return estimate
