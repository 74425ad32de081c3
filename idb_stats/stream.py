"""The streaming telemetry source (collect.engine = "stream"): each row of a day read once.

One `COPY (SELECT …) TO STDOUT` of the day's rows, in one REPEATABLE READ snapshot, is piped
through a FIFO into one DuckDB query that parses each row's JSON, decides whether it can apply
the rules to it exactly (every check of rules.skip_reason passes on values whose reading is
unambiguous: plain integer literals within range, strings, object shapes) and folds the row into
the day's cells in its hash aggregation, the row then dropped. Memory therefore follows the cells,
not the rows; DuckDB's memory limit is set and it spills beyond it into the day's temporary
directory. Every other row (one the rules skip, or one whose values DuckDB would read differently
from rules.load_json, such as 3.0 or 1e2 as hit counts) is left to rules.py itself: its id is kept,
and the row is read again by id in the same snapshot once the pass is over, so the skip report and
those rows' cells come from the reference code. On a day of valid rows that is none.

The cells are then ranked into one JSON list per recordset, block and kind inside DuckDB and
streamed to documents.py in recordset order, as the SQL source (source.py) sends them.
See docs/performance.md (issue 25) for the measurements behind this shape.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from . import fingerprint, rules
from .config import Config
from .documents import geocode_table
from .errors import IdbStatsError
from .model import (
    BLOCKS,
    EVENT_TYPES,
    MAX_GEOCODE_BYTES,
    MAX_HITS,
    MAX_ID_BYTES,
    PAGE_EVENT,
    PAGE_TYPES,
    PER_RECORD_TYPES,
    RECORD_TYPES,
    RECORDSET_PAGE_BLOCK,
    Cell,
    CounterDay,
    SkipReason,
    SkipReport,
    event_window,
)
from .pg import name_phase
from .source import EXAMPLE_IDS, PostgresTelemetrySource

# Kinds of cell in the engine's aggregation: the three of the rules, a row left to rules.py (key:
# its id), the day's row count (checked against the rows COPY sent; rs: the record_type of a row
# the engine accepted) and a publisher page's views (rs: the publisher, key: the geocode).
ITEM, QUERY, GEO, LEFT_TO_RULES, ROW_COUNT, PUBLISHER = range(6)
KIND_LISTS = {ITEM: "items", QUERY: "queries", GEO: "geocodes"}

# A row longer than this (CSV bytes) never reaches DuckDB, whose CSV reader holds buffers of a
# multiple of its longest line (128 MB for 8 MB lines): it is left to rules.py with the others.
# A real row is a few kilobytes (a seen page of 100 records, a search of 1,600 recordsets 70 kB).
MAX_LINE_BYTES = 1 << 20
CSV_BUFFER_BYTES = 4 * MAX_LINE_BYTES
# Rows left to rules.py are read again by id, this many at a time.
RULES_BATCH = 5_000
# DuckDB's own memory, beyond which its aggregation spills to the day's temporary directory.
# The process already holds some 85 MB before the first row (Python with idb_stats, psycopg2 and
# DuckDB imported: 54 MB; a DuckDB connection and its first query: 31 MB more). Lower limits
# were measured on one thread (issue 25): at 100 MB and at 64 MB today's day of 200,000 rows
# fails with DuckDB's out of memory error in the aggregation; 128 MB ran the wide day once at a
# peak of 232 MB (263 MB at 160 MB), too near that edge for a default.
MEMORY_LIMIT = "160MB"
FETCH_ROWS = 20

COPY_SQL = """COPY (SELECT s.id, s.type::text, s.record_type::text, q.query_hash::text,
             s.ip_geocode::text, s.payload::text
      FROM {stats} s LEFT JOIN {queries} q ON q.id = s.query_id
      WHERE s.date >= %(start)s AND s.date < %(end)s) TO STDOUT WITH (FORMAT csv)"""
# The rows left to rules.py, read again in the same snapshot; their geocode also as the text the
# engine groups geocodes by (below), so both kinds of row meet in one cell per geocode.
RULES_ROWS_SQL = """
SELECT s.id, s.type::text, s.record_type::text, q.query_hash::text, s.ip_geocode::text, s.payload::text,
       CASE WHEN jsonb_typeof(s.ip_geocode) = 'object' THEN s.ip_geocode::text ELSE '{{}}' END
FROM {stats} s LEFT JOIN {queries} q ON q.id = s.query_id
WHERE s.date >= %(start)s AND s.date < %(end)s AND s.id = ANY(%(ids)s)
ORDER BY s.id"""


def _sql_tuple(values: tuple[str, ...]) -> str:
    """The model's names as an SQL list of literals (plain words, never user input)."""
    assert all(value.isidentifier() for value in values)
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


# PostgreSQL's COPY CSV: NULL is an unquoted empty field, an empty string a quoted one.
READ_CSV = f"""read_csv({{path}}, header = false, auto_detect = false, delim = ',', quote = '"',
    escape = '"', allow_quoted_nulls = false, max_line_size = {MAX_LINE_BYTES + 1024},
    buffer_size = {CSV_BUFFER_BYTES},
    columns = {{{{'id': 'BIGINT', 'type': 'VARCHAR', 'record_type': 'VARCHAR', 'qh': 'VARCHAR',
                'geo': 'VARCHAR', 'payload': 'VARCHAR'}}}})"""

# The block (record type, event type) as its position in model.BLOCKS, from 0; NULL for a
# publisher page's view (its views go to publisher documents) and for a row the rules skip.
BLOCK = (
    "CASE "
    + " ".join(
        f"WHEN record_type = '{rt}' AND type = '{ty}' THEN {code}" for code, (rt, ty) in enumerate(BLOCKS)
    )
    + " END"
)
IS_PAGE = f"record_type IN {_sql_tuple(PAGE_TYPES)}"
IS_PER_RECORD = f"type IN {_sql_tuple(PER_RECORD_TYPES)}"
# Whether the engine applies the rules to a row itself: only when every check of
# rules.skip_reason passes, decided on values DuckDB reads exactly as rules.load_json does. A
# value's JSON type is yyjson's: UBIGINT only for a plain integer literal that fits 64 bits (jsonb
# prints numbers without exponents: 1e2 is 100, while 3.0 stays 3.0, a DOUBLE), VARCHAR only for
# a string. jsonb's text of an object, and only of an object, starts with "{". strlen counts
# UTF-8 bytes, as rules._utf8_length does. A NULL anywhere (a check that could not be made) is
# not a pass. Keys and values are read once per row (json_keys, and the '$.*' wildcard, in the
# object's order): a MAP of JSON values re-parsed per check cost 2.4 s more of the wide day.
# A page view's values are not read.
FAST = f"""COALESCE(
  ((record_type IN {_sql_tuple(RECORD_TYPES)} AND type IN {_sql_tuple(EVENT_TYPES)})
   OR ({IS_PAGE} AND type = '{PAGE_EVENT}'))
  AND (geo IS NULL OR geo = 'null' OR (starts_with(geo, '{{')
       AND len(list_filter(geo_types, lambda t: t <> 'VARCHAR')) = 0
       AND COALESCE(list_sum(list_transform(geo_keys, lambda k: strlen(k))), 0)
           + COALESCE(list_sum(list_transform(geo_values, lambda v: strlen(v))), 0) <= {MAX_GEOCODE_BYTES}))
  AND starts_with(payload, '{{')
  AND NOT list_contains(keys, '')
  AND len(list_filter(keys, lambda k: strlen(k) > {MAX_ID_BYTES})) = 0
  AND CASE WHEN {IS_PAGE} THEN true
      WHEN {IS_PER_RECORD}
      THEN len(list_filter(types, lambda t: t <> 'VARCHAR')) = 0 AND NOT list_contains(vals, '')
           AND len(list_filter(vals, lambda v: strlen(v) > {MAX_ID_BYTES})) = 0
      ELSE len(list_filter(types, lambda t: t <> 'UBIGINT')) = 0
           AND len(list_filter(vals, lambda v: TRY_CAST(v AS UBIGINT) <= {MAX_HITS})) = len(vals)
  END, false)"""
# The cells of a row, as rules.row_cells states them, one struct per (kind, recordset, key):
# view/seen of records add 1 per record to its item and, summed per recordset within the row, to
# the row's geocode and (seen) query; search/mapping/download add the hits of each recordset; a
# recordset page's view adds 1 to that recordset's geocode (block recordsets.view), a publisher
# page's view 1 to that publisher's geocode (kind PUBLISHER, no block).
CELL = "{'kind': %s, 'rs': %s, 'key': %s, 'entries': %s, 'hits': %s}"
ROW_CELLS = f"""
CASE
  WHEN NOT fast THEN [{CELL % (LEFT_TO_RULES, "NULL", "id::VARCHAR", 0, 0)}]
  WHEN record_type = '{RECORDSET_PAGE_BLOCK[0]}'
    THEN list_transform(keys, lambda k: {CELL % (GEO, "k", "geo_key", 1, 1)})
  WHEN {IS_PAGE} THEN list_transform(keys, lambda k: {CELL % (PUBLISHER, "k", "geo_key", 1, 1)})
  WHEN {IS_PER_RECORD} THEN list_concat(
    list_transform(keys, lambda k, i: {CELL % (ITEM, "vals[i]", "k", 1, 1)}),
    list_transform(map_entries(list_aggregate(vals, 'histogram')),
                   lambda r: {CELL % (GEO, "r.key", "geo_key", "r.value", "r.value")}),
    CASE WHEN qh IS NULL OR type = 'view' THEN []
         ELSE list_transform(map_entries(list_aggregate(vals, 'histogram')),
                             lambda r: {CELL % (QUERY, "r.key", "qh", "r.value", "r.value")}) END)
  ELSE list_concat(
    list_transform(keys, lambda k, i: {CELL % (GEO, "k", "geo_key", 1, "vals[i]::UBIGINT")}),
    CASE WHEN qh IS NULL THEN []
         ELSE list_transform(keys, lambda k, i: {CELL % (QUERY, "k", "qh", 1, "vals[i]::UBIGINT")}) END)
END"""
# Every row also adds one to the row count, under its record_type when the engine accepted it
# (the day's kinds).
AGGREGATE_SQL = f"""
CREATE TABLE cells AS
SELECT c.kind::UTINYINT AS kind, c.rs, block::UTINYINT AS block, c.key,
       sum(c.entries)::HUGEINT AS entries, sum(c.hits)::HUGEINT AS hits
FROM (
  SELECT block,
         unnest(list_append({ROW_CELLS},
                            {CELL % (ROW_COUNT, "CASE WHEN fast THEN record_type END", "NULL", 1, 0)})) AS c
  FROM (
    SELECT *, CASE WHEN fast THEN {BLOCK} END AS block
    FROM (
      SELECT *, {FAST} AS fast
      FROM (
        SELECT id, type, record_type, qh, geo, payload,
               json_keys(payload) AS keys, json_type(payload, '$.*') AS types,
               json_extract_string(payload, '$.*') AS vals,
               json_keys(geo) AS geo_keys, json_type(geo, '$.*') AS geo_types,
               json_extract_string(geo, '$.*') AS geo_values,
               CASE WHEN geo IS NULL OR geo = 'null' THEN '{{}}' ELSE geo END AS geo_key
        FROM {READ_CSV.format(path="$path")})))
)
GROUP BY ALL"""

# Rows the engine accepted, by record_type (rules.py's accepted ones are added to these).
ACCEPTED_SQL = f"SELECT rs, sum(entries) FROM cells WHERE kind = {ROW_COUNT} AND rs IS NOT NULL GROUP BY rs"
# The day's publisher page views: (publisher, geocode text, views), for documents.publisher_documents.
PUBLISHER_VIEWS_SQL = f"SELECT rs, key, sum(entries) FROM cells WHERE kind = {PUBLISHER} GROUP BY rs, key"
# The day's query hashes in byte order (DuckDB compares strings bytewise, which is code point
# order, Python's): a query's rank is its position here, from 1.
QUERY_RANKS_SQL = f"""
CREATE TABLE query_ranks AS
SELECT key, row_number() OVER (ORDER BY key) AS rank
FROM (SELECT DISTINCT key FROM cells WHERE kind = {QUERY})"""
# Cells per recordset, in recordset order: the lists are built a range of recordsets at a time.
RECORDSET_SIZES_SQL = (
    f"SELECT rs, count(*) FROM cells WHERE kind IN ({ITEM}, {QUERY}, {GEO}) GROUP BY rs ORDER BY rs"
)
# About this many cells' lists are built at once. DuckDB's list aggregate does not spill: all the
# wide day's lists at once (3.1 M cells, 169 MB of documents) ran out of its 160 MB.
LIST_CELLS = 200_000
# One unranked JSON list of [key, hits] pairs per recordset, block and kind, in recordset order:
# a record's id, or the rank of a query or geocode in the day's tables. documents.build_document
# ranks them. A "geocodes" list's entries and hits are its block's count and total. Written by
# string_agg (an item's id escaped by to_json): 2.9 s of CPU for the wide day's lists against
# 4.1 s with to_json(list(json_array(...))).
LISTS_SQL = f"""
SELECT c.rs, c.block, c.kind,
       '[' || string_agg('[' || CASE c.kind WHEN {ITEM} THEN to_json(c.key)::VARCHAR
                                     WHEN {QUERY} THEN q.rank::VARCHAR ELSE g.rank::VARCHAR END
                         || ',' || c.hits::VARCHAR || ']', ',') || ']',
       sum(c.entries), sum(c.hits)
FROM cells c
LEFT JOIN query_ranks q ON c.kind = {QUERY} AND q.key = c.key
LEFT JOIN geocode_ranks g ON c.kind = {GEO} AND g.key = c.key
WHERE c.kind IN ({ITEM}, {QUERY}, {GEO}) AND c.rs BETWEEN $first AND $last
GROUP BY c.rs, c.block, c.kind
ORDER BY c.rs"""


class EngineError(IdbStatsError):
    """The engine and the rows COPY sent disagree: a bug, reported rather than published."""


class _RowWriter:
    """COPY's sink (psycopg2 calls write once per row): rows to the FIFO DuckDB reads, but a row
    too long for its CSV reader, which is left to rules.py by id."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self.rows = 0
        self.too_long: list[int] = []

    def write(self, row: bytes) -> None:
        self.rows += 1
        if len(row) > MAX_LINE_BYTES:
            self.too_long.append(int(row[: row.index(b",")]))
        else:
            self._pipe.write(row)


@dataclass
class _Copy:
    """COPY of the day's rows into a FIFO, from a thread of its own while DuckDB reads it."""

    cursor: Any
    statement: str
    fifo: Path
    rows: int = 0
    too_long: list[int] = field(default_factory=list)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.fifo.open("wb", buffering=1 << 20) as pipe:
                writer = _RowWriter(pipe)
                self.cursor.copy_expert(self.statement, writer)
            self.rows, self.too_long = writer.rows, writer.too_long
        except BaseException as exc:
            self.error = exc


@dataclass
class StreamTelemetryDay:
    report: SkipReport
    fingerprint: fingerprint.Fingerprint | None
    geocodes: list[str]
    queries: list[str]
    publisher_views: list[tuple[str, str, int]]
    counter: CounterDay
    _engine: duckdb.DuckDBPyConnection
    _around: Callable[[], tuple[bool, bool]]

    def rows_around(self) -> tuple[bool, bool]:
        return self._around()

    def cells(self) -> Iterator[Cell]:
        kinds = KIND_LISTS
        for first, last in recordset_ranges(self._engine.execute(RECORDSET_SIZES_SQL).fetchall(), LIST_CELLS):
            result = self._engine.execute(LISTS_SQL, {"first": first, "last": last})
            while rows := result.fetchmany(FETCH_ROWS):
                for rs, block, kind, pairs, entries, hits in rows:
                    record_type, event_type = BLOCKS[block]
                    yield Cell(rs, record_type, event_type, kinds[kind], pairs, int(entries), int(hits))


def recordset_ranges(sizes: list[tuple[str, int]], cells: int) -> Iterator[tuple[str, str]]:
    """Consecutive ranges (first, last) of the recordsets, in order, of about `cells` cells each
    (a recordset of more is a range of its own)."""
    ranges: list[list[str]] = []
    held = 0
    for rs, size in sizes:
        if ranges and held + size <= cells:
            ranges[-1][1] = rs
            held += size
        else:
            ranges.append([rs, rs])
            held = size
    return ((first, last) for first, last in ranges)


class StreamTelemetrySource(PostgresTelemetrySource):
    """The day's rows read once and aggregated in DuckDB; listing days and fingerprints as the
    SQL source does."""

    def __init__(self, config: Config):
        super().__init__(config)
        self._copy_sql = COPY_SQL.format(**self._names)
        self._rules_rows_sql = RULES_ROWS_SQL.format(**self._names)

    @contextlib.contextmanager
    def read_day(self, harvest_date: date) -> Iterator[StreamTelemetryDay]:  # type: ignore[override]
        window = dict(zip(("start", "end"), event_window(harvest_date), strict=True))
        with (
            tempfile.TemporaryDirectory(prefix="idb-stats-day-") as work,
            contextlib.closing(self._engine(Path(work))) as engine,
        ):
            self._conn.set_session(isolation_level="REPEATABLE READ")
            try:
                with self._reading(f"reading the telemetry of {harvest_date}"), self._conn:
                    with self._conn.cursor() as cur:
                        cur.execute(fingerprint.SETTINGS)
                        cur.execute(self._fingerprint_sql, window)
                        day_fingerprint = fingerprint.from_row(cur.fetchone() or (0,) * 6)
                        name_phase(cur, "telemetry", f"copying the rows of {harvest_date}")
                        rows, left = self._aggregate(cur, engine, Path(work), window)
                        # In PostgreSQL, as the sql engine does: only counts leave it.
                        counter_day = self._counter(cur, "by-the-rules", window)
                        # Asked only of a day without rows, in its snapshot (two probes of the
                        # date index; a view without one may be read whole, so not for every day).
                        around = self._rows_around(cur, window, harvest_date) if rows == 0 else None
                    report = self._apply_rules(engine, window, left)
                    report.rows = rows
            finally:
                if not self._conn.closed:
                    self._conn.set_session(isolation_level="DEFAULT")
            for kind, accepted in engine.execute(ACCEPTED_SQL).fetchall():
                report.kinds[kind] = report.kinds.get(kind, 0) + int(accepted)
            geocodes = self._rank_tables(engine)
            queries = [
                key for (key,) in engine.execute("SELECT key FROM query_ranks ORDER BY rank").fetchall()
            ]
            publisher_views = [
                (p, geo, int(n)) for p, geo, n in engine.execute(PUBLISHER_VIEWS_SQL).fetchall()
            ]
            yield StreamTelemetryDay(
                report,
                day_fingerprint,
                geocodes,
                queries,
                publisher_views,
                counter_day,
                engine,
                (lambda: around) if around is not None else lambda: self._around_now(harvest_date),
            )

    def _around_now(self, harvest_date: date) -> tuple[bool, bool]:
        """Rows around a day that has rows (not asked by collect-stats), in a snapshot of now."""
        window = dict(zip(("start", "end"), event_window(harvest_date), strict=True))
        with self._conn, self._conn.cursor() as cur:
            return self._rows_around(cur, window, harvest_date)

    @staticmethod
    def _engine(work: Path) -> duckdb.DuckDBPyConnection:
        spill = work / "spill"
        spill.mkdir()
        # A database file, not memory: DuckDB compresses a table it writes there (the wide day's
        # 3.1 M cells take 33 MB, several times that in memory), so the cells stay within the
        # memory limit while their lists are built (4.6 s of CPU against 12.1 s in memory).
        return duckdb.connect(
            str(work / "day.duckdb"),
            config={
                "memory_limit": MEMORY_LIMIT,
                "temp_directory": str(spill),
                # One thread: the rows come through one FIFO, which DuckDB's CSV reader reads
                # sequentially, and a second thread's own hash tables only add a merge. Measured in
                # alternated pairs under load (issue 25): 17-26% less CPU on today's day, even to
                # mixed on the wide one, and 9-17 MB less peak RSS on both; the second core is
                # left to the COPY thread, the telemetry server and the store's writer.
                "threads": 1,
                # The lists' order is the ORDER BY's; nothing else needs an order kept.
                "preserve_insertion_order": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            },
        )

    def _aggregate(
        self, cur: Any, engine: duckdb.DuckDBPyConnection, work: Path, window: dict[str, Any]
    ) -> tuple[int, list[int]]:
        """The day's rows, through COPY into DuckDB's aggregation: the number of rows and the
        ids of those left to rules.py."""
        fifo = work / "rows.csv"
        os.mkfifo(fifo, 0o600)
        copy = _Copy(cur, cur.mogrify(self._copy_sql, window).decode(), fifo)
        thread = threading.Thread(target=copy.run, name="copy", daemon=True)
        thread.start()
        try:
            engine.execute(AGGREGATE_SQL.replace("$path", "'" + str(fifo).replace("'", "''") + "'"))
        except BaseException:
            # DuckDB stopped reading (or never started): a reader that opens and closes the FIFO
            # ends a writer blocked in open() or write() with a broken pipe.
            self._conn.cancel()
            while thread.is_alive():  # the writer may not have reached open() yet
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
                thread.join(0.1)
            raise
        thread.join()
        if copy.error is not None:
            raise copy.error
        counted = engine.execute(f"SELECT sum(entries) FROM cells WHERE kind = {ROW_COUNT}").fetchone()
        read = int(counted[0] or 0) if counted else 0
        if read + len(copy.too_long) != copy.rows:
            raise EngineError(
                f"the engine read {read} rows of the {copy.rows} the telemetry database sent; "
                'nothing was written for this day. Please report it; collect.engine = "sql" avoids it'
            )
        left = [
            int(key)
            for (key,) in engine.execute(f"SELECT key FROM cells WHERE kind = {LEFT_TO_RULES}").fetchall()
        ]
        return copy.rows, sorted(left + copy.too_long)

    def _apply_rules(
        self, engine: duckdb.DuckDBPyConnection, window: dict[str, Any], ids: list[int]
    ) -> SkipReport:
        """rules.py on the rows the engine left to it: the day's skip report, and the cells of
        those it accepts added into the engine's."""
        report = SkipReport()
        if not ids:
            return report
        extra: dict[tuple[int, str, int | None, str], list[int]] = {}
        block_of = {block: code for code, block in enumerate(BLOCKS)}
        kind_of = {"item": ITEM, "query": QUERY, "geo": GEO, rules.PUBLISHER_VIEW: PUBLISHER}
        with self._conn.cursor() as cur:
            for start in range(0, len(ids), RULES_BATCH):
                cur.execute(self._rules_rows_sql, {**window, "ids": ids[start : start + RULES_BATCH]})
                for row_id, event_type, record_type, query_hash, geo, payload, geo_key in cur:
                    row = rules.TelemetryRow(
                        row_id,
                        event_type,
                        record_type,
                        query_hash,
                        rules.load_json(geo),
                        rules.load_json(payload),
                    )
                    reason = rules.skip_reason(row)
                    if reason is not None:
                        skip = report.reasons.setdefault(reason, SkipReason())
                        skip.rows += 1
                        if len(skip.example_ids) < EXAMPLE_IDS:  # rows come in id order
                            skip.example_ids.append(row_id)
                        continue
                    report.kinds[record_type] = report.kinds.get(record_type, 0) + 1
                    for rs, rt, ty, kind, key, hits in rules.row_cells(row):
                        # The engine keys a geocode by its jsonb text; the rules by canonical JSON.
                        cell = (
                            kind_of[kind],
                            rs,
                            block_of.get((rt, ty)),  # none for a publisher's view
                            geo_key if kind in ("geo", rules.PUBLISHER_VIEW) else key,
                        )
                        slot = extra.setdefault(cell, [0, 0])
                        slot[0] += 1
                        slot[1] += hits
        if extra:
            self._add_cells(engine, extra)
        return report

    @staticmethod
    def _add_cells(
        engine: duckdb.DuckDBPyConnection, extra: dict[tuple[int, str, int | None, str], list[int]]
    ) -> None:
        """Cells from rules.py added to the engine's: the cells are grouped again (a day whose
        rows all went to rules.py is as slow as the row loop, and as exact)."""
        columns: list[list[Any]] = [[], [], [], [], [], []]
        for (kind, rs, block, key), (entries, hits) in extra.items():
            for column, value in zip(columns, (kind, rs, block, key, str(entries), str(hits)), strict=True):
                column.append(value)
        engine.execute(
            "CREATE TABLE rule_cells AS SELECT unnest($1::UTINYINT[]) AS kind, unnest($2::VARCHAR[]) AS rs, "
            "unnest($3::UTINYINT[]) AS block, unnest($4::VARCHAR[]) AS key, "
            "unnest($5::VARCHAR[])::HUGEINT AS entries, unnest($6::VARCHAR[])::HUGEINT AS hits",
            columns,
        )
        engine.execute(
            "CREATE TABLE regrouped AS SELECT kind, rs, block, key, sum(entries)::HUGEINT AS entries, "
            "sum(hits)::HUGEINT AS hits FROM (SELECT * FROM cells UNION ALL SELECT * FROM rule_cells) "
            "GROUP BY ALL"
        )
        engine.execute("DROP TABLE cells; DROP TABLE rule_cells; ALTER TABLE regrouped RENAME TO cells")

    @staticmethod
    def _rank_tables(engine: duckdb.DuckDBPyConnection) -> list[str]:
        """The day's query and geocode tables in the engine; returns the geocodes by rank."""
        engine.execute(QUERY_RANKS_SQL)
        texts = [
            key for (key,) in engine.execute(f"SELECT DISTINCT key FROM cells WHERE kind = {GEO}").fetchall()
        ]
        ranks, geocodes = geocode_table(texts)
        # Geocodes are grouped by their jsonb text, and with string values only (the rules skip
        # others) one jsonb value has one canonical JSON: two texts never share a rank.
        if len(geocodes) != len(texts):
            raise EngineError("two geocode texts of the day have one canonical form; please report it")
        engine.execute(
            "CREATE TABLE geocode_ranks AS SELECT unnest($1::VARCHAR[]) AS key, unnest($2::BIGINT[]) AS rank",
            [texts, ranks],
        )
        return geocodes
