"""Pure planning of which harvest dates a run processes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from .errors import SpanTooLong, UsageError


def date_range(first: date, last: date) -> list[date]:
    if last < first:
        raise ValueError(f"--from {first} is after --to {last}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def last_closed_day(now: datetime, zone: tzinfo, settle: timedelta = timedelta(0)) -> date:
    """The latest harvest date whose window has closed.

    Harvest date D covers [D-1 00:00, D 00:00) in the source's time zone, so its window closes at
    D 00:00 there (plus `settle`, time allowed for late rows to arrive): today's date is closed,
    tomorrow's is still filling up.
    """
    local = now.astimezone(zone).replace(tzinfo=None)
    return (local - settle).date()


def is_closed(harvest_date: date, last_closed: date) -> bool:
    return harvest_date <= last_closed


def refuse_unclosed(harvest_date: date, last_closed: date) -> None:
    """An explicitly asked day whose window is still open is a mistake: publishing it would mark a
    partial day complete."""
    if not is_closed(harvest_date, last_closed):
        raise UsageError(
            f"harvest date {harvest_date} is not over yet (its events run until {harvest_date} 00:00; "
            f"the last closed harvest date is {last_closed}): ask for {last_closed} or earlier"
        )


@dataclass(frozen=True)
class Plan:
    days: list[date]
    reason: str
    not_closed: list[date] = field(default_factory=list)  # asked for, skipped: window still open


def split_closed(days: Iterable[date], last_closed: date) -> tuple[list[date], list[date]]:
    """Candidate days whose window has closed, and those skipped because it has not."""
    ordered = sorted(set(days))
    return [d for d in ordered if is_closed(d, last_closed)], [
        d for d in ordered if not is_closed(d, last_closed)
    ]


def catch_up(complete: set[date], last_closed: date, max_days: int, force: bool = False) -> Plan:
    """Every missing harvest date from the first complete one through the last closed one.

    A day that failed stays missing and is retried here, even when later days succeeded; on a
    first run, the last closed day only.
    """
    if not complete:
        return Plan([last_closed], "first run: the last closed harvest date only")
    first = min(complete)
    days = [d for d in date_range(first, last_closed) if d not in complete] if first <= last_closed else []
    if not days:
        return Plan([], f"up to date: every harvest date from {first} to {last_closed} is complete")
    if len(days) > max_days and not force:
        raise SpanTooLong(
            f"catching up would process {len(days)} days ({days[0]} to {days[-1]}), more than the "
            f"maximum of {max_days}; run a backfill with --from/--to, raise collect.max_catch_up_days, "
            "or pass --force-span"
        )
    return Plan(days, f"catch-up of {len(days)} missing days from {days[0]} to {days[-1]}")


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


def complete_through(complete: set[date], last_closed: date) -> date | None:
    """The last day of the unbroken run of complete days that starts at the first complete one:
    what a monitor's lag counts from, so a hole is as late as a missing tail."""
    if not complete:
        return None
    missing = missing_days(complete, min(complete), last_closed)
    if missing:
        return missing[0] - timedelta(days=1)
    return max((d for d in complete if d <= last_closed), default=None)
