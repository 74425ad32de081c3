"""A telemetry source kept in memory and aggregated by the rules as stated (idb_stats.rules): the
TelemetrySource the unit tests run the use cases on, beside stores.memory.MemoryStore.

Test support rather than library code: production always reads PostgreSQL (source.py, stream.py),
and nothing but the tests needs telemetry that is not in a database.

Rows are stamped with naive datetimes in the telemetry's time zone, as the `date` column holds
them; a harvest date D reads the events of [D-1 00:00, D 00:00). Payloads and geocodes go through
JSON text and rules.load_json, so they reach the rules exactly as a jsonb column's would.
Fingerprints mean what fingerprint.py's mean: rows, smallest and largest id, first and last event,
and an order-independent hash of (id, row version); `update` gives a row a new version as an
UPDATE gives it a new xmin.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from idb_stats import fingerprint
from idb_stats.model import Cell, CounterDay, SkipReport, event_window
from idb_stats.rules import TelemetryRow, aggregate_cells, load_json

# A row as the tests write it: when, type, record_type, query hash, geocode, payload (any JSON).
Row = tuple[datetime, Any, Any, Any, Any, Any]


@dataclass(frozen=True)
class StampedRow:
    at: datetime
    row: TelemetryRow
    version: int = 1


def _json(value: Any) -> Any:
    return None if value is None else load_json(json.dumps(value))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


@dataclass
class RulesTelemetryDay:
    report: SkipReport
    fingerprint: dict[str, Any] | None
    geocodes: list[str]
    queries: list[str]
    publisher_views: list[tuple[str, str, int]]
    # Its rows carry no client address, as a telemetry table without `ip`: no COUNTER-style figures.
    counter: CounterDay
    _cells: list[Cell]
    _around: Callable[[], tuple[bool, bool]]

    def cells(self) -> Iterator[Cell]:
        return iter(self._cells)

    def rows_around(self) -> tuple[bool, bool]:
        return self._around()


class RulesTelemetrySource:
    """Telemetry rows in a dict by id; each read sees the rows as they were when it began."""

    def __init__(self, rows: Iterable[Row] = ()):
        self._rows: dict[int, StampedRow] = {}
        self._next_id = 1
        self.reads: list[date] = []  # harvest dates read, in order (what a run aggregated)
        self.add(rows)

    def add(self, rows: Iterable[Row]) -> list[int]:
        """Insert rows; returns their ids (ascending, as a sequence gives them)."""
        ids = []
        for at, event_type, record_type, query_hash, geocode, payload in rows:
            row_id, self._next_id = self._next_id, self._next_id + 1
            row = TelemetryRow(row_id, event_type, record_type, query_hash, _json(geocode), _json(payload))
            self._rows[row_id] = StampedRow(at, row)
            ids.append(row_id)
        return ids

    def update(self, row_id: int, payload: Any) -> None:
        """Change a row's payload: a new row version, as an UPDATE makes."""
        stamped = self._rows[row_id]
        self._rows[row_id] = StampedRow(
            stamped.at, replace(stamped.row, payload=_json(payload)), stamped.version + 1
        )

    def delete(self, predicate: Callable[[StampedRow], bool]) -> int:
        gone = [row_id for row_id, stamped in self._rows.items() if predicate(stamped)]
        for row_id in gone:
            del self._rows[row_id]
        return len(gone)

    def _window(self, harvest_date: date) -> list[StampedRow]:
        start, end = (_midnight(d) for d in event_window(harvest_date))
        return [s for _, s in sorted(self._rows.items()) if start <= s.at < end]

    @contextlib.contextmanager
    def read_day(self, harvest_date: date) -> Iterator[RulesTelemetryDay]:
        self.reads.append(harvest_date)
        window = self._window(harvest_date)
        day = aggregate_cells(s.row for s in window)
        start, end = (_midnight(d) for d in event_window(harvest_date))
        stamps = [s.at for s in self._rows.values()]
        yield RulesTelemetryDay(
            report=day.report,
            fingerprint=_fingerprint(window) or dict(fingerprint.EMPTY),
            geocodes=[],
            queries=[],
            publisher_views=[
                (publisher, geo, views)
                for publisher, by_geo in sorted(day.publisher_views.items())
                for geo, views in sorted(by_geo.items())
            ],
            counter=None,
            # Cells led by their recordset id: sorted, they come grouped by recordset.
            _cells=sorted(cell for cells in day.cells.values() for cell in cells),
            _around=lambda: (any(at < start for at in stamps), any(at >= end for at in stamps)),
        )

    def harvest_dates(self) -> list[date]:
        return sorted({s.at.date() + timedelta(days=1) for s in self._rows.values()})

    def rows_at(self, moment: date) -> list[TelemetryRow]:
        return [s.row for _, s in sorted(self._rows.items()) if s.at == _midnight(moment)]

    def fingerprints(self, days: list[date]) -> dict[date, dict[str, Any] | None]:
        return {day: _fingerprint(self._window(day)) for day in days}

    def close(self) -> None:
        """Nothing to release; kept for the TelemetrySource protocol."""


def _fingerprint(window: list[StampedRow]) -> dict[str, Any] | None:
    if not window:
        return None
    digest = 0
    for stamped in window:
        text = f"{stamped.row.id}:{stamped.version}".encode()
        digest ^= int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")
    ids = [s.row.id for s in window]
    stamps = [s.at for s in window]
    return fingerprint.from_row((len(window), min(ids), max(ids), min(stamps), max(stamps), digest))
