"""Pure planning of which harvest dates a run processes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from .errors import SpanTooLong


def date_range(first: date, last: date) -> list[date]:
    if last < first:
        raise ValueError(f"--from {first} is after --to {last}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class Plan:
    days: list[date]
    reason: str


def catch_up(last_complete: date | None, today: date, max_days: int, force: bool = False) -> Plan:
    """Every harvest date after the last complete one through today; on a first run, today only."""
    if last_complete is None:
        return Plan([today], "first run: today only")
    if last_complete >= today:
        return Plan([], f"up to date: last complete harvest date is {last_complete}")
    days = date_range(last_complete + timedelta(days=1), today)
    if len(days) > max_days and not force:
        raise SpanTooLong(
            f"catching up would process {len(days)} days ({days[0]} to {days[-1]}), more than the "
            f"maximum of {max_days}; run a backfill with --from/--to, raise collect.max_catch_up_days, "
            "or pass --force-span"
        )
    return Plan(days, f"catch-up from {days[0]} to {days[-1]}")


def select(candidates: Iterable[date], complete: set[date], reprocess: str) -> list[date]:
    """Of the candidate days, those to run: all of them, or only those not complete yet."""
    ordered = sorted(set(candidates))
    if reprocess == "all":
        return ordered
    if reprocess == "missing":
        return [d for d in ordered if d not in complete]
    raise ValueError(f"unknown reprocess mode {reprocess!r}")


def missing_days(complete: set[date], first: date | None, last: date) -> list[date]:
    """Days between the first complete day and `last` that are not complete."""
    if first is None:
        return []
    return [d for d in date_range(first, last) if d not in complete] if first <= last else []


def last_settled_day(now_local: datetime, settle: timedelta) -> date:
    """The latest harvest date whose window [D-1 00:00, D 00:00) closed at least `settle` ago.

    now_local is the time in source.timezone (the telemetry's naive timestamps are read there).
    """
    return (now_local - settle).date()
