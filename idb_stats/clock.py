"""The clock the use cases read: passed in, so planning and its tests never read the wall clock.

The command line builds a SystemClock once per command; tests fix the moment with a FixedClock and
run the same at any hour (a run crossing midnight UTC plans the same days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current moment, time-zone aware (UTC)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FixedClock:
    """Always the same moment (a naive one is taken as UTC)."""

    moment: datetime

    def now(self) -> datetime:
        return self.moment if self.moment.tzinfo else self.moment.replace(tzinfo=UTC)


SYSTEM_CLOCK = SystemClock()
