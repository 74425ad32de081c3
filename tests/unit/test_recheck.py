"""The re-check's rules without a database: which published days are stale, which carry no
fingerprint and why, and the last settled day (moved from test_late_rows)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from idb_stats import fingerprint, planning


def test_stale_days_rule() -> None:
    fp = {"rows": 10, "min_id": 1, "max_id": 10, "first_event": "a", "last_event": "b", "hash": "00"}
    published = {date(2020, 1, d): fp for d in (1, 2, 3)}
    current = {
        date(2020, 1, 1): fp,
        date(2020, 1, 2): {**fp, "rows": 12, "hash": "01"},
        date(2020, 1, 3): None,
    }
    stale = fingerprint.stale_days(published, current)
    assert [(s.harvest_date.day, s.row_delta, s.rows_gone) for s in stale] == [(2, 2, False), (3, -10, True)]
    complete = {date(2020, 1, d): {"fingerprint": fp if d != 4 else None} for d in range(1, 6)}
    assert list(fingerprint.recent_published(complete, 3, exclude=[date(2020, 1, 5)])) == [
        date(2020, 1, 3),
        date(2020, 1, 2),
    ]


def test_days_without_fingerprint_are_named_with_why() -> None:
    fp = {"rows": 10, "min_id": 1, "max_id": 10, "first_event": "a", "last_event": "b", "hash": "00"}
    markers = [
        {"reason": "collect", "rows": 5},  # before fingerprints existed
        {"reason": "import", "rows": 0},
        {"reason": "collect", "rows": 0},  # no rows: nothing to fingerprint
        {"reason": "adopt", "rows": 0},
        {"reason": "collect", "rows": 10, "fingerprint": fp},
    ]
    complete = {date(2020, 1, d): marker for d, marker in enumerate(markers, 1)}
    assert fingerprint.unfingerprinted(complete, 4) == {
        "imported": [date(2020, 1, 2)],
        "published without telemetry rows": [date(2020, 1, 3)],
        "adopted": [date(2020, 1, 4)],
    }
    assert fingerprint.unfingerprinted(complete, 5)["published by an older version"] == [date(2020, 1, 1)]


def test_last_settled_day() -> None:
    settle, utc = timedelta(minutes=30), ZoneInfo("UTC")
    assert planning.last_closed_day(datetime(2020, 2, 18, 0, 29, tzinfo=utc), utc, settle) == date(
        2020, 2, 17
    )
    assert planning.last_closed_day(datetime(2020, 2, 18, 0, 30, tzinfo=utc), utc, settle) == date(
        2020, 2, 18
    )
    assert planning.last_closed_day(datetime(2020, 2, 18, 0, 0, tzinfo=utc), utc) == date(2020, 2, 18)

