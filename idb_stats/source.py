"""The PostgreSQL telemetry source: the aggregation rules pushed into PostgreSQL.

The rules (see model.py and docs/counting.md) are applied in SQL: a skip report, the day's tables of
geocodes and queries, then three aggregations run at once and streamed in recordset order, all
from one snapshot. Python merges the streams, ranks each list and assembles one recordset at a
time. The source tables are only ever read.
See docs/performance.md for the measurements behind this shape. Long because each SQL text
sits here with the measurement that chose it.
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
import psycopg2.errorcodes
import psycopg2.extensions
from psycopg2 import sql

from . import counter, fingerprint, interrupt
from .config import Config
from .documents import geocode_table
from .errors import ConfigError, DataQualityError, IdbStatsError, SourceUnreachable
from .model import (
    BLOCKS,
    EVENT_TYPES,
    ITEM_BLOCKS,
    MAX_GEOCODE_BYTES,
    MAX_HITS,
    MAX_ID_BYTES,
    PAGE_EVENT,
    PAGE_TYPES,
    PER_RECORD_TYPES,
    PUBLISHER_BLOCK,
    RECORD_TYPES,
    RECORDSET_PAGE_BLOCK,
    Cell,
    CounterDay,
    SkipReason,
    SkipReport,
    event_window,
)
from .pg import NUMERIC_AS_INT, connect, one_line
from .rules import TelemetryRow, load_json
from .secrets import scrub

EXAMPLE_IDS = 5
SKIPPED_IDS_CAP = 50_000
# A row may hold a block's whole item list (megabytes for a busy recordset), so fetches are
# small: 5,000 rows at a time held a third of a day's lists, 30 MB more than 100 rows do. With
# three streams of lists (items, geocodes, queries) 100 rows each put collect-stats at 98 MB on
# today's day of 50,000 rows and 146 MB on the wide one; 20 rows each at 67 MB and 103 MB.
FETCH_ROWS = 20


def sql_list(values: tuple[str, ...]) -> str:
    """The model's names as an SQL list of literals (they are plain words, never user input)."""
    assert all(v.isidentifier() for v in values)
    return ", ".join(f"'{v}'" for v in values)


# The row kinds in SQL, from the model's vocabulary.
IS_RECORD_ROW = f"s.record_type IN ({sql_list(RECORD_TYPES)})"
IS_PAGE_ROW = f"s.record_type IN ({sql_list(PAGE_TYPES)})"
IS_PER_RECORD = f"{IS_RECORD_ROW} AND s.type IN ({sql_list(PER_RECORD_TYPES)})"
IS_HITS = f"{IS_RECORD_ROW} AND s.type NOT IN ({sql_list(PER_RECORD_TYPES)})"

# Why a row is skipped, or NULL when the rules accept it: rules.skip_reason in SQL, check for
# check in the same order. Apart from the id lengths, only reads columns of the stats row, so no
# payload is expanded for it. jsonpath runs in strict mode, as lax mode would unwrap [5] into 5; it
# is silent, so a path applied to a non-object is no match instead of an error. jsonpath cannot
# measure a string, so {oversized} (a row with a LONG_ENTRY) is given in two forms below.
SKIP_REASON_TEMPLATE = f"""
CASE
  WHEN s.record_type IS NULL OR s.record_type NOT IN ({sql_list(RECORD_TYPES + PAGE_TYPES)})
    THEN 'unknown_record_type'
  WHEN s.type IS NULL OR s.type NOT IN ({sql_list(EVENT_TYPES)})
    OR ({IS_PAGE_ROW} AND s.type <> '{PAGE_EVENT}')
    THEN 'unknown_type'
  WHEN s.ip_geocode IS NOT NULL AND jsonb_typeof(s.ip_geocode) NOT IN ('object', 'null')
    THEN 'geocode_not_object'
  WHEN jsonb_path_exists(s.ip_geocode, 'strict $.* ? (@.type() != "string")', '{{{{}}}}', true)
    THEN 'bad_geocode_value'
  WHEN {{big_geocode}} THEN 'oversized_geocode'
  WHEN s.payload IS NULL OR jsonb_typeof(s.payload) <> 'object' THEN 'payload_not_object'
  WHEN s.payload ? '' THEN 'empty_key'
  WHEN {IS_PER_RECORD} AND jsonb_path_exists(
      s.payload, 'strict $.* ? (@.type() != "string" || @ == "")', '{{{{}}}}', true)
    THEN 'bad_recordset_value'
  WHEN {IS_HITS} AND jsonb_path_exists(
      s.payload,
      'strict $.* ? (@.type() != "number" || @ < 0 || @ > {MAX_HITS} || @.floor() != @)', '{{{{}}}}', true)
    THEN 'bad_hit_count'
  WHEN {{oversized}} THEN 'oversized_id'
END"""
# An entry holding an id longer than MAX_ID_BYTES: a key, or a view/seen value of records
# (a recordset id; other values are hit counts, and a page view's value is not read). The skip
# report finds such rows with a join, which keeps its scan parallel: as a subquery inside the
# CASE it took the report from 0.9 s to 4.4 s on 100,000 rows, as the join 2.2 s (both on a loaded
# machine). SKIP_REASON_SQL holds the self-contained form, for the cell queries' fallback and the
# tests.
PAYLOAD_ENTRIES = "jsonb_each_text(CASE WHEN jsonb_typeof(s.payload) = 'object' THEN s.payload END) e"
LONG_ENTRY = (
    f"(octet_length(e.key) > {MAX_ID_BYTES} OR ({IS_PER_RECORD} AND octet_length(e.value) > {MAX_ID_BYTES}))"
)
# A geocode's keys and values together over MAX_GEOCODE_BYTES (its values are strings by then):
# found with a join too, by summing the entries of every row's geocode.
GEOCODE_ENTRIES = "jsonb_each_text(CASE WHEN jsonb_typeof(s.ip_geocode) = 'object' THEN s.ip_geocode END) g"
GEOCODE_BYTES = "sum(octet_length(g.key) + octet_length(g.value))"
SKIP_REASON_SQL = SKIP_REASON_TEMPLATE.format(
    oversized=f"EXISTS (SELECT FROM {PAYLOAD_ENTRIES} WHERE {LONG_ENTRY})",
    big_geocode=f"(SELECT {GEOCODE_BYTES} FROM {GEOCODE_ENTRIES}) > {MAX_GEOCODE_BYTES}",
)

# The day's cells come from three aggregations run at once on three connections: the items, the
# geocodes and the queries (one GROUPING SETS query for all three kinds is a single process and
# several times slower). Each is ordered by recordset in byte order, which is
# Python's str order, so the streams merge without a sort. Recordset and record ids are taken
# COLLATE "C" where they are read, so every sort and grouping on them is bytewise whatever the
# database's collation (a portal's en_US.UTF-8 would compare them with strcoll).
# view/seen payloads map record uuid -> recordset uuid (one entry = one record, one hit);
# search/mapping/download payloads map recordset uuid -> hits.
# A record type and an event type travel as one small int, the block (BLOCK_CODE), named again
# in the lists' rows (BLOCK_NAMES).
BLOCK_CODE = " ".join(
    ["CASE"]
    + [f"WHEN s.record_type = '{rt}' AND s.type = '{ty}' THEN {code}" for code, (rt, ty) in enumerate(BLOCKS)]
    + ["END::int2"]
)
BLOCK_NAMES = (
    f"(ARRAY{[rt for rt, _ in BLOCKS]})[block + 1] AS record_type, "
    f"(ARRAY{[ty for _, ty in BLOCKS]})[block + 1] AS type"
)
# A block's list leaves PostgreSQL as one JSON list of [key, hits] pairs, unranked: the lists are
# built by hashing, planned on their own (OFFSET 0), and only the rows of lists are sorted. Sorting
# every cell to group and rank them in PostgreSQL cost more: 2.5 s against 1.9 s of the server's
# CPU for the wide day's items, 1.4 s more for its geocodes, and 190 MB of temporary files for the
# geocodes of a wide day of 400,000 rows (issue 18). Python ranks them (documents.ranked_pairs).
ITEMS_SQL = f"""
SELECT * FROM (
  SELECT rs, {BLOCK_NAMES}, 'items', json_agg(json_build_array(key, n))::text, sum(n)::bigint, sum(n)::bigint
  FROM (SELECT e.value COLLATE "C" AS rs, r.block, e.key, count(*) AS n
        FROM (SELECT s.payload, {BLOCK_CODE} AS block
              FROM {{stats}} s
              WHERE s.date >= %(start)s AND s.date < %(end)s AND {IS_PER_RECORD} AND {{accepted}}
              OFFSET 0) r
        CROSS JOIN LATERAL jsonb_each_text(r.payload) e
        GROUP BY 1, 2, 3) items
  GROUP BY rs, block
  OFFSET 0) lists
ORDER BY rs
"""

# Geocode and query cells come from each row's entries summed per recordset: both are columns of
# the row, not of the entry, so a page of seen records collapses into a few (recordset, entries)
# pairs (4.1 M entries into 0.7 M on the default day). The row subquery selects the row's
# block (record type and type as one small int) and {row_columns}; OFFSET 0 keeps PostgreSQL from
# flattening it, so they are computed once per row, not per entry.
# Every grouping value is small and by value, so the hash tables hold the most cells before they
# spill (issue 18: 2.4 M cells of the wide day of 400,000 rows spilled 595 MB at work_mem 256 MB):
# - the block as an int2, not two texts; geocodes and queries by rank (below), not their text;
# - hits summed as two int4 halves (hits < 2**53, so each half < 2**31), whose sums are int8 by
#   value; a bigint sum keeps an int128 state allocated per cell. The halves are joined again as
#   numeric, exact beyond bigint (1,100 entries of 2**53 - 1 hits exceed it);
# - entries as int4, for the same reason.
# On the wide day of 200,000 rows the cells' hash table went from 295 MB to 213 MB, and the step
# from 3.4 s to 2.6 s.
# Its single braces, once formatted, are the placeholders read_day fills.
HALF = 2**31
assert MAX_HITS < HALF * HALF, "hits are summed as two int4 halves"
# Which rows' entries are records, hits or page views, by their block's code (a publisher page's
# row has no block: its views are publisher documents, PUBLISHERS_SQL).
ITEM_CODES = ", ".join(str(BLOCKS.index(block)) for block in ITEM_BLOCKS)
HIT_CODES = ", ".join(
    str(code) for code, (rt, ty) in enumerate(BLOCKS) if rt in RECORD_TYPES and ty not in PER_RECORD_TYPES
)
PAGE_CODE = BLOCKS.index(RECORDSET_PAGE_BLOCK)
ROW_ENTRIES = f"""
  FROM (SELECT s.payload, {BLOCK_CODE} AS block, {{row_columns}}
        FROM {{stats}} s
        WHERE s.date >= %(start)s AND s.date < %(end)s AND {{accepted}} {{row_filter}} OFFSET 0) r
  {{row_join}}
  CROSS JOIN LATERAL (
    -- view/seen of records: record uuid -> recordset uuid, one hit each
    SELECT e.value COLLATE "C" AS rs, count(*)::int AS entries, 0 AS hits_high, count(*)::int AS hits_low
    FROM jsonb_each_text(r.payload) e WHERE r.block IN ({ITEM_CODES}) GROUP BY e.value
    UNION ALL
    -- search/mapping/download: recordset uuid -> hits (3.0 is a valid count)
    SELECT e.key COLLATE "C", 1, (h >> 31)::int, (h & {HALF - 1})::int
    FROM jsonb_each_text(r.payload) e, LATERAL (SELECT e.value::numeric::bigint AS h) hits
    WHERE r.block IN ({HIT_CODES})
    UNION ALL
    -- a recordset page's view: recordset uuid -> (not read), one hit each
    SELECT e.key COLLATE "C", 1, 0, 1 FROM jsonb_object_keys(r.payload) e(key) WHERE r.block = {PAGE_CODE}
  ) per_row"""
# Geocode and query lists are [rank, hits] pairs: a rank names an entry of the day's geocode or query
# table. The block's sums of entries and hits are its count and total when every entry has a value
# (geocodes: {} when unknown).
CELL_LISTS = f"""
SELECT * FROM (
  SELECT rs, {BLOCK_NAMES}, '{{kind}}',
         json_agg(CASE WHEN high = 0 THEN json_build_array(rank, low)
                       ELSE json_build_array(rank, high::numeric * {HALF} + low) END)::text,
         sum(entries)::bigint, sum(high)::numeric * {HALF} + sum(low)
  FROM (SELECT rs, block, t.rank, sum(entries) AS entries, sum(hits_high) AS high, sum(hits_low) AS low
        {{row_entries}}
        GROUP BY rs, block, t.rank) cells
  GROUP BY rs, block
  OFFSET 0) lists
ORDER BY rs
"""

# A row's geocode as the text it is grouped by: {} when unknown (NULL or JSON null).
GEOCODE_TEXT = "CASE WHEN jsonb_typeof(s.ip_geocode) = 'object' THEN s.ip_geocode::text ELSE '{}' END"
# The day's distinct geocodes in byte order: their position in this list is their code. The
# geocodes stream computes the same list from the same snapshot, so both sides agree on the codes
# without sending the texts back; Python ranks them by their canonical JSON (the documents' order)
# and sends only the rank of each code (%(geocode_ranks)s, one int each).
DAY_GEOCODES = f"""
SELECT DISTINCT {GEOCODE_TEXT.replace("{}", "{{}}")} COLLATE "C" AS geo
FROM {{stats}} s WHERE s.date >= %(start)s AND s.date < %(end)s AND {{accepted}}"""
GEOCODE_TABLE_SQL = f"SELECT geo FROM ({DAY_GEOCODES}) d ORDER BY geo"
GEOCODES_SQL = f"""
WITH day_geocodes AS (
  SELECT geo, (%(geocode_ranks)s::int4[])[row_number() OVER (ORDER BY geo)] AS rank
  FROM ({DAY_GEOCODES}) d)
{CELL_LISTS.replace("{kind}", "geocodes")}"""
GEOCODE_ROWS = {
    "row_columns": f"{GEOCODE_TEXT} AS geo",
    "row_filter": "",
    "row_join": "JOIN day_geocodes t ON t.geo = r.geo",
}
# The day's queries (views are not broken down by query; a row without a query, or whose query
# is not in the queries table, has no query cell), ranked by hash in byte order, which is how
# documents break ties; the queries stream computes the same ranks from the same snapshot. A query
# is its hash: where the table does not make hashes unique, query ids of one hash share its rank
# (dense_rank), so their hits add up in one entry, as the rules count them.
DAY_QUERIES = """
SELECT q.id, q.query_hash, dense_rank() OVER (ORDER BY q.query_hash COLLATE "C") AS rank
FROM {queries} q
WHERE q.query_hash IS NOT NULL AND q.id IN (
  SELECT s.query_id FROM {stats} s
  WHERE s.date >= %(start)s AND s.date < %(end)s AND {accepted} AND s.type <> 'view')"""
QUERY_TABLE_SQL = f"SELECT DISTINCT ON (rank) query_hash FROM ({DAY_QUERIES}) d ORDER BY rank"
QUERIES_SQL = f"""
WITH day_queries AS ({DAY_QUERIES})
{CELL_LISTS.replace("{kind}", "queries")}"""
QUERY_ROWS = {
    "row_columns": "s.query_id",
    "row_filter": "AND s.type <> 'view' AND s.query_id IS NOT NULL",
    "row_join": "JOIN day_queries t ON t.id = r.query_id",
}

# A publisher page's views of the day by publisher and geocode (few: one row per page view).
PUBLISHERS_SQL = f"""
SELECT e.key COLLATE "C", r.geo, count(*)
FROM (SELECT s.payload, {GEOCODE_TEXT.replace("{}", "{{}}")} AS geo FROM {{stats}} s
      WHERE s.date >= %(start)s AND s.date < %(end)s AND s.record_type = '{PUBLISHER_BLOCK[0]}'
        AND {{accepted}} OFFSET 0) r
CROSS JOIN LATERAL jsonb_object_keys(r.payload) e(key)
GROUP BY 1, 2"""

# The day's reading transactions are idle by design while the day is written: the exporting one
# until the day is done, each stream between the batches it has fetched and their use. A portal's
# idle_in_transaction_session_timeout (a guard against forgotten sessions) cut them mid-day: the day
# was published, then the run failed with a traceback (connection already closed).
HOLDING_THE_SNAPSHOT = "SET LOCAL idle_in_transaction_session_timeout = 0"

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
    HOLDING_THE_SNAPSHOT,
)

# Every skipped id up to a cap: with them the cell queries skip rows by id instead of repeating
# the (costly) jsonpath checks on every row.
# Accepted rows are counted by record_type (the day's kinds).
SKIPS_SQL = """
SELECT reason, CASE WHEN reason IS NULL THEN record_type END, count(*),
       (array_agg(id ORDER BY id) FILTER (WHERE reason IS NOT NULL))[1:{cap}]
FROM (SELECT s.id, s.record_type, {reason} AS reason FROM {stats} s LEFT JOIN (
        SELECT DISTINCT s.id FROM {stats} s CROSS JOIN LATERAL {entries}
        WHERE s.date >= %(start)s AND s.date < %(end)s AND {long_entry}) long_ids ON long_ids.id = s.id
      LEFT JOIN (
        SELECT s.id FROM {stats} s CROSS JOIN LATERAL {geocode_entries}
        WHERE s.date >= %(start)s AND s.date < %(end)s
        GROUP BY s.id HAVING {geocode_bytes} > {max_geocode_bytes}) big_geocodes ON big_geocodes.id = s.id
      WHERE s.date >= %(start)s AND s.date < %(end)s) r
GROUP BY 1, 2"""

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


# Two probes of the date index: is there a row before the window, and one after it?
ROWS_AROUND_SQL = """
SELECT EXISTS (SELECT FROM {stats} WHERE date < %(start)s),
       EXISTS (SELECT FROM {stats} WHERE date >= %(end)s)"""


def quoted_name(name: str, conn: psycopg2.extensions.connection) -> str:
    """A configured table name (`stats` or `schema.stats`, validated by config) quoted as given,
    so case and reserved words are kept."""
    return sql.Identifier(*name.split(".")).as_string(conn)


def set_time_zone(conn: psycopg2.extensions.connection, zone: str) -> None:
    """Day bounds are dates: PostgreSQL turns them into instants in the session's time zone when
    `date` is timestamptz, so the session's zone is source.timezone."""
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE %s", (zone,))
    except psycopg2.DataError as exc:
        conn.close()
        raise ConfigError(
            [f"source.timezone: the telemetry database does not know {zone!r} ({str(exc).strip()})"]
        ) from None
    conn.autocommit = autocommit


def read_error(exc: psycopg2.Error, what: str, dsn: str) -> IdbStatsError:
    """A failed telemetry query as the operator should see it: unreachable (exit 4) only when the
    connection failed; a row PostgreSQL could not process is a data problem (exit 6); a missing
    table or column, or a statement timeout of the telemetry database, is a configuration problem
    (exit 3). Classified by SQLSTATE only: the message is in the server's lc_messages language.
    A query cancelled at this process's request (a signal) raises Interrupted."""
    detail = scrub(one_line(exc), dsn)
    code = exc.pgcode or ""
    if code[:2] in ("22", "54"):  # data exception, program limit exceeded
        return DataQualityError(
            f"{what}: a telemetry row could not be processed ({detail}); nothing was written for "
            "this day. The rules should have skipped it: please report it with this message"
        )
    if code[:2] == "42":  # undefined table or column, no privilege
        return ConfigError([f"source: {what}: {detail} (check source.stats_table and source.queries_table)"])
    if code == psycopg2.errorcodes.QUERY_CANCELED:
        # Cancelled at this process's request (a signal): the run is interrupted, not failed.
        interrupt.check()
    if interrupt.cancelled_by_server(exc):
        # A limit of the telemetry database (its role's or database's statement_timeout), not a
        # connection lost: it cancels the same query every run until it is lifted.
        return ConfigError(
            [
                f"source: {what}: the telemetry database cancelled the query at its statement_timeout "
                f"(or an administrator did: SQLSTATE 57014; {detail}); lift it for idb-stats' role "
                "there (ALTER ROLE ... SET statement_timeout = 0)"
            ]
        )
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return SourceUnreachable(f"{what}: the telemetry database went away: {detail}")
    return DataQualityError(f"{what}: the telemetry database refused the query: {detail}")


class _CellStream:
    """One aggregation query on its own connection, in the day's snapshot, read through a cursor.

    Each stream fetches from a thread of its own, one batch ahead of the rows being used: the
    server's work for the next rows (the whole aggregation before the first, then building the
    lists of the next groups) overlaps with Python building documents from these, and the three
    streams' first fetches run at once and share the cores. Fetched one at a time, the wide day
    (issue 18) waited 4.4 s in fetches after the first.
    """

    def __init__(self, dsn: str, snapshot: str, query: str, zone: str) -> None:
        self._conn = connect(dsn, "telemetry")
        try:
            psycopg2.extensions.register_type(NUMERIC_AS_INT, self._conn)
            self._conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with self._conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                settings = (*STREAM_SETTINGS, cur.mogrify("SET LOCAL TIME ZONE %s", (zone,)).decode())
                cur.execute("; ".join(settings))  # one round trip
            self._cursor = self._conn.cursor(name="cells")
            self._cursor.execute(query)
        except BaseException:
            self._conn.close()
            raise
        self._fetcher = ThreadPoolExecutor(1, thread_name_prefix="cells")
        self._next = self._fetcher.submit(self._cursor.fetchmany, FETCH_ROWS)

    def cells(self) -> Iterator[Cell]:
        make = Cell._make
        while rows := self._next.result():
            self._next = self._fetcher.submit(self._cursor.fetchmany, FETCH_ROWS)
            yield from map(make, rows)

    def close(self) -> None:
        # A fetch may still be running (another stream failed, or the rows were not all used):
        # cancel it on the server rather than wait for its aggregation to finish.
        # A fetch not started yet is dropped; a running one is cancelled.
        if not self._next.cancel() and not self._next.done():
            self._conn.cancel()
        self._fetcher.shutdown(wait=True)
        self._conn.close()


@dataclass
class PostgresTelemetryDay:
    report: SkipReport
    fingerprint: fingerprint.Fingerprint | None
    geocodes: list[str]
    queries: list[str]
    publisher_views: list[tuple[str, str, int]]
    counter: CounterDay
    _streams: Callable[[], Iterator[Cell]]
    _around: Callable[[], tuple[bool, bool]]

    def cells(self) -> Iterator[Cell]:
        return self._streams()

    def rows_around(self) -> tuple[bool, bool]:
        return self._around()


class PostgresTelemetrySource:
    def __init__(self, config: Config):
        self._dsn = config.source_dsn
        self._zone = config.timezone
        self._conn = connect(config.source_dsn, "telemetry")
        self._configured_names = (config.stats_table, config.queries_table)
        # A connection lost here is the telemetry database gone (exit 4), as anywhere else: from
        # the session's first statement (its time zone) on, not only while checking the tables.
        with self._reading("opening the telemetry database"):
            set_time_zone(self._conn, self._zone)
            self._conn.set_session(readonly=True, autocommit=False)
            self._names = {
                "stats": quoted_name(config.stats_table, self._conn),
                "queries": quoted_name(config.queries_table, self._conn),
            }
            self._stats_kind = self._require_tables()
            with self._conn, self._conn.cursor() as cur:
                self._has_ip = counter.has_ip(cur, self._names["stats"])
        if not self._has_ip:
            counter.warn_without_ip(config.stats_table)
        self._skips_sql = SKIPS_SQL.format(
            cap=max(SKIPPED_IDS_CAP, EXAMPLE_IDS),
            reason=SKIP_REASON_TEMPLATE.format(
                oversized="long_ids.id IS NOT NULL", big_geocode="big_geocodes.id IS NOT NULL"
            ),
            entries=PAYLOAD_ENTRIES,
            long_entry=LONG_ENTRY,
            geocode_entries=GEOCODE_ENTRIES,
            geocode_bytes=GEOCODE_BYTES,
            max_geocode_bytes=MAX_GEOCODE_BYTES,
            **self._names,
        )
        self._dates_sql = HARVEST_DATES_SQL.format(**self._names)
        self._around_sql = ROWS_AROUND_SQL.format(**self._names)
        row_hash = fingerprint.row_hash(self._stats_kind)
        self._fingerprint_sql = fingerprint.DAY_SQL.format(row_hash=row_hash, **self._names)
        self._fingerprints_sql = fingerprint.DAYS_SQL.format(row_hash=row_hash, **self._names)

    def _require_tables(self) -> str:
        """A database without the telemetry tables, or not in UTF8, is a configuration mistake,
        found before the run takes its lock or creates the store's schema in the wrong database.
        Returns the kind of relation the rows are read from (pg_class.relkind: table, view, ...)."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                "SELECT current_database(), current_setting('server_encoding'), "
                "(SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)), "
                "to_regclass(%s) IS NULL, to_regclass(%s) IS NULL",
                (self._names["stats"], self._names["stats"], self._names["queries"]),
            )
            database, encoding, stats_kind, *absent = cur.fetchone() or ("", "UTF8", "r", False, False)
        if encoding != "UTF8":
            # The rules measure ids in UTF-8 bytes and order them by code point; PostgreSQL measures
            # and orders (COLLATE "C") the database's bytes. In WIN1252 "€" sorts before "é", so
            # the streams' recordset order is not Python's and a recordset's cells came apart into
            # two documents; in LATIN1 "é" * 251 is 251 bytes, not 502, and passed as an id.
            self._conn.close()
            raise ConfigError(
                [
                    f"source.dsn: database {database} is encoded in {encoding}; idb-stats reads "
                    "telemetry from UTF8 databases only (ids are measured and ordered as UTF-8)"
                ]
            )
        missing = [
            f"{table} ({setting})"
            for table, setting, gone in zip(
                self._configured_names, ("source.stats_table", "source.queries_table"), absent, strict=True
            )
            if gone
        ]
        if missing:
            self._conn.close()
            raise ConfigError(
                [
                    f"source.dsn: database {database} has no table {', '.join(missing)}; point "
                    "source.dsn at the portal's telemetry database or name its tables in [source]"
                ]
            )
        return str(stats_kind)

    @contextlib.contextmanager
    def read_day(self, harvest_date: date) -> Iterator[PostgresTelemetryDay]:
        """The skip report and the cells of a day, both read from one snapshot of the tables."""
        start, end = event_window(harvest_date)
        window = {"start": start, "end": end}
        self._conn.set_session(isolation_level="REPEATABLE READ")
        try:
            reading = self._reading(f"reading the telemetry of {harvest_date}")
            with reading, self._conn, self._conn.cursor() as cur:
                # The exporting transaction stays open until every stream has imported its snapshot.
                cur.execute(HOLDING_THE_SNAPSHOT)
                cur.execute("SELECT pg_export_snapshot()")
                (snapshot,) = cur.fetchone() or ("",)
                report, accepted = self._skip_report(cur, window)
                names = {"accepted": accepted, **self._names}
                ranks, geocodes, query_hashes = self._day_tables(cur, names, window)
                cur.execute(PUBLISHERS_SQL.format(**names), window)
                publisher_views = cur.fetchall()
                counter_day = self._counter(cur, accepted, window)
                # One array literal, not psycopg2's ARRAY[...] of a constant per geocode: the
                # server parsed 1,000,000 of those in 1.0 s and 350 MB, the literal in 0.06 s.
                params = {**window, "geocode_ranks": "{" + ",".join(map(str, ranks)) + "}"}
                statements = (
                    ITEMS_SQL.format(**names),
                    GEOCODES_SQL.format(row_entries=ROW_ENTRIES.format(**GEOCODE_ROWS, **names), **names),
                    QUERIES_SQL.format(row_entries=ROW_ENTRIES.format(**QUERY_ROWS, **names), **names),
                )
                queries = [cur.mogrify(statement, params).decode() for statement in statements]
                # In the same snapshot as the cells, so the fingerprint is that of the rows counted.
                cur.execute(fingerprint.SETTINGS)
                cur.execute(self._fingerprint_sql, window)
                day_fingerprint = fingerprint.from_row(cur.fetchone() or (0,) * 6)
                yield PostgresTelemetryDay(
                    report,
                    day_fingerprint,
                    geocodes,
                    query_hashes,
                    publisher_views,
                    counter_day,
                    lambda: self._merged(snapshot, queries, f"aggregating {harvest_date}"),
                    lambda: self._rows_around(cur, window, harvest_date),
                )
        finally:
            if not self._conn.closed:  # else the lost connection's error is the one to report
                self._conn.set_session(isolation_level="DEFAULT")

    def _rows_around(self, cur: Any, window: dict[str, Any], harvest_date: date) -> tuple[bool, bool]:
        """Asked only of a day without rows: on a view without an index on `date` the probes may
        read the whole table."""
        with self._reading(f"looking for rows around {harvest_date}"):
            cur.execute(self._around_sql, window)
            before, after = cur.fetchone() or (False, False)
        return bool(before), bool(after)

    def _counter(self, cur: Any, accepted: str, window: dict[str, Any]) -> CounterDay:
        """The day's COUNTER-style figures (counter.py), in the cursor's snapshot; None without an
        `ip` column. accepted: the SQL condition keeping the rows the rules accept."""
        if not self._has_ip:
            return None
        return counter.read_figures(cur, counter.counter_sql(self._names["stats"], accepted), window)

    def _skip_report(self, cur: Any, window: dict[str, Any]) -> tuple[SkipReport, str]:
        """The day's skip report, and the SQL condition that keeps the rows the rules accept."""
        cur.execute(SKIPS_WORK_MEM)
        cur.execute(self._skips_sql, window)
        report, skipped_ids = SkipReport(), []
        for reason, kind, rows, ids in cur:
            report.rows += rows
            if reason is not None:
                report.reasons[reason] = SkipReason(rows, list(ids[:EXAMPLE_IDS]))
                skipped_ids += ids
            else:
                report.kinds[kind] = rows
        if report.skipped == 0:
            return report, "true"
        if report.skipped <= SKIPPED_IDS_CAP:
            return report, cur.mogrify("s.id <> ALL(%s)", (sorted(skipped_ids),)).decode()
        return report, f"({SKIP_REASON_SQL}) IS NULL"

    def _day_tables(
        self, cur: Any, names: dict[str, str], window: dict[str, Any]
    ) -> tuple[list[int], list[str], list[str]]:
        """The rank of each of the day's geocode codes and the geocode of each rank, and the day's
        query hashes in rank order: what the geocodes and queries streams name by number."""
        cur.execute(GEOCODE_TABLE_SQL.format(**names), window)
        ranks, geocodes = geocode_table([geo for (geo,) in cur])
        cur.execute(QUERY_TABLE_SQL.format(**names), window)
        return ranks, geocodes, [query_hash for (query_hash,) in cur]

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        try:
            yield
        except psycopg2.Error as exc:
            raise read_error(exc, what, self._dsn) from None

    def _merged(self, snapshot: str, queries: list[str], what: str) -> Iterator[Cell]:
        """The cells of every kind, computed at once on separate connections, merged by recordset."""
        streams: list[_CellStream] = []
        try:
            with self._reading(what):
                streams += (_CellStream(self._dsn, snapshot, query, self._zone) for query in queries)
                # Cells are tuples led by the recordset id, so their own order is the merge order.
                yield from heapq.merge(*(stream.cells() for stream in streams))
        finally:
            for stream in streams:
                stream.close()

    def rows_at(self, moment: date) -> list[TelemetryRow]:
        """The rows stamped exactly at the midnight that starts `moment` (in the telemetry's time
        zone): the events the original collector's open window left out of every day (verify)."""
        statement = (
            "SELECT s.id, s.type, s.record_type, q.query_hash, s.ip_geocode::text, s.payload::text "
            "FROM {stats} s LEFT JOIN {queries} q ON q.id = s.query_id WHERE s.date = %(at)s ORDER BY s.id"
        ).format(**self._names)
        with self._reading("reading the rows at midnight"), self._conn, self._conn.cursor() as cur:
            cur.execute(statement, {"at": moment})
            return [TelemetryRow(r[0], r[1], r[2], r[3], load_json(r[4]), load_json(r[5])) for r in cur]

    def harvest_dates(self) -> list[date]:
        with self._reading("listing the days with telemetry"), self._conn, self._conn.cursor() as cur:
            cur.execute(self._dates_sql)
            return [row[0] for row in cur]

    def fingerprints(self, days: list[date]) -> dict[date, fingerprint.Fingerprint | None]:
        """The current fingerprint of each of these harvest dates (None: no rows), one grouped query."""
        if not days:
            return {}
        with self._reading("re-checking published days"), self._conn, self._conn.cursor() as cur:
            cur.execute(fingerprint.SETTINGS)
            cur.execute(self._fingerprints_sql, fingerprint.days_params(days))
            found = {row[0]: fingerprint.from_row(row[1:]) for row in cur}
        return {day: found.get(day) for day in days}

    def close(self) -> None:
        self._conn.close()
