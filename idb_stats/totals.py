"""Pure merging of daily documents into per-recordset totals.

A totals document keeps, per record_type x type, count, total and hits by country, plus the set of
harvest days it includes (as date ranges). A day is added or subtracted exactly, so
totals always equal the sum of the daily documents they list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import pairwise
from typing import Any

from .documents import by_count
from .model import BLOCKS, DOCUMENT_RECORD_TYPES, OTHER_TERM, UNKNOWN_COUNTRY

DayRange = tuple[date, date]


def block_figures(block: dict[str, Any]) -> tuple[int, int]:
    """A block's (count, total), as daily documents, summaries and totals all store them."""
    return int(block.get("count", 0)), int(block.get("total", 0))


@dataclass
class Summary:
    """The additive part of a daily document (or of a sum of them)."""

    counts: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    countries: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {rt: {} for rt in DOCUMENT_RECORD_TYPES}
        for rt, ty in BLOCKS:
            count, total = self.counts.get((rt, ty), (0, 0))
            out[rt][ty] = {
                "count": count,
                "total": total,
                "countries": dict(self.countries.get((rt, ty), {})),
            }
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        summary = cls()
        for rt, ty in BLOCKS:
            block = data.get(rt, {}).get(ty, {})
            summary.counts[(rt, ty)] = block_figures(block)
            summary.countries[(rt, ty)] = {k: int(v) for k, v in block.get("countries", {}).items()}
        return summary


def summarize(doc: dict[str, Any]) -> Summary:
    """The summary of a daily document: counts, totals and geocode hits by country per block."""
    summary = Summary()
    for rt, ty in BLOCKS:
        block = doc.get(rt, {}).get(ty, {})
        summary.counts[(rt, ty)] = block_figures(block)
        by_country: dict[str, int] = {}
        for entry in block.get("geocodes", []):
            if entry.get("term") == OTHER_TERM:
                country = OTHER_TERM
            else:
                country = (entry.get("geo") or {}).get("country") or UNKNOWN_COUNTRY
            by_country[country] = by_country.get(country, 0) + int(entry["count"])
        summary.countries[(rt, ty)] = by_country
    return summary


ONE_DAY = timedelta(days=1)


def add_day(ranges: list[DayRange], day: date) -> list[DayRange]:
    """Insert a day into sorted, non-adjacent ranges, joining the neighbours it touches."""
    first, last = day, day
    kept = []
    for low, high in ranges:
        if high + ONE_DAY < first or last + ONE_DAY < low:
            kept.append((low, high))
        else:  # overlaps or touches the new day's range: absorb it
            first, last = min(first, low), max(last, high)
    return sorted([*kept, (first, last)])


def remove_day(ranges: list[DayRange], day: date) -> list[DayRange]:
    """Take a day out of sorted ranges, splitting the range that holds it."""
    out = []
    for low, high in ranges:
        if low <= day <= high:
            out += [(low, day - ONE_DAY)] if low < day else []
            out += [(day + ONE_DAY, high)] if day < high else []
        else:
            out.append((low, high))
    return out


def contains(ranges: Iterable[DayRange], day: date) -> bool:
    return any(first <= day <= last for first, last in ranges)


def day_ranges(listing: Iterable[Iterable[str]]) -> list[DayRange]:
    """A totals document's `harvest_dates` ([[first, last], ...] as ISO dates) as ranges."""
    return [(date.fromisoformat(a), date.fromisoformat(b)) for a, b in listing]


@dataclass
class Totals:
    recordset_id: str
    summary: Summary = field(default_factory=Summary)
    days: list[DayRange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.days

    def includes(self, day: date) -> bool:
        return contains(self.days, day)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "recordset_id": self.recordset_id,
            "first_harvest_date": self.days[0][0].isoformat() if self.days else None,
            "last_harvest_date": self.days[-1][1].isoformat() if self.days else None,
            "days": sum((last - first).days + 1 for first, last in self.days),
            "harvest_dates": [[a.isoformat(), b.isoformat()] for a, b in self.days],
        }
        for rt, blocks in self.summary.to_json().items():
            doc[rt] = {
                ty: {
                    "count": b["count"],
                    "total": b["total"],
                    "countries": [{"country": c, "count": n} for c, n in by_count(b["countries"])],
                }
                for ty, b in blocks.items()
            }
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Totals:
        summary = Summary()
        for rt, ty in BLOCKS:
            block = doc.get(rt, {}).get(ty, {})
            summary.counts[(rt, ty)] = block_figures(block)
            summary.countries[(rt, ty)] = {c["country"]: int(c["count"]) for c in block.get("countries", [])}
        return cls(doc["recordset_id"], summary, day_ranges(doc.get("harvest_dates", [])))


def with_every_total(doc: dict[str, Any]) -> dict[str, Any]:
    """A totals document as this version reads it: a block it lacks (written before the block
    existed) is zeros, as Totals.to_doc writes them."""
    if all(ty in doc.get(rt, {}) for rt, ty in BLOCKS):
        return doc
    out = {**doc, **{rt: dict(doc.get(rt, {})) for rt in DOCUMENT_RECORD_TYPES}}
    for rt, ty in BLOCKS:
        out[rt].setdefault(ty, {"count": 0, "total": 0, "countries": []})
    return out


def _combine(a: Summary, b: Summary, sign: int) -> Summary:
    out = Summary()
    for block in BLOCKS:
        ca, ta = a.counts.get(block, (0, 0))
        cb, tb = b.counts.get(block, (0, 0))
        out.counts[block] = (ca + sign * cb, ta + sign * tb)
        merged = dict(a.countries.get(block, {}))
        for country, n in b.countries.get(block, {}).items():
            merged[country] = merged.get(country, 0) + sign * n
        out.countries[block] = {c: n for c, n in merged.items() if n}
    return out


def with_day(totals: Totals, day: date, summary: Summary) -> Totals:
    """Totals including the day; the day must not be included yet."""
    if totals.includes(day):
        raise ValueError(f"{totals.recordset_id}: {day} is already in the totals")
    return Totals(totals.recordset_id, _combine(totals.summary, summary, +1), add_day(totals.days, day))


def without_day(totals: Totals, day: date, summary: Summary) -> Totals:
    """Totals excluding the day; `summary` must be the one that was added for it."""
    if not totals.includes(day):
        raise ValueError(f"{totals.recordset_id}: {day} is not in the totals")
    return Totals(totals.recordset_id, _combine(totals.summary, summary, -1), remove_day(totals.days, day))


def replace_day(
    totals: Totals, day: date, old: Summary | None, new: Summary | None, old_uncounted: bool = False
) -> Totals | None:
    """Totals with the day's old contribution swapped for its new one (either may be None), or
    None when the totals cannot be trusted to hold exactly the old one, and must be rebuilt from
    the documents: they list the day but its document is gone (what they counted for it is
    unknown), or they do not list it while its document is there (so the listing was changed
    behind their back). `old_uncounted` says the second is expected: a search store's publish
    that was interrupted after taking the day out of these totals."""
    if totals.includes(day):
        if old is None:
            return None
        totals = without_day(totals, day, old)
    elif old is not None and not old_uncounted:
        return None
    return with_day(totals, day, new) if new is not None else totals


def rebuilt(recordset_id: str, days: Iterable[tuple[date, Summary]]) -> Totals:
    """A recordset's totals summed from its daily documents, one per day, in any order."""
    out = Totals(recordset_id)
    for day, summary in days:
        out = with_day(out, day, summary)
    return out


def listed_days(listings: Iterable[Iterable[DayRange]]) -> dict[date, int]:
    """How many totals documents list each day, from each document's day ranges: a sweep over the
    ranges' ends, so a year of 1,600 recordsets costs their few ranges, not 584,000 increments."""
    steps: Counter[date] = Counter()
    for ranges in listings:
        for first, last in ranges:
            steps[first] += 1
            steps[last + ONE_DAY] -= 1
    out: dict[date, int] = {}
    running = 0
    ends = sorted(steps)
    for day, following in pairwise(ends):
        running += steps[day]
        if running:
            out.update((day + timedelta(days=i), running) for i in range((following - day).days))
    return out


def added(a: Summary, b: Summary) -> Summary:
    """The sum of two summaries."""
    return _combine(a, b, +1)


def subtracted(a: Summary, b: Summary) -> Summary:
    """a without b (b a part of a)."""
    return _combine(a, b, -1)
