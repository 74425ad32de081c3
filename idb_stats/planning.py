"""Pure planning of which harvest dates a run processes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from .errors import SpanTooLong, UsageError
from .model import HeldDays


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


@dataclass(frozen=True)
class Damage:
    """A day the store holds in part: why it cannot be counted complete."""

    harvest_date: date
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"harvest_date": self.harvest_date.isoformat(), "reasons": list(self.reasons)}


@dataclass(frozen=True)
class DayStates:
    """Every day the store holds anything of: complete (marked, and its documents and totals
    agree with the mark) or damaged. A day it holds nothing of is missing."""

    complete: frozenset[date] = frozenset()
    damaged: tuple[Damage, ...] = ()

    @property
    def damaged_days(self) -> list[date]:
        return [d.harvest_date for d in self.damaged]


def assess_days(marks: Mapping[date, Mapping[str, Any]], held: HeldDays) -> DayStates:
    """Classify the days from the store's completion marks and what it holds of each day.

    A publish writes documents, then totals, then the mark; anything else than all of them in
    agreement is damage that status must show and the catch-up must redo: documents without a
    mark (a publish that died, a restore), a mark whose documents are not all there (lost
    shards, a manual delete), totals that list a day for more or fewer recordsets than it has
    documents, or a publish that a search store recorded as begun and never finished.
    """
    complete: set[date] = set()
    damaged: list[Damage] = []
    for day in sorted(marks.keys() | held.documents.keys() | held.listed.keys() | held.unfinished.keys()):
        documents, listed = held.documents.get(day, 0), held.listed.get(day, 0)
        mark = marks.get(day)
        reasons = []
        if day in held.unfinished and (documents or listed):
            reasons.append(f"{held.unfinished[day]} did not finish")
        elif mark is None and documents:
            reasons.append(f"{documents} documents but no completion mark")
        marked_recordsets = mark.get("recordsets") if mark is not None else None
        if isinstance(marked_recordsets, int) and marked_recordsets != documents:
            reasons.append(
                f"marked complete with {marked_recordsets} recordsets but holds {documents} documents"
            )
        if listed != documents:
            reasons.append(
                f"the totals of {listed} recordsets list it but it holds {documents} documents"
                if documents
                else f"the totals of {listed} recordsets count it but it holds no documents"
            )
        if reasons:
            damaged.append(Damage(day, tuple(reasons)))
        elif mark is not None:
            complete.add(day)
    return DayStates(frozenset(complete), tuple(damaged))


def catch_up(
    complete: set[date],
    last_closed: date,
    max_days: int,
    force: bool = False,
    damaged: Iterable[date] = (),
) -> Plan:
    """Every damaged day first, wherever it lies, then every missing harvest date from the first
    complete or damaged one through the last closed one (a damaged day becomes complete once
    redone, and then the days after it count as missing anyway).

    A day that failed stays missing and is retried here, even when later days succeeded; on a
    first run, the last closed day only.
    """
    repair = sorted(d for d in set(damaged) if d <= last_closed)
    if not complete and not repair:
        return Plan([last_closed], "first run: the last closed harvest date only")
    first = min(complete | set(repair))
    span = date_range(first, last_closed) if first <= last_closed else []
    missing = [d for d in span if d not in complete and d not in repair]
    days = [*repair, *missing]
    if not days:
        return Plan([], f"up to date: every harvest date from {first} to {last_closed} is complete")
    why = f"catch-up of {len(missing)} missing days" + (
        f" from {missing[0]} to {missing[-1]}" if missing else ""
    )
    if repair:
        why = f"{len(repair)} damaged days ({', '.join(map(str, repair))}) first, then {why}"
    if len(days) > max_days and not force:
        raise SpanTooLong(
            f"catching up would process {len(days)} days ({why}), more than the "
            f"maximum of {max_days}; run a backfill with --from/--to, raise collect.max_catch_up_days, "
            "pass --force-span, or (for damaged days) `idb-stats verify --repair`"
        )
    return Plan(days, why)


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


def complete_through(complete: set[date], last_closed: date, damaged: Iterable[date] = ()) -> date | None:
    """The last day of the unbroken run of complete days that starts at the first complete one,
    and ends before any damaged day: what a monitor's lag counts from, so a hole (or a damaged
    day, even one before the first complete day) is as late as a missing tail."""
    if not complete:
        return None
    holes = [*missing_days(complete, min(complete), last_closed), *(d for d in damaged if d <= last_closed)]
    if holes:
        return min(holes) - timedelta(days=1)
    return max((d for d in complete if d <= last_closed), default=None)
