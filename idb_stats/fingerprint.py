"""A cheap fingerprint of a harvest date's source rows, and the pure rule that says a day is stale.

A published day keeps the fingerprint of the rows it was computed from: their number, smallest
and largest id, first and last event time, and an order-independent hash: the bit_xor over the
rows of a 64-bit hash of (id, xmin). xmin is the transaction that wrote the row's current
version, so an inserted or deleted row changes the count and the hash, and an UPDATE of any
column, counted or not, gives the row a new xmin and the day a new hash. Hashing the columns
themselves would have to read and decompress every payload: measured on 7 days of 100,000 rows,
the grouped re-check took 5.05 s hashing the row text, 2.21 s hashing the jsonb values, 0.24 s
hashing (id, xmin), against 0.37 s for one day's floor scan (benchmarks/recheck.py).
Freezing keeps xmin (PostgreSQL >= 9.4 marks frozen rows with flag bits); a dump and restore or
a table rewrite by INSERT ... SELECT gives every row a new one, so the next catch-up republishes
its recheck_days days once, with the same numbers.
The query's hash is read through query_id, which is what the row holds; the queries table is
append-only in the portal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg2 import sql

from .model import event_window

# The id, seeded with the row version's transaction id (xid has no cast to bigint but through text).
ROW_HASH = sql.SQL("hashint8extended(s.id, s.xmin::text::bigint)")
# A relation without xmin (a view over the telemetry, a foreign table): the row's columns, hashed,
# each seeded with the id. It reads every payload: 2.21 s against 0.24 s for (id, xmin) on 7 days
# of 100,000 rows (see above), the price of a source that has no row versions to look at.
COLUMNS_HASH = sql.SQL(
    "jsonb_hash_extended(COALESCE(s.payload, 'null'), s.id) "
    "# jsonb_hash_extended(COALESCE(s.ip_geocode, 'null'), s.id) "
    "# hashtextextended(concat_ws('|', s.date, s.type, s.record_type, s.query_id), s.id)"
)
# Relation kinds (pg_class.relkind) whose rows carry xmin: tables, partitioned tables (through
# their partitions), materialized views (a REFRESH rewrites every row, so the next catch-up
# republishes its recheck_days days once, with the same numbers).
KINDS_WITH_XMIN = ("r", "p", "m")
# Seven days of rows pass the planner's JIT threshold; compiling costs more than it saves here.
SETTINGS = sql.SQL("SET LOCAL jit = off")
AGGREGATES = sql.SQL("count(*), min(s.id), max(s.id), min(s.date), max(s.date), bit_xor({row_hash})")


def day_sql(stats: sql.Composable, row_hash: sql.Composable) -> sql.Composed:
    """The fingerprint of the window %(start)s to %(end)s (model.event_window)."""
    return sql.SQL(
        "SELECT {aggregates} FROM {stats} s WHERE s.date >= %(start)s AND s.date < %(end)s"
    ).format(aggregates=AGGREGATES.format(row_hash=row_hash), stats=stats)


def days_sql(stats: sql.Composable, row_hash: sql.Composable) -> sql.Composed:
    """Several days in one pass over the date index: the event's calendar day + 1 is its harvest
    date (parameters: days_params)."""
    return sql.SQL(
        """
SELECT (s.date::date + 1) AS harvest_date, {aggregates}
FROM {stats} s
WHERE s.date >= %(start)s AND s.date < %(end)s AND (s.date::date + 1) = ANY(%(days)s::date[])
GROUP BY 1"""
    ).format(aggregates=AGGREGATES.format(row_hash=row_hash), stats=stats)


Fingerprint = dict[str, Any]


def row_hash(relation_kind: str) -> sql.SQL:
    """What stands for a row in the hash, by the kind of relation the telemetry is read from."""
    return ROW_HASH if relation_kind in KINDS_WITH_XMIN else COLUMNS_HASH


# The fingerprint of a window without rows. A day published empty (the portal's ingest was down,
# its rows are loaded later) is re-checked like any other, so rows that arrive for it are found.
EMPTY: Fingerprint = {
    "rows": 0,
    "min_id": None,
    "max_id": None,
    "first_event": None,
    "last_event": None,
    "hash": f"{0:016x}",
}


def from_row(row: tuple[Any, ...]) -> Fingerprint:
    """A fingerprint from the aggregates' row (EMPTY for a window without rows)."""
    rows, min_id, max_id, first, last, digest = row
    if not rows:
        return dict(EMPTY)
    return {
        "rows": int(rows),
        "min_id": int(min_id),
        "max_id": int(max_id),
        "first_event": _iso(first),
        "last_event": _iso(last),
        # As hex text: search stores keep JSON numbers as doubles, which would round 64 bits.
        "hash": f"{int(digest) & 0xFFFFFFFFFFFFFFFF:016x}",
    }


def _iso(value: datetime | date) -> str:
    return value.isoformat()


def days_params(days: Iterable[date]) -> dict[str, Any]:
    """Query parameters of DAYS_SQL: the windows' hull and the harvest dates in it."""
    ordered = sorted(days)
    return {"start": event_window(ordered[0])[0], "end": event_window(ordered[-1])[1], "days": ordered}


@dataclass(frozen=True)
class Stale:
    """A published day whose source rows are no longer those it was computed from."""

    harvest_date: date
    published_rows: int
    current_rows: int  # 0: every row of the window is gone

    @property
    def row_delta(self) -> int:
        return self.current_rows - self.published_rows

    @property
    def rows_gone(self) -> bool:
        return self.current_rows == 0


def recent_published(
    complete: Mapping[date, Mapping[str, Any]], count: int, exclude: Iterable[date] = ()
) -> dict[date, Fingerprint]:
    """The last `count` published days (by harvest date) and the fingerprints they were published
    with; days published before fingerprints existed cannot be compared and are left out."""
    skip = set(exclude)
    latest = sorted((d for d in complete if d not in skip), reverse=True)[:count]
    return {d: fp for d in latest if (fp := complete[d].get("fingerprint")) is not None}


# How a day came to be published without a fingerprint, by its marker's reason.
UNFINGERPRINTED_WHY = {"import": "imported", "adopt": "adopted"}


def unfingerprinted(complete: Mapping[date, Mapping[str, Any]], count: int) -> dict[str, list[date]]:
    """The last `count` published days the re-check cannot compare, by why they have no
    fingerprint: imported or adopted documents, a day published without telemetry rows by a
    version that gave such days no fingerprint, or one published by a version before
    fingerprints."""
    latest = sorted(complete, reverse=True)[:count]
    out: dict[str, list[date]] = {}
    for day in sorted(d for d in latest if complete[d].get("fingerprint") is None):
        marker = complete[day]
        why = UNFINGERPRINTED_WHY.get(str(marker.get("reason"))) or (
            "published without telemetry rows" if marker.get("rows") == 0 else "published by an older version"
        )
        out.setdefault(why, []).append(day)
    return out


def stale_days(
    published: Mapping[date, Fingerprint], current: Mapping[date, Fingerprint | None]
) -> list[Stale]:
    """The published days whose current fingerprint differs (a day absent from `current`, or None
    there, has no rows)."""
    out = []
    for day in sorted(published):
        now = current.get(day) or EMPTY
        if now != published[day]:
            out.append(Stale(day, int(published[day]["rows"]), int(now["rows"])))
    return out
