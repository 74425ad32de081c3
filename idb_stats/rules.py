"""The aggregation rules stated plainly, one telemetry row at a time.

This is the specification the SQL in source.py implements for speed. It is pure (rows in,
documents out) and serves as the reference the tests compare the fast path with, and as the
row-at-a-time baseline of the benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from itertools import pairwise
from typing import Any

from .documents import Document, build_document, canonical_geo, publisher_document
from .model import (
    COUNTER_KEY,
    DOUBLE_CLICK_SECONDS,
    EVENT_TYPES,
    INVESTIGATION_EVENT,
    MAX_GEOCODE_BYTES,
    MAX_HITS,
    MAX_ID_BYTES,
    PAGE_EVENT,
    PAGE_TYPES,
    PER_RECORD_TYPES,
    RECORD_TYPES,
    RECORDSET_PAGE_BLOCK,
    REQUEST_EVENT,
    UNQUERIED_TYPES,
    Cell,
    CounterFigures,
    SkipReason,
    SkipReport,
)


def load_json(text: str | None) -> Any:
    """A jsonb column's text as the rules read it: numbers as exact Decimals, as PostgreSQL holds
    them (a float would take 1e-400 for 0 and 2**53 + 0.5 for an integer, and an int of
    1e5000's 5,001 digits is beyond Python's limit)."""
    return None if text is None else json.loads(text, parse_int=Decimal, parse_float=Decimal)


@dataclass(frozen=True)
class TelemetryRow:
    """One telemetry row; ip_geocode and payload as load_json reads them (None for SQL NULL).
    date and ip are read only for the COUNTER-style figures (counter_figures); ip is the column's
    text, compared as is."""

    id: int
    type: str | None
    record_type: str | None
    query_hash: str | None
    ip_geocode: Any
    payload: Any
    date: datetime | None = None
    ip: str | None = None


def skip_reason(row: TelemetryRow) -> str | None:
    """Why the rules skip a row, or None when they accept it. Checked in this order, which is
    the order of model.SKIP_REASONS; source.SKIP_REASON_SQL states the same in SQL."""
    if row.record_type not in RECORD_TYPES and row.record_type not in PAGE_TYPES:
        return "unknown_record_type"
    # A page of a recordset or publisher is only ever viewed.
    if row.type not in (EVENT_TYPES if row.record_type in RECORD_TYPES else (PAGE_EVENT,)):
        return "unknown_type"
    if row.ip_geocode is not None and not isinstance(row.ip_geocode, dict):
        return "geocode_not_object"
    # Geocodes are grouped by their JSON text: only strings have one spelling (1.0 and 1.00 do not).
    if row.ip_geocode is not None and any(not isinstance(v, str) for v in row.ip_geocode.values()):
        return "bad_geocode_value"
    if row.ip_geocode is not None and (
        sum(_utf8_length(k) + _utf8_length(v) for k, v in row.ip_geocode.items()) > MAX_GEOCODE_BYTES
    ):
        return "oversized_geocode"
    if not isinstance(row.payload, dict):
        return "payload_not_object"
    if "" in row.payload:
        return "empty_key"
    values = row.payload.values()
    if row.record_type in PAGE_TYPES:
        # Keyed by the page's uuid; the value is the viewed document's `recordset` field, which
        # recordset and publisher documents lack: whatever it is, it is not read.
        ids: Iterable[str] = row.payload
    elif row.type in PER_RECORD_TYPES:
        if any(not isinstance(v, str) or v == "" for v in values):
            return "bad_recordset_value"
        ids = (*row.payload, *values)
    else:
        if any(not _is_hit_count(v) for v in values):
            return "bad_hit_count"
        ids = row.payload
    if any(_utf8_length(i) > MAX_ID_BYTES for i in ids):
        return "oversized_id"
    return None


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _is_hit_count(value: Any) -> bool:
    """An integral number in [0, MAX_HITS]; 3.0 is 3 hits, true is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return False
    return 0 <= value <= MAX_HITS and value == int(value)


@dataclass
class RulesDay:
    """What the rules make of a harvest day's rows."""

    documents: list[Document]  # daily documents, sorted by recordset
    report: SkipReport
    publishers: list[Document]  # publisher documents, sorted by publisher
    counter: dict[str, CounterFigures] | None = None  # when asked for (aggregate_day's zone)


def aggregate(
    rows: Iterable[TelemetryRow], harvest_date: date, limit: int = 0, max_examples: int = 5
) -> tuple[list[Document], SkipReport]:
    """Apply the rules to the rows of one harvest day: documents sorted by recordset, and skips."""
    day = aggregate_day(rows, harvest_date, limit, max_examples)
    return day.documents, day.report


# The kind of cell a publisher page's view makes: it goes to that publisher's document
# (documents.publisher_document), keyed by geocode, not to a recordset's.
PUBLISHER_VIEW = "publisher"


def row_cells(row: TelemetryRow) -> Iterator[tuple[str, str, str, str, str, int]]:
    """What an accepted row (skip_reason None) adds: (id, record_type, type, kind, key, hits) once
    per entry and kind. id is a recordset for kind "item" (key: record), "query" (key: query hash)
    and "geo" (key: canonical JSON of the geocode), a publisher for PUBLISHER_VIEW (key: the
    geocode). A cell adds 1 to its key's entries and `hits` to its hits."""
    assert row.record_type is not None and row.type is not None
    geo = canonical_geo(row.ip_geocode)
    if row.record_type in PAGE_TYPES:
        # Each key is one view of that page: count +1, total +1, geocodes[geo] +1.
        for key in row.payload:
            if row.record_type == RECORDSET_PAGE_BLOCK[0]:
                yield key, *RECORDSET_PAGE_BLOCK, "geo", geo, 1
            else:
                yield key, row.record_type, row.type, PUBLISHER_VIEW, geo, 1
        return
    for key, value in row.payload.items():
        if row.type in PER_RECORD_TYPES:
            recordset, hits = value, 1
            yield recordset, row.record_type, row.type, "item", key, 1
        else:
            recordset, hits = key, int(value)
        if row.query_hash is not None and row.type not in UNQUERIED_TYPES:
            yield recordset, row.record_type, row.type, "query", row.query_hash, hits
        yield recordset, row.record_type, row.type, "geo", geo, hits


@dataclass
class DayCells:
    """What the rules add up from a harvest day's rows, before documents are built from it."""

    cells: dict[str, list[Cell]]  # by recordset, of kinds geo, item and query (see model.Cell)
    report: SkipReport
    publisher_views: dict[str, dict[str, int]]  # publisher -> canonical geocode JSON -> views


def aggregate_cells(rows: Iterable[TelemetryRow], max_examples: int = 5) -> DayCells:
    """Apply the rules to the rows of one harvest day: the cells of each recordset, the skip
    report and the publisher page views."""
    report = SkipReport()
    # (recordset, record_type, type, kind, key) -> [entries, hits]
    acc: dict[tuple[str, str, str, str, str], list[int]] = {}
    # publisher -> geocode -> page views
    publishers: dict[str, dict[str, int]] = {}

    for row in rows:
        report.rows += 1
        reason = skip_reason(row)
        if reason is not None:
            skip = report.reasons.setdefault(reason, SkipReason())
            skip.rows += 1
            if len(skip.example_ids) < max_examples:
                skip.example_ids.append(row.id)
            continue
        assert row.record_type is not None
        report.kinds[row.record_type] = report.kinds.get(row.record_type, 0) + 1
        for rs, rt, ty, kind, key, hits in row_cells(row):
            if kind == PUBLISHER_VIEW:
                views = publishers.setdefault(rs, {})
                views[key] = views.get(key, 0) + hits
                continue
            slot = acc.setdefault((rs, rt, ty, kind, key), [0, 0])
            slot[0] += 1
            slot[1] += hits

    by_recordset: dict[str, list[Cell]] = {}
    for (rs, rt, ty, kind, key), (entries, hits) in acc.items():
        by_recordset.setdefault(rs, []).append(Cell(rs, rt, ty, kind, key, entries, hits))
    for skip in report.reasons.values():
        skip.example_ids.sort()
    return DayCells(dict(sorted(by_recordset.items())), report, publishers)


def aggregate_day(
    rows: Iterable[TelemetryRow],
    harvest_date: date,
    limit: int = 0,
    max_examples: int = 5,
    zone: tzinfo | None = None,
) -> RulesDay:
    """Apply the rules to the rows of one harvest day: daily and publisher documents, and skips.
    With a zone (source.timezone), the rows' date and ip are read too and every document carries
    its COUNTER-style figures, as when the telemetry has an `ip` column."""
    rows = list(rows) if zone is not None else rows
    day = aggregate_cells(rows, max_examples)
    docs = [build_document(rs, harvest_date, cells, limit)[0] for rs, cells in day.cells.items()]
    pages = [
        publisher_document(p, harvest_date, views, limit) for p, views in sorted(day.publisher_views.items())
    ]
    counter = None
    if zone is not None:
        counter = counter_figures(rows, zone)
        for doc in docs:
            doc[COUNTER_KEY] = counter.get(doc["recordset_id"], CounterFigures()).as_block()
    return RulesDay(docs, day.report, pages, counter)


# --- COUNTER-style figures (docs/counting.md, "COUNTER-style figures") ---

DOUBLE_CLICK = timedelta(seconds=DOUBLE_CLICK_SECONDS)


def session_hour(moment: datetime, zone: tzinfo) -> datetime:
    """The hour a moment falls in, as the session's second half: wall-clock for a naive
    timestamp; for an aware one, the hour of its local time in `zone`, keeping its UTC offset (the
    repeated hour of a fall-back day is two hours, as PostgreSQL's date_trunc keeps the offset)."""
    if moment.tzinfo is None:
        return moment.replace(minute=0, second=0, microsecond=0)
    local = moment.astimezone(zone)
    return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)


# A counted event: (session, item); a session is (client, hour), a client the ip's text or, for a
# row without one, the row itself (its id), so rows without an address are never merged.
Session = tuple[tuple[str, str | int], datetime]
# (is a request, record_type, recordset, record or recordset id)
Item = tuple[bool, str, str, str]


def counter_events(row: TelemetryRow, zone: tzinfo) -> Iterator[tuple[Session, Item]]:
    """What an accepted row adds to the COUNTER-style figures: one event per payload entry of a
    view (item: the record, for the recordset it names) or a download (item: the recordset) of
    records or media records; nothing for any other row."""
    if row.record_type not in RECORD_TYPES or row.type not in (INVESTIGATION_EVENT, REQUEST_EVENT):
        return
    assert row.date is not None, "COUNTER-style figures need each row's date"
    client: tuple[str, str | int] = ("ip", row.ip) if row.ip is not None else ("row", row.id)
    session = (client, session_hour(row.date, zone))
    request = row.type == REQUEST_EVENT
    for key, value in row.payload.items():
        recordset, item = (key, key) if request else (value, key)
        yield session, (request, row.record_type, recordset, item)


def counter_figures(rows: Iterable[TelemetryRow], zone: tzinfo) -> dict[str, CounterFigures]:
    """Per recordset: investigations (views and downloads) and requests (downloads), each as
    total and unique. A chain of repeats of one item by one session, each at most 30 s after the
    one before, counts once; unique is the number of distinct sessions. Only accepted rows count."""
    times: dict[tuple[Session, Item], list[datetime]] = {}
    for row in rows:
        if skip_reason(row) is not None:
            continue
        for session, item in counter_events(row, zone):
            assert row.date is not None
            times.setdefault((session, item), []).append(row.date)
    # recordset -> [investigations, requests]; and the sessions of each
    totals: dict[str, list[int]] = {}
    sessions: dict[str, tuple[set[Session], set[Session]]] = {}
    for (session, (request, _, recordset, _)), moments in times.items():
        moments.sort()
        # A chain ends where the next repeat comes more than 30 s after the previous one.
        chains = 1 + sum(1 for a, b in pairwise(moments) if b - a > DOUBLE_CLICK)
        total = totals.setdefault(recordset, [0, 0])
        seen = sessions.setdefault(recordset, (set(), set()))
        total[0] += chains
        seen[0].add(session)
        if request:
            total[1] += chains
            seen[1].add(session)
    return {
        rs: CounterFigures(total[0], len(sessions[rs][0]), total[1], len(sessions[rs][1]))
        for rs, total in sorted(totals.items())
    }
