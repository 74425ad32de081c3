"""Pure merging of daily documents into per-recordset totals.

A totals document keeps, per record_type x type, count, total and hits by country, plus the set of
harvest days it includes (as date ranges). A day is added or subtracted exactly, so
totals always equal the sum of the daily documents they list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
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
        days = [(date.fromisoformat(a), date.fromisoformat(b)) for a, b in doc.get("harvest_dates", [])]
        return cls(doc["recordset_id"], summary, days)


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


def replace_day(totals: Totals, day: date, old: Summary | None, new: Summary | None) -> Totals:
    """Totals with the day's old contribution (if any) swapped for its new one (if any)."""
    if old is not None:
        totals = without_day(totals, day, old)
    if new is not None:
        totals = with_day(totals, day, new)
    return totals
