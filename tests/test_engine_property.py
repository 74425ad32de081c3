"""Property: each engine's day equals rules.aggregate_day's (documents, publisher documents, skip
report) on a valid day with hostile rows mixed in, on a real PostgreSQL.

Only the engines are exercised: one database and one open source per engine serve every example,
whose rows replace the last one's, so an example costs a few inserts, the reference and one
read_day per engine (no store, no run, no process). That makes the long search affordable: the
suite runs a few dozen examples, IDB_STATS_HOSTILE_EXAMPLES=10000 the long run of issue 25.
test_hostile_property runs whole collects into a store on fewer examples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from helpers import QUERIES
from hostile import HARVEST, hostile_day_database, hostile_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from idb_stats import embedded
from idb_stats.config import ENGINES, load_config
from idb_stats.documents import day_documents, publisher_documents
from idb_stats.engines import open_source
from idb_stats.model import DayStats, event_window
from idb_stats.rules import TelemetryRow, aggregate_day, load_json, skip_reason
from idb_stats.source import SKIP_REASON_SQL, PostgresTelemetrySource

EXAMPLES = int(os.environ.get("IDB_STATS_HOSTILE_EXAMPLES", "25"))

# A generated search over hostile days on a real server: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

ROWS_SQL = sql.SQL("""
SELECT s.id, s.type, s.record_type, q.query_hash, s.ip_geocode::text, s.payload::text, {},
       s.date, s.ip::text
FROM stats s LEFT JOIN queries q ON q.id = s.query_id
WHERE s.date >= %s AND s.date < %s ORDER BY s.id""").format(SKIP_REASON_SQL)


class EngineDay:
    """A valid day kept in a table of its own; each example's day is it and the example's rows."""

    def __init__(self, server: embedded.EmbeddedPostgres) -> None:
        self.dsn, self.conn = hostile_day_database(server, 11, "e")
        with self.conn.cursor() as cur:
            cur.execute("CREATE TABLE valid_day AS SELECT * FROM stats")
            cur.execute(
                "INSERT INTO queries (query_hash, query) SELECT unnest(%s::text[]), '{}' "
                "ON CONFLICT (query_hash) DO NOTHING",
                (QUERIES[:2],),
            )
        self.sources: dict[str, PostgresTelemetrySource] = {
            engine: open_source(
                load_config(overrides={"source.dsn": self.dsn, "collect.engine": engine}, environ={})
            )
            for engine in ENGINES
        }

    def replace(self, rows: list[tuple[Any, ...]]) -> None:
        """The day becomes the valid rows and these (ids after theirs, in the given order)."""
        with self.conn.cursor() as cur:
            cur.execute("TRUNCATE stats; INSERT INTO stats SELECT * FROM valid_day")
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO stats (date, type, record_type, query_id, ip_geocode, payload) "
                "SELECT v.at, v.type, v.record_type, q.id, v.geo::jsonb, v.payload::jsonb "
                "FROM (VALUES %s) v (n, at, type, record_type, query_hash, geo, payload) "
                "LEFT JOIN queries q ON q.query_hash = v.query_hash ORDER BY v.n",
                [(n, *row) for n, row in enumerate(rows)],
                template="(%s, %s::timestamp, %s, %s, %s, %s, %s)",
            )

    def close(self) -> None:
        for source in self.sources.values():
            source.close()
        self.conn.close()


@pytest.fixture(scope="module")
def engine_day(pg_server: embedded.EmbeddedPostgres) -> Iterator[EngineDay]:
    day = EngineDay(pg_server)
    yield day
    day.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(rows=st.lists(hostile_rows, min_size=1, max_size=8))
def test_each_engine_makes_the_rules_day_of_hostile_rows(
    engine_day: EngineDay, rows: list[tuple[Any, ...]]
) -> None:
    engine_day.replace(rows)
    with engine_day.conn.cursor() as cur:
        cur.execute(ROWS_SQL, event_window(HARVEST))
        read = cur.fetchall()
    telemetry_rows = [
        TelemetryRow(row_id, event_type, record_type, query_hash, load_json(geo), load_json(payload), at, ip)
        for row_id, event_type, record_type, query_hash, geo, payload, _, at, ip in read
    ]
    # The SQL statement of the skip reasons and rules.py agree row by row (the SQL engine's report
    # is made by it), and each engine makes the rules' day.
    assert [row[6] for row in read] == [skip_reason(row) for row in telemetry_rows]
    # With the COUNTER figures: the telemetry's `date` is naive, so sessions' hours are its own.
    expected = aggregate_day(telemetry_rows, HARVEST, zone=UTC)
    for engine, source in engine_day.sources.items():
        with source.read_day(HARVEST) as telemetry:
            report = telemetry.report
            docs = list(day_documents(telemetry, HARVEST, DayStats(HARVEST)))
            publishers = publisher_documents(telemetry.publisher_views, HARVEST)
        assert docs == expected.documents, engine
        assert report.as_dict() == expected.report.as_dict(), engine
        assert (report.rows, report.kinds) == (expected.report.rows, expected.report.kinds), engine
        assert publishers == expected.publishers, engine
