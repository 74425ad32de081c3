"""Test helpers: write telemetry rows, and compute what the rules say they aggregate to."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta
from typing import Any

import psycopg2

from idb_stats import synthetic
from idb_stats.rules import TelemetryRow, aggregate, load_json
from idb_stats.synthetic import fake_uuid

Row = tuple[datetime, str, Any, Any, Any, Any]  # date, type, record_type, query hash, geocode, payload


def insert_rows(dsn: str, rows: list[Row]) -> None:
    """Insert telemetry; a query hash is created in `queries` on first use. Payloads and geocodes
    are written as given (JSON values of any type), so bad rows can be made too."""
    conn = psycopg2.connect(dsn)
    synthetic.create_schema(conn)
    with conn, conn.cursor() as cur:
        for at, event_type, record_type, query_hash, geo, payload in rows:
            query_id = None
            if query_hash is not None:
                cur.execute(
                    "INSERT INTO queries (query_hash, query) VALUES (%s, '{}') ON CONFLICT (query_hash) "
                    "DO UPDATE SET query_hash = EXCLUDED.query_hash RETURNING id",
                    (query_hash,),
                )
                (query_id,) = cur.fetchone() or (None,)
            cur.execute(
                "INSERT INTO stats (date, type, record_type, query_id, source, ip, ip_geocode, payload) "
                "VALUES (%s, %s, %s, %s, 'api', '127.0.0.1', %s, %s)",
                (
                    at,
                    event_type,
                    record_type,
                    query_id,
                    None if geo is None else json.dumps(geo),
                    json.dumps(payload),
                ),
            )
    conn.close()


def reference(dsn: str, harvest_date: date, limit: int = 0) -> tuple[list[dict[str, Any]], Any]:
    """Documents and skip report of a day by the plain statement of the rules (idb_stats.rules)."""
    start, end = harvest_date - timedelta(days=1), harvest_date
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT s.id, s.type, s.record_type, q.query_hash, s.ip_geocode::text, s.payload::text "
            "FROM stats s LEFT JOIN queries q ON q.id = s.query_id WHERE s.date >= %s AND s.date < %s "
            "ORDER BY s.id",
            (start, end),
        )
        rows = [TelemetryRow(r[0], r[1], r[2], r[3], load_json(r[4]), load_json(r[5])) for r in cur]
    conn.close()
    return aggregate(rows, harvest_date, limit)


RECORDSETS = [fake_uuid(1, i) for i in range(12)]
QUERIES = [f"q{i:04d}" for i in range(8)]
GEOS: list[Any] = [{"country": "US", "region": "FL"}, {"country": "BR"}, {}, None, {"city": "Nowhere"}]


def random_rows(seed: int, day: date, n: int = 150, bad: bool = True) -> list[Row]:
    """Rows for the calendar day `day`, with edge cases: exact midnights (this day's and the next
    day's), NULL geocodes, rows without a query, and (bad=True) every kind of rule-breaking row."""
    rng = random.Random(seed)
    start = datetime(day.year, day.month, day.day)
    rows: list[Row] = []
    for i in range(n):
        at = rng.choice(
            [
                start,
                start + timedelta(days=1),
                start + timedelta(seconds=rng.uniform(0, 86399)),
                start - timedelta(microseconds=1),
            ]
        )
        event_type = rng.choice(["search", "seen", "mapping", "view", "download"])
        record_type = rng.choice(["records", "records", "mediarecords"])
        query = rng.choice([None, *QUERIES])
        geo = rng.choice(GEOS)
        if event_type in ("view", "seen"):
            payload: Any = {
                fake_uuid(2, rng.randrange(40)): rng.choice(RECORDSETS)
                for _ in range(rng.randint(0 if i % 17 == 0 else 1, 6))
            }
        else:
            payload = {
                # Integral floats (3.0) are valid hit counts too. Sums stay below 2**53: the search
                # engines sum in doubles, exact only up to there.
                rng.choice(RECORDSETS): rng.choice([0, 1, 2, 7, 150, 10**9, 3.0, 2**40])
                for _ in range(rng.randint(1, 5))
            }
        rows.append((at, event_type, record_type, query, geo, payload))
    if bad:
        some_rs = RECORDSETS[0]
        rows += [
            (start + timedelta(hours=1), "search", "publishers", None, None, {some_rs: 1}),
            (start + timedelta(hours=1), "search", None, None, None, {some_rs: 1}),
            (start + timedelta(hours=2), "facet", "records", None, None, {some_rs: 1}),
            (start + timedelta(hours=3), "search", "records", None, "US", {some_rs: 1}),
            (start + timedelta(hours=4), "view", "records", None, None, ["not", "an", "object"]),
            (start + timedelta(hours=5), "search", "records", "q0001", {}, {"": 3}),
            (start + timedelta(hours=6), "seen", "records", None, None, {fake_uuid(2, 1): 5}),
            (start + timedelta(hours=6), "view", "records", None, None, {fake_uuid(2, 1): ""}),
            (start + timedelta(hours=7), "search", "records", None, None, {some_rs: -1}),
            (start + timedelta(hours=7), "download", "records", None, None, {some_rs: 1.5}),
            (start + timedelta(hours=8), "mapping", "mediarecords", None, None, {some_rs: "12"}),
            (start + timedelta(hours=8), "search", "records", None, None, {some_rs: [5]}),
            (start + timedelta(hours=8), "seen", "records", None, None, {fake_uuid(2, 1): [some_rs]}),
            (start + timedelta(hours=9), "search", "records", None, {"country": 7}, {some_rs: 1}),
            (start + timedelta(hours=9), "view", "records", None, None, {"r" * 501: some_rs}),
        ]
    return rows
