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
    SKIP_REASONS,
    UNQUERIED_TYPES,
    Cell,
    CounterDay,
    SkipReason,
    SkipReport,
    event_window,
)
from .pg import NUMERIC_AS_INT, connect, name_phase, one_line
from .rules import TelemetryRow, load_json
from .secrets import scrub
from .sqltext import table, words

EXAMPLE_IDS = 5
SKIPPED_IDS_CAP = 50_000
# A row may hold a block's whole item list (megabytes for a busy recordset), so fetches are
# small: 5,000 rows at a time held a third of a day's lists, 30 MB more than 100 rows do. With
# three streams of lists (items, geocodes, queries) 100 rows each put collect-stats at 98 MB on
# today's day of 50,000 rows and 146 MB on the wide one; 20 rows each at 67 MB and 103 MB.
FETCH_ROWS = 20


# The row kinds in SQL, from the model's vocabulary.
IS_RECORD_ROW = sql.SQL("s.record_type IN ({})").format(words(RECORD_TYPES))
IS_PAGE_ROW = sql.SQL("s.record_type IN ({})").format(words(PAGE_TYPES))
IS_PER_RECORD = sql.SQL("{} AND s.type IN ({})").format(IS_RECORD_ROW, words(PER_RECORD_TYPES))
IS_HITS = sql.SQL("{} AND s.type NOT IN ({})").format(IS_RECORD_ROW, words(PER_RECORD_TYPES))
# model.UNQUERIED_TYPES: a view has no query breakdown.
HAS_QUERY_BREAKDOWN = sql.SQL("s.type NOT IN ({})").format(words(UNQUERIED_TYPES))


def _jsonpath_exists(column: str, path: str) -> sql.Composed:
    """A jsonpath match on a column. jsonpath runs in strict mode, as lax mode would unwrap [5]
    into 5; it is silent, so a path applied to a non-object is no match instead of an error."""
    return sql.SQL("jsonb_path_exists({}, {}, '{{}}', true)").format(sql.SQL(column), sql.Literal(path))


def skip_conditions(oversized: sql.Composable, big_geocode: sql.Composable) -> dict[str, sql.Composable]:
    """The condition of each skip reason (model.SKIP_REASONS): rules.skip_reason in SQL, check for
    check. Apart from the id and geocode lengths, only reads columns of the stats row, so no payload
    is expanded for it. jsonpath cannot measure a string, so the two lengths are given by the
    caller: as joins for the skip report, as subqueries for the self-contained form."""
    return {
        "unknown_record_type": sql.SQL("s.record_type IS NULL OR s.record_type NOT IN ({})").format(
            words(RECORD_TYPES + PAGE_TYPES)
        ),
        "unknown_type": sql.SQL("s.type IS NULL OR s.type NOT IN ({})\n    OR ({} AND s.type <> {})").format(
            words(EVENT_TYPES), IS_PAGE_ROW, sql.Literal(PAGE_EVENT)
        ),
        "geocode_not_object": sql.SQL(
            "s.ip_geocode IS NOT NULL AND jsonb_typeof(s.ip_geocode) NOT IN ('object', 'null')"
        ),
        "bad_geocode_value": _jsonpath_exists("s.ip_geocode", 'strict $.* ? (@.type() != "string")'),
        "oversized_geocode": big_geocode,
        "payload_not_object": sql.SQL("s.payload IS NULL OR jsonb_typeof(s.payload) <> 'object'"),
        "empty_key": sql.SQL("s.payload ? ''"),
        "bad_recordset_value": sql.SQL("{} AND {}").format(
            IS_PER_RECORD, _jsonpath_exists("s.payload", 'strict $.* ? (@.type() != "string" || @ == "")')
        ),
        "bad_hit_count": sql.SQL("{} AND {}").format(
            IS_HITS,
            _jsonpath_exists(
                "s.payload",
                f'strict $.* ? (@.type() != "number" || @ < 0 || @ > {MAX_HITS} || @.floor() != @)',
            ),
        ),
        "oversized_id": oversized,
    }


def skip_reason(oversized: sql.Composable, big_geocode: sql.Composable) -> sql.Composed:
    """Why a row is skipped (a model.SKIP_REASONS word), or NULL when the rules accept it: the
    conditions checked in the rules' order."""
    conditions = skip_conditions(oversized, big_geocode)
    return sql.SQL("\nCASE\n{}\nEND").format(
        sql.SQL("\n").join(
            sql.SQL("  WHEN {}\n    THEN {}").format(conditions[reason], sql.Literal(reason))
            for reason in SKIP_REASONS
        )
    )


# An entry holding an id longer than MAX_ID_BYTES: a key, or a view/seen value of records
# (a recordset id; other values are hit counts, and a page view's value is not read). The skip
# report finds such rows with a join, which keeps its scan parallel: as a subquery inside the
# CASE it took the report from 0.9 s to 4.4 s on 100,000 rows, as the join 2.2 s (both on a loaded
# machine). SKIP_REASON_SQL holds the self-contained form, for the cell queries' fallback and the
# tests.
PAYLOAD_ENTRIES = sql.SQL(
    "jsonb_each_text(CASE WHEN jsonb_typeof(s.payload) = 'object' THEN s.payload END) e"
)
LONG_ENTRY = sql.SQL(
    "(octet_length(e.key) > {max} OR ({per_record} AND octet_length(e.value) > {max}))"
).format(max=sql.Literal(MAX_ID_BYTES), per_record=IS_PER_RECORD)
# A geocode's keys and values together over MAX_GEOCODE_BYTES (its values are strings by then):
# found with a join too, by summing the entries of every row's geocode.
GEOCODE_ENTRIES = sql.SQL(
    "jsonb_each_text(CASE WHEN jsonb_typeof(s.ip_geocode) = 'object' THEN s.ip_geocode END) g"
)
GEOCODE_BYTES = sql.SQL("sum(octet_length(g.key) + octet_length(g.value))")
SKIP_REASON_SQL = skip_reason(
    oversized=sql.SQL("EXISTS (SELECT FROM {} WHERE {})").format(PAYLOAD_ENTRIES, LONG_ENTRY),
    big_geocode=sql.SQL("(SELECT {} FROM {}) > {}").format(
        GEOCODE_BYTES, GEOCODE_ENTRIES, sql.Literal(MAX_GEOCODE_BYTES)
    ),
)

# Which rows the day's statements keep (day_sql's `accepted`), chosen by the skip report: every
# row of a day without skipped rows; on a day with up to SKIPPED_IDS_CAP skipped rows, the rows
# whose id is not one of them (the query parameter %(skipped_ids)s), which spares repeating the
# (costly) jsonpath checks on every row; beyond the cap, the rows SKIP_REASON_SQL accepts.
ACCEPTED_ROWS = {
    "all": sql.SQL("true"),
    "but-skipped-ids": sql.SQL("s.id <> ALL({})").format(sql.Placeholder("skipped_ids")),
    "by-the-rules": sql.SQL("({}) IS NULL").format(SKIP_REASON_SQL),
}

# The day's cells come from three aggregations run at once on three connections: the items, the
# geocodes and the queries (one GROUPING SETS query for all three kinds is a single process and
# several times slower). Each is ordered by recordset in byte order, which is
# Python's str order, so the streams merge without a sort. Recordset and record ids are taken
# COLLATE "C" where they are read, so every sort and grouping on them is bytewise whatever the
# database's collation (a portal's en_US.UTF-8 would compare them with strcoll).
# view/seen payloads map record uuid -> recordset uuid (one entry = one record, one hit);
# search/mapping/download payloads map recordset uuid -> hits.
# A record type and an event type travel as one small int, the block (its position in
# model.BLOCKS: BLOCK_CODE), named again in the lists' rows (BLOCK_NAMES).
BLOCK_CODE = sql.SQL("CASE {} END::int2").format(
    sql.SQL(" ").join(
        sql.SQL("WHEN s.record_type = {} AND s.type = {} THEN {}").format(
            sql.Literal(rt), sql.Literal(ty), sql.Literal(code)
        )
        for code, (rt, ty) in enumerate(BLOCKS)
    )
)
BLOCK_NAMES = sql.SQL("(ARRAY[{}])[block + 1] AS record_type, (ARRAY[{}])[block + 1] AS type").format(
    words(rt for rt, _ in BLOCKS), words(ty for _, ty in BLOCKS)
)
# The window of event times a harvest date covers (model.event_window), as query parameters.
IN_WINDOW = sql.SQL("s.date >= %(start)s AND s.date < %(end)s")


def items_sql(stats: sql.Composable, accepted: sql.Composable) -> sql.Composed:
    """A block's list leaves PostgreSQL as one JSON list of [key, hits] pairs, unranked: the lists
    are built by hashing, planned on their own (OFFSET 0), and only the rows of lists are sorted.
    Sorting every cell to group and rank them in PostgreSQL cost more: 2.5 s against 1.9 s of the
    server's CPU for the wide day's items, 1.4 s more for its geocodes, and 190 MB of temporary
    files for the geocodes of a wide day of 400,000 rows (issue 18). Python ranks them
    (documents.ranked_pairs)."""
    return sql.SQL(
        """
SELECT * FROM (
  SELECT rs, {block_names}, 'items', json_agg(json_build_array(key, n))::text, sum(n)::bigint, sum(n)::bigint
  FROM (SELECT e.value COLLATE "C" AS rs, r.block, e.key, count(*) AS n
        FROM (SELECT s.payload, {block_code} AS block
              FROM {stats} s
              WHERE {in_window} AND {per_record} AND {accepted}
              OFFSET 0) r
        CROSS JOIN LATERAL jsonb_each_text(r.payload) e
        GROUP BY 1, 2, 3) items
  GROUP BY rs, block
  OFFSET 0) lists
ORDER BY rs
"""
    ).format(
        block_names=BLOCK_NAMES,
        block_code=BLOCK_CODE,
        stats=stats,
        in_window=IN_WINDOW,
        per_record=IS_PER_RECORD,
        accepted=accepted,
    )


# Geocode and query cells come from each row's entries summed per recordset: both are columns of
# the row, not of the entry, so a page of seen records collapses into a few (recordset, entries)
# pairs (4.1 M entries into 0.7 M on the default day). The row subquery selects the row's
# block (record type and type as one small int) and the kind's row_columns; OFFSET 0 keeps
# PostgreSQL from flattening it, so they are computed once per row, not per entry.
# Every grouping value is small and by value, so the hash tables hold the most cells before they
# spill (issue 18: 2.4 M cells of the wide day of 400,000 rows spilled 595 MB at work_mem 256 MB):
# - the block as an int2, not two texts; geocodes and queries by rank (below), not their text;
# - hits summed as two int4 halves (hits < 2**53, so each half < 2**31), whose sums are int8 by
#   value; a bigint sum keeps an int128 state allocated per cell. The halves are joined again as
#   numeric, exact beyond bigint (1,100 entries of 2**53 - 1 hits exceed it);
# - entries as int4, for the same reason.
# On the wide day of 200,000 rows the cells' hash table went from 295 MB to 213 MB, and the step
# from 3.4 s to 2.6 s.
HALF = 2**31
assert MAX_HITS < HALF * HALF, "hits are summed as two int4 halves"
# Which rows' entries are records, hits or page views, by their block's code (a publisher page's
# row has no block: its views are publisher documents, publishers_sql).
ITEM_CODES = sql.SQL(", ").join(sql.Literal(BLOCKS.index(block)) for block in ITEM_BLOCKS)
HIT_CODES = sql.SQL(", ").join(
    sql.Literal(code)
    for code, (rt, ty) in enumerate(BLOCKS)
    if rt in RECORD_TYPES and ty not in PER_RECORD_TYPES
)
PAGE_CODE = sql.Literal(BLOCKS.index(RECORDSET_PAGE_BLOCK))


@dataclass(frozen=True)
class CellRows:
    """What the geocode or query cells read of each row, and how they find its rank."""

    kind: str  # the kind of the lists' rows (model.Cell.kind)
    table: sql.Composable  # the day's table of ranks, a CTE
    row_columns: sql.Composable
    row_filter: sql.Composable
    row_join: sql.Composable


def _row_entries(stats: sql.Composable, accepted: sql.Composable, rows: CellRows) -> sql.Composed:
    return sql.SQL(
        """
  FROM (SELECT s.payload, {block_code} AS block, {row_columns}
        FROM {stats} s
        WHERE {in_window} AND {accepted} {row_filter} OFFSET 0) r
  {row_join}
  CROSS JOIN LATERAL (
    -- view/seen of records: record uuid -> recordset uuid, one hit each
    SELECT e.value COLLATE "C" AS rs, count(*)::int AS entries, 0 AS hits_high, count(*)::int AS hits_low
    FROM jsonb_each_text(r.payload) e WHERE r.block IN ({item_codes}) GROUP BY e.value
    UNION ALL
    -- search/mapping/download: recordset uuid -> hits (3.0 is a valid count)
    SELECT e.key COLLATE "C", 1, (h >> 31)::int, (h & {low_mask})::int
    FROM jsonb_each_text(r.payload) e, LATERAL (SELECT e.value::numeric::bigint AS h) hits
    WHERE r.block IN ({hit_codes})
    UNION ALL
    -- a recordset page's view: recordset uuid -> (not read), one hit each
    SELECT e.key COLLATE "C", 1, 0, 1 FROM jsonb_object_keys(r.payload) e(key) WHERE r.block = {page_code}
  ) per_row"""
    ).format(
        block_code=BLOCK_CODE,
        row_columns=rows.row_columns,
        stats=stats,
        in_window=IN_WINDOW,
        accepted=accepted,
        row_filter=rows.row_filter,
        row_join=rows.row_join,
        item_codes=ITEM_CODES,
        low_mask=sql.Literal(HALF - 1),
        hit_codes=HIT_CODES,
        page_code=PAGE_CODE,
    )


def _cell_lists(stats: sql.Composable, accepted: sql.Composable, rows: CellRows) -> sql.Composed:
    """Geocode and query lists are [rank, hits] pairs: a rank names an entry of the day's geocode
    or query table. The block's sums of entries and hits are its count and total when every entry
    has a value (geocodes: {} when unknown)."""
    return sql.SQL(
        """
WITH {table}
SELECT * FROM (
  SELECT rs, {block_names}, {kind},
         json_agg(CASE WHEN high = 0 THEN json_build_array(rank, low)
                       ELSE json_build_array(rank, high::numeric * {half} + low) END)::text,
         sum(entries)::bigint, sum(high)::numeric * {half} + sum(low)
  FROM (SELECT rs, block, t.rank, sum(entries) AS entries, sum(hits_high) AS high, sum(hits_low) AS low
        {row_entries}
        GROUP BY rs, block, t.rank) cells
  GROUP BY rs, block
  OFFSET 0) lists
ORDER BY rs
"""
    ).format(
        table=rows.table,
        block_names=BLOCK_NAMES,
        kind=sql.Literal(rows.kind),
        half=sql.Literal(HALF),
        row_entries=_row_entries(stats, accepted, rows),
    )


# A row's geocode as the text it is grouped by: {} when unknown (NULL or JSON null). Never
# formatted itself, so its braces are single (sql.SQL turns {{ into { only in format).
GEOCODE_TEXT = sql.SQL(
    "CASE WHEN jsonb_typeof(s.ip_geocode) = 'object' THEN s.ip_geocode::text ELSE '{}' END"
)


def _day_geocodes(stats: sql.Composable, accepted: sql.Composable) -> sql.Composed:
    """The day's distinct geocodes in byte order: their position in this list is their code. The
    geocodes stream computes the same list from the same snapshot, so both sides agree on the
    codes without sending the texts back; Python ranks them by their canonical JSON (the
    documents' order) and sends only the rank of each code (%(geocode_ranks)s, one int each)."""
    return sql.SQL(
        """
SELECT DISTINCT {geocode_text} COLLATE "C" AS geo
FROM {stats} s WHERE {in_window} AND {accepted}"""
    ).format(geocode_text=GEOCODE_TEXT, stats=stats, in_window=IN_WINDOW, accepted=accepted)


def _day_queries(stats: sql.Composable, queries: sql.Composable, accepted: sql.Composable) -> sql.Composed:
    """The day's queries (a view has no query breakdown; a row without a query, or whose query is
    not in the queries table, has no query cell), ranked by hash in byte order, which is how
    documents break ties; the queries stream computes the same ranks from the same snapshot. A
    query is its hash: where the table does not make hashes unique, query ids of one hash share
    its rank (dense_rank), so their hits add up in one entry, as the rules count them."""
    return sql.SQL(
        """
SELECT q.id, q.query_hash, dense_rank() OVER (ORDER BY q.query_hash COLLATE "C") AS rank
FROM {queries} q
WHERE q.query_hash IS NOT NULL AND q.id IN (
  SELECT s.query_id FROM {stats} s
  WHERE {in_window} AND {accepted} AND {has_query})"""
    ).format(
        queries=queries, stats=stats, in_window=IN_WINDOW, accepted=accepted, has_query=HAS_QUERY_BREAKDOWN
    )


@dataclass(frozen=True)
class DaySql:
    """The statements that read one day, for one choice of accepted rows (ACCEPTED_ROWS)."""

    geocode_table: sql.Composed
    query_table: sql.Composed
    publishers: sql.Composed
    # The three cell streams, merged by recordset (read_day).
    items: sql.Composed
    geocodes: sql.Composed
    queries: sql.Composed


def day_sql(stats: sql.Composable, queries: sql.Composable, accepted: sql.Composable) -> DaySql:
    day_geocodes = _day_geocodes(stats, accepted)
    day_queries = _day_queries(stats, queries, accepted)
    geocode_rows = CellRows(
        kind="geocodes",
        table=sql.SQL(
            """day_geocodes AS (
  SELECT geo, (%(geocode_ranks)s::int4[])[row_number() OVER (ORDER BY geo)] AS rank
  FROM ({}) d)"""
        ).format(day_geocodes),
        row_columns=sql.SQL("{} AS geo").format(GEOCODE_TEXT),
        row_filter=sql.SQL(""),
        row_join=sql.SQL("JOIN day_geocodes t ON t.geo = r.geo"),
    )
    query_rows = CellRows(
        kind="queries",
        table=sql.SQL("day_queries AS ({})").format(day_queries),
        row_columns=sql.SQL("s.query_id"),
        row_filter=sql.SQL("AND {} AND s.query_id IS NOT NULL").format(HAS_QUERY_BREAKDOWN),
        row_join=sql.SQL("JOIN day_queries t ON t.id = r.query_id"),
    )
    return DaySql(
        geocode_table=sql.SQL("SELECT geo FROM ({}) d ORDER BY geo").format(day_geocodes),
        query_table=sql.SQL("SELECT DISTINCT ON (rank) query_hash FROM ({}) d ORDER BY rank").format(
            day_queries
        ),
        publishers=publishers_sql(stats, accepted),
        items=items_sql(stats, accepted),
        geocodes=_cell_lists(stats, accepted, geocode_rows),
        queries=_cell_lists(stats, accepted, query_rows),
    )


def publishers_sql(stats: sql.Composable, accepted: sql.Composable) -> sql.Composed:
    """A publisher page's views of the day by publisher and geocode (few: one row per page view)."""
    return sql.SQL(
        """
SELECT e.key COLLATE "C", r.geo, count(*)
FROM (SELECT s.payload, {geocode_text} AS geo FROM {stats} s
      WHERE {in_window} AND s.record_type = {publisher_type}
        AND {accepted} OFFSET 0) r
CROSS JOIN LATERAL jsonb_object_keys(r.payload) e(key)
GROUP BY 1, 2"""
    ).format(
        geocode_text=GEOCODE_TEXT,
        stats=stats,
        in_window=IN_WINDOW,
        publisher_type=sql.Literal(PUBLISHER_BLOCK[0]),
        accepted=accepted,
    )


# The day's reading transactions are idle by design while the day is written: the exporting one
# until the day is done, each stream between the batches it has fetched and their use. A portal's
# idle_in_transaction_session_timeout (a guard against forgotten sessions) cut them mid-day: the day
# was published, then the run failed with a traceback (connection already closed).
HOLDING_THE_SNAPSHOT = sql.SQL("SET LOCAL idle_in_transaction_session_timeout = 0")

# The planner guesses 100 entries per payload and so millions of groups; left alone it picks
# sort-based aggregation that spills to disk. Hash aggregation fits in memory by far. A cursor
# gets no parallel workers anyway; the streams are the parallelism. One statement, one round trip;
# the session's time zone is the parameter %(zone)s.
STREAM_SETTINGS = sql.SQL("; ").join(
    [
        sql.SQL("SET LOCAL jit = off"),
        sql.SQL("SET LOCAL enable_sort = off"),
        sql.SQL("SET LOCAL enable_memoize = off"),
        sql.SQL("SET LOCAL work_mem = '256MB'"),
        sql.SQL("SET LOCAL max_parallel_workers_per_gather = 0"),
        # Every row is read: plan for the whole result, not for a cursor's first rows.
        sql.SQL("SET LOCAL cursor_tuple_fraction = 1.0"),
        HOLDING_THE_SNAPSHOT,
        sql.SQL("SET LOCAL TIME ZONE %(zone)s"),
    ]
)


def skips_sql(stats: sql.Composable, cap: int) -> sql.Composed:
    """The day's skip report: rows by reason (NULL: accepted, then counted by record_type, the
    day's kinds), with every skipped id up to `cap`: with them the cell queries skip rows by id
    instead of repeating the (costly) jsonpath checks on every row."""
    return sql.SQL(
        """
SELECT reason, CASE WHEN reason IS NULL THEN record_type END, count(*),
       (array_agg(id ORDER BY id) FILTER (WHERE reason IS NOT NULL))[1:{cap}]
FROM (SELECT s.id, s.record_type, {reason} AS reason FROM {stats} s LEFT JOIN (
        SELECT DISTINCT s.id FROM {stats} s CROSS JOIN LATERAL {entries}
        WHERE {in_window} AND {long_entry}) long_ids ON long_ids.id = s.id
      LEFT JOIN (
        SELECT s.id FROM {stats} s CROSS JOIN LATERAL {geocode_entries}
        WHERE {in_window}
        GROUP BY s.id HAVING {geocode_bytes} > {max_geocode_bytes}) big_geocodes ON big_geocodes.id = s.id
      WHERE {in_window}) r
GROUP BY 1, 2"""
    ).format(
        cap=sql.Literal(cap),
        reason=skip_reason(
            oversized=sql.SQL("long_ids.id IS NOT NULL"), big_geocode=sql.SQL("big_geocodes.id IS NOT NULL")
        ),
        stats=stats,
        entries=PAYLOAD_ENTRIES,
        in_window=IN_WINDOW,
        long_entry=LONG_ENTRY,
        geocode_entries=GEOCODE_ENTRIES,
        geocode_bytes=GEOCODE_BYTES,
        max_geocode_bytes=sql.Literal(MAX_GEOCODE_BYTES),
    )


# The skip report sorts every row of the day by reason (for the ids' order), in two parallel
# workers and the leader. At the default 4 MB each, a wide day of 50,000 rows wrote 30 MB of
# temporary files (issue 18); the sort holds about 600 bytes a row, 120 MB at 200,000 rows.
SKIPS_WORK_MEM = sql.SQL("SET LOCAL work_mem = '256MB'")


def harvest_dates_sql(stats: sql.Composable) -> sql.Composed:
    """A loose index scan: one probe of the date index per day instead of reading every row."""
    return sql.SQL(
        """
WITH RECURSIVE days(day) AS (
  SELECT (SELECT min(date)::date FROM {stats})
  UNION ALL
  SELECT (SELECT min(date)::date FROM {stats} WHERE date >= days.day + 1) FROM days WHERE days.day IS NOT NULL
)
SELECT day + 1 FROM days WHERE day IS NOT NULL"""
    ).format(stats=stats)


def rows_around_sql(stats: sql.Composable) -> sql.Composed:
    """Two probes of the date index: is there a row before the window, and one after it?"""
    return sql.SQL(
        """
SELECT EXISTS (SELECT FROM {stats} WHERE date < %(start)s),
       EXISTS (SELECT FROM {stats} WHERE date >= %(end)s)"""
    ).format(stats=stats)


def rows_at_sql(stats: sql.Composable, queries: sql.Composable) -> sql.Composed:
    """The rows stamped exactly at the instant %(at)s, as rules.TelemetryRow reads them."""
    return sql.SQL(
        "SELECT s.id, s.type, s.record_type, q.query_hash, s.ip_geocode::text, s.payload::text "
        "FROM {stats} s LEFT JOIN {queries} q ON q.id = s.query_id WHERE s.date = %(at)s ORDER BY s.id"
    ).format(stats=stats, queries=queries)


def quoted_name(name: str, conn: psycopg2.extensions.connection) -> str:
    """A configured table name (`stats` or `schema.stats`, validated by config) quoted as given,
    so case and reserved words are kept."""
    return table(name).as_string(conn)


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
                cur.execute(STREAM_SETTINGS, {"zone": zone})
                name_phase(cur, "telemetry", "aggregating the day")
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
            self._stats, self._queries = table(config.stats_table), table(config.queries_table)
            # As text too, for the stream engine's statements (stream.py).
            self._names = {
                "stats": self._stats.as_string(self._conn),
                "queries": self._queries.as_string(self._conn),
            }
            self._stats_kind = self._require_tables()
            with self._conn, self._conn.cursor() as cur:
                self._has_ip = counter.has_ip(cur, self._names["stats"])
        if not self._has_ip:
            counter.warn_without_ip(config.stats_table)
        self._dates_sql = harvest_dates_sql(self._stats)
        self._around_sql = rows_around_sql(self._stats)
        row_hash = fingerprint.row_hash(self._stats_kind)
        self._fingerprint_sql = fingerprint.day_sql(self._stats, row_hash)
        self._fingerprints_sql = fingerprint.days_sql(self._stats, row_hash)

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
                report, accepted, skipped_ids = self._skip_report(cur, window)
                statements = day_sql(self._stats, self._queries, ACCEPTED_ROWS[accepted])
                day_params = {**window, "skipped_ids": skipped_ids}
                ranks, geocodes, query_hashes = self._day_tables(cur, statements, day_params)
                cur.execute(statements.publishers, day_params)
                publisher_views = cur.fetchall()
                counter_day = self._counter(cur, accepted, day_params)
                # One array literal, not psycopg2's ARRAY[...] of a constant per geocode: the
                # server parsed 1,000,000 of those in 1.0 s and 350 MB, the literal in 0.06 s.
                params = {**day_params, "geocode_ranks": "{" + ",".join(map(str, ranks)) + "}"}
                queries = [
                    cur.mogrify(statement, params).decode()
                    for statement in (statements.items, statements.geocodes, statements.queries)
                ]
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

    def _counter(self, cur: Any, accepted: str, params: dict[str, Any]) -> CounterDay:
        """The day's COUNTER-style figures (counter.py), in the cursor's snapshot; None without an
        `ip` column. accepted: how the rows the rules accept are kept (a key of ACCEPTED_ROWS;
        params holds the window and any skipped ids)."""
        if not self._has_ip:
            return None
        return counter.read_figures(cur, counter.counter_sql(self._stats, ACCEPTED_ROWS[accepted]), params)

    def _skip_report(self, cur: Any, window: dict[str, Any]) -> tuple[SkipReport, str, list[int]]:
        """The day's skip report, how the cell queries keep the rows the rules accept (a key of
        ACCEPTED_ROWS) and the skipped ids they leave out by."""
        cur.execute(SKIPS_WORK_MEM)
        cur.execute(skips_sql(self._stats, max(SKIPPED_IDS_CAP, EXAMPLE_IDS)), window)
        report, skipped_ids = SkipReport(), []
        for reason, kind, rows, ids in cur:
            report.rows += rows
            if reason is not None:
                report.reasons[reason] = SkipReason(rows, list(ids[:EXAMPLE_IDS]))
                skipped_ids += ids
            else:
                report.kinds[kind] = rows
        if report.skipped == 0:
            return report, "all", []
        if report.skipped <= SKIPPED_IDS_CAP:
            return report, "but-skipped-ids", sorted(skipped_ids)
        return report, "by-the-rules", []

    def _day_tables(
        self, cur: Any, statements: DaySql, params: dict[str, Any]
    ) -> tuple[list[int], list[str], list[str]]:
        """The rank of each of the day's geocode codes and the geocode of each rank, and the day's
        query hashes in rank order: what the geocodes and queries streams name by number."""
        cur.execute(statements.geocode_table, params)
        ranks, geocodes = geocode_table([geo for (geo,) in cur])
        cur.execute(statements.query_table, params)
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
        with self._reading("reading the rows at midnight"), self._conn, self._conn.cursor() as cur:
            cur.execute(rows_at_sql(self._stats, self._queries), {"at": moment})
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
