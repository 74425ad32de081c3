"""The PostgreSQL telemetry source: the aggregation rules pushed into PostgreSQL.

The rules (see model.py and README) are applied in SQL: a skip report, then three aggregations
run at once and streamed in recordset order, all from one snapshot. Python only merges the
streams and assembles one recordset at a time. The source tables are only ever read.
See docs/performance.md for the measurements behind this shape.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg2
import psycopg2.extensions

from .config import Config, redact
from .errors import SourceUnreachable
from .model import Cell, SkipReason, SkipReport, event_window

EXAMPLE_IDS = 5
SKIPPED_IDS_CAP = 50_000
# A row may hold a block's whole item list (megabytes for a busy recordset), so fetches are
# small: 5,000 rows at a time held a third of a day's lists, 30 MB more than 100 rows do. With
# three streams of lists (items, geocodes, queries) 100 rows each put collect-stats at 98 MB on
# today's day of 50,000 rows and 146 MB on the wide one; 20 rows each at 67 MB and 103 MB.
FETCH_ROWS = 20

# Why a row is skipped, or NULL when the rules accept it. Only reads columns of the stats row,
# so PostgreSQL filters rows before any payload is expanded.
SKIP_REASON_SQL = """
CASE
  WHEN s.record_type IS NULL OR s.record_type NOT IN ('records', 'mediarecords') THEN 'unknown_record_type'
  WHEN s.type NOT IN ('search', 'seen', 'mapping', 'view', 'download') THEN 'unknown_type'
  WHEN s.ip_geocode IS NOT NULL AND jsonb_typeof(s.ip_geocode) NOT IN ('object', 'null')
    THEN 'geocode_not_object'
  WHEN jsonb_typeof(s.payload) <> 'object' THEN 'payload_not_object'
  WHEN s.payload ? '' THEN 'empty_key'
  WHEN s.type IN ('view', 'seen') THEN
    CASE WHEN jsonb_path_exists(s.payload, '$.* ? (@.type() != "string" || @ == "")')
      THEN 'bad_recordset_value' END
  WHEN jsonb_path_exists(
      s.payload, '$.* ? (@.type() != "number" || @ < 0 || @ > 9007199254740991 || @.floor() != @)')
    THEN 'bad_hit_count'
END"""

# The day's cells come from three aggregations run at once on three connections: the items, the
# geocodes and the queries (one GROUPING SETS query for all three kinds is a single process and
# several times slower). Each is ordered by recordset in byte order, which is
# Python's str order, so the streams merge without a sort.
# view/seen payloads map record uuid -> recordset uuid (one entry = one record, one hit);
# search/mapping/download payloads map recordset uuid -> hits.
# Item and query lists leave PostgreSQL whole, one per block, as JSON in the documents' order
# (count descending, then term in code point order, which is UTF-8 byte order, COLLATE "C"):
# Python parses 15,000 lists instead of building 630,000 terms one by one.
RANKED_LIST = """
json_agg(json_build_object('term', key, 'count', n) ORDER BY n DESC, key COLLATE "C")::text"""
ITEMS_SQL = f"""
SELECT rs, record_type, type, 'items', {RANKED_LIST}, sum(n)::bigint, sum(n)::bigint
FROM (SELECT e.value AS rs, s.record_type, s.type, e.key, count(*) AS n
      FROM {{stats}} s CROSS JOIN LATERAL jsonb_each_text(s.payload) e
      WHERE s.date >= %(start)s AND s.date < %(end)s AND s.type IN ('view', 'seen') AND {{accepted}}
      GROUP BY e.value, s.record_type, s.type, e.key) items
GROUP BY rs, record_type, type
ORDER BY rs COLLATE "C"
"""

# Geocode and query cells come from each row's entries summed per recordset: both are columns of
# the row, not of the entry, so a page of seen records collapses into a few (recordset, entries)
# pairs (4.1 M entries into 0.7 M on the default day). Row-level columns come from a subquery that
# OFFSET 0 keeps PostgreSQL from flattening, so they are computed once per row, not per entry.
# (Not an f-string: its braces are the placeholders read_day fills.)
ROW_ENTRIES = """
  FROM (SELECT s.payload, s.record_type, s.type,
               CASE WHEN jsonb_typeof(s.ip_geocode) = 'object' THEN s.ip_geocode::text
                    ELSE '{{}}' END AS geo,
               CASE WHEN s.type <> 'view' THEN q.query_hash END AS query_hash
        FROM {stats} s LEFT JOIN {queries} q ON q.id = s.query_id
        WHERE s.date >= %(start)s AND s.date < %(end)s AND {accepted} OFFSET 0) r
  CROSS JOIN LATERAL (
    -- view/seen: record uuid -> recordset uuid, one hit each. entries as int4: its sum keeps an
    -- int8 by value, where a bigint sum allocates an int128 state per group; the geocode hash
    -- table of the wide day (200,000 rows, 1.39 M groups) went from 524 MB and a spill to 426 MB.
    SELECT e.value AS rs, count(*)::int AS entries, count(*) AS hits
    FROM jsonb_each_text(r.payload) e WHERE r.type IN ('view', 'seen') GROUP BY e.value
    UNION ALL
    -- search/mapping/download: recordset uuid -> hits (3.0 is a valid count)
    SELECT e.key, 1, e.value::numeric::bigint
    FROM jsonb_each_text(r.payload) e WHERE r.type NOT IN ('view', 'seen')
  ) per_row"""
# Geocodes and queries are two aggregations on two connections, not one GROUPING SETS: on the wide
# day (issue 18, 50,000 rows) the GROUPING SETS query took 14.8 s and a 360 MB hash table (it
# spilled at 200,000 rows), the two apart 3.4 s and 3.3 s with 147 MB each.
# A block's geocodes leave PostgreSQL as one JSON list of [geocode, entries, hits], unranked
# (documents rank by the canonical JSON, which Python makes): the wide day has 440,000 geocode
# cells at 50,000 rows, which took 4,400 fetches one cell a row. Every accepted entry has a
# geocode ({} when unknown), so a block's geocodes also give its count and total.
GEOCODES_SQL = f"""
SELECT rs, record_type, type, 'geocodes', json_agg(json_build_array(geo, entries, n))::text,
       sum(entries)::bigint, sum(n)::bigint
FROM (SELECT rs, record_type, type, geo, sum(entries) AS entries, sum(hits) AS n
      {ROW_ENTRIES}
      GROUP BY rs, record_type, type, geo) cells
GROUP BY rs, record_type, type
ORDER BY rs COLLATE "C"
"""
# Views are not broken down by query; rows without a query have no query cell.
QUERIES_SQL = f"""
SELECT rs, record_type, type, 'queries', {RANKED_LIST}, sum(entries)::bigint, sum(n)::bigint
FROM (SELECT rs, record_type, type, query_hash AS key, sum(entries) AS entries, sum(hits) AS n
      {ROW_ENTRIES}
      WHERE query_hash IS NOT NULL
      GROUP BY rs, record_type, type, query_hash) cells
GROUP BY rs, record_type, type
ORDER BY rs COLLATE "C"
"""

# The planner guesses 100 entries per payload and so millions of groups; left alone it picks
# sort-based aggregation that spills to disk. Hash aggregation fits in memory by far. A cursor
# gets no parallel workers anyway; the streams are the parallelism.
STREAM_SETTINGS = (
    "SET LOCAL jit = off",
    "SET LOCAL enable_sort = off",
    "SET LOCAL enable_memoize = off",
    "SET LOCAL work_mem = '256MB'",
    "SET LOCAL max_parallel_workers_per_gather = 0",
    # Every row is read: plan for the whole result, not for a cursor's first rows.
    "SET LOCAL cursor_tuple_fraction = 1.0",
)

# Every skipped id up to a cap: with them the cell queries skip rows by id instead of repeating
# the (costly) jsonpath checks on every row.
SKIPS_SQL = """
SELECT reason, count(*), (array_agg(id ORDER BY id) FILTER (WHERE reason IS NOT NULL))[1:{cap}]
FROM (SELECT s.id, {reason} AS reason FROM {stats} s WHERE s.date >= %(start)s AND s.date < %(end)s) r
GROUP BY reason"""

# The skip report sorts every row of the day by reason (for the ids' order), in two parallel
# workers and the leader. At the default 4 MB each, a wide day of 50,000 rows wrote 30 MB of
# temporary files (issue 18); the sort holds about 600 bytes a row, 120 MB at 200,000 rows.
SKIPS_WORK_MEM = "SET LOCAL work_mem = '256MB'"

# A loose index scan: one probe of the date index per day instead of reading every row.
HARVEST_DATES_SQL = """
WITH RECURSIVE days(day) AS (
  SELECT (SELECT min(date)::date FROM {stats})
  UNION ALL
  SELECT (SELECT min(date)::date FROM {stats} WHERE date >= days.day + 1) FROM days WHERE days.day IS NOT NULL
)
SELECT day + 1 FROM days WHERE day IS NOT NULL"""


def connect(dsn: str, purpose: str) -> psycopg2.extensions.connection:
    """Connect, turning failure into an error that names the server but never the password."""
    try:
        return psycopg2.connect(dsn, application_name=f"idb-stats {purpose}", connect_timeout=10)
    except psycopg2.OperationalError as exc:
        detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise SourceUnreachable(f"cannot connect to the {purpose} database: {detail}") from None


class _CellStream:
    """One aggregation query on its own connection, in the day's snapshot, read through a cursor.

    The query runs to completion (and sorts) before its first rows come back, so the first fetch
    of every stream is started at once, from threads, and the streams' work shares the cores.
    """

    def __init__(self, dsn: str, snapshot: str, sql: str) -> None:
        self._conn = connect(dsn, "telemetry")
        try:
            self._conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with self._conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                cur.execute("; ".join(STREAM_SETTINGS))  # one round trip
            self._cursor = self._conn.cursor(name="cells")
            self._cursor.itersize = FETCH_ROWS
            self._cursor.execute(sql)
        except BaseException:
            self._conn.close()
            raise
        self._first: list[tuple[Any, ...]] = []

    def prefetch(self) -> None:
        self._first = self._cursor.fetchmany(FETCH_ROWS)

    def cells(self) -> Iterator[Cell]:
        make = Cell._make
        yield from map(make, self._first)
        self._first = []
        yield from map(make, self._cursor)

    def close(self) -> None:
        self._conn.close()


@dataclass
class PostgresTelemetryDay:
    report: SkipReport
    _streams: Callable[[], Iterator[Cell]]

    def cells(self) -> Iterator[Cell]:
        return self._streams()


class PostgresTelemetrySource:
    def __init__(self, config: Config):
        self._dsn = config.source_dsn
        self._conn = connect(config.source_dsn, "telemetry")
        self._conn.set_session(readonly=True, autocommit=False)
        self._names = {"stats": config.stats_table, "queries": config.queries_table}
        self._skips_sql = SKIPS_SQL.format(
            cap=max(SKIPPED_IDS_CAP, EXAMPLE_IDS), reason=SKIP_REASON_SQL, **self._names
        )
        self._dates_sql = HARVEST_DATES_SQL.format(**self._names)

    @contextlib.contextmanager
    def read_day(self, harvest_date: date) -> Iterator[PostgresTelemetryDay]:
        """The skip report and the cells of a day, both read from one snapshot of the tables."""
        start, end = event_window(harvest_date)
        window = {"start": start, "end": end}
        self._conn.set_session(isolation_level="REPEATABLE READ")
        try:
            with self._conn, self._conn.cursor() as cur:
                # The exporting transaction stays open until every stream has imported its snapshot.
                cur.execute("SELECT pg_export_snapshot()")
                (snapshot,) = cur.fetchone() or ("",)
                cur.execute(SKIPS_WORK_MEM)
                cur.execute(self._skips_sql, window)
                report, skipped_ids = SkipReport(), []
                for reason, rows, ids in cur:
                    report.rows += rows
                    if reason is not None:
                        report.reasons[reason] = SkipReason(rows, list(ids[:EXAMPLE_IDS]))
                        skipped_ids += ids
                if report.skipped == 0:
                    accepted = "true"
                elif report.skipped <= SKIPPED_IDS_CAP:
                    accepted = cur.mogrify("s.id <> ALL(%s)", (sorted(skipped_ids),)).decode()
                else:
                    accepted = f"({SKIP_REASON_SQL}) IS NULL"
                queries = [
                    cur.mogrify(sql.format(accepted=accepted, **self._names), window).decode()
                    for sql in (ITEMS_SQL, GEOCODES_SQL, QUERIES_SQL)
                ]
                yield PostgresTelemetryDay(report, lambda: self._merged(snapshot, queries))
        finally:
            self._conn.set_session(isolation_level="DEFAULT")

    def _merged(self, snapshot: str, queries: list[str]) -> Iterator[Cell]:
        """The cells of every kind, computed at once on separate connections, merged by recordset."""
        streams: list[_CellStream] = []
        try:
            streams += (_CellStream(self._dsn, snapshot, sql) for sql in queries)
            with ThreadPoolExecutor(len(streams)) as pool:
                list(pool.map(_CellStream.prefetch, streams))
            # Cells are tuples led by the recordset id, so their own order is the merge order.
            yield from heapq.merge(*(stream.cells() for stream in streams))
        except psycopg2.Error as exc:
            raise SourceUnreachable(f"reading telemetry failed: {redact(str(exc).strip())}") from None
        finally:
            for stream in streams:
                stream.close()

    def harvest_dates(self) -> list[date]:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(self._dates_sql)
            return [row[0] for row in cur]

    def close(self) -> None:
        self._conn.close()
