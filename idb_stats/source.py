"""The PostgreSQL telemetry source: the aggregation rules pushed into one streamed query.

The rules (see model.py and README) are applied in SQL so a day is aggregated in roughly one
pass over its rows; Python only assembles the grouped result, one recordset at a time.
The source tables are only ever read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date

import psycopg2
import psycopg2.extensions

from .config import Config, redact
from .errors import SourceUnreachable
from .model import Cell, SkipReason, SkipReport, event_window

log = logging.getLogger(__name__)

EXAMPLE_IDS = 5

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

# One row per payload entry of an accepted row. view/seen: record uuid -> recordset uuid, one hit;
# search/mapping/download: recordset uuid -> hits. view adds no query breakdown.
ENTRIES_SQL = """
SELECT CASE WHEN s.type IN ('view', 'seen') THEN e.value #>> '{{}}' ELSE e.key END AS rs,
       s.record_type AS rt,
       s.type AS ty,
       CASE WHEN s.type IN ('view', 'seen') THEN e.key END AS item,
       CASE WHEN s.type <> 'view' THEN q.query_hash END AS qh,
       CASE WHEN jsonb_typeof(s.ip_geocode) = 'object' THEN s.ip_geocode ELSE '{{}}'::jsonb END AS geo,
       CASE WHEN s.type IN ('view', 'seen') THEN 1 ELSE (e.value)::bigint END AS n
FROM {stats} s
LEFT JOIN {queries} q ON q.id = s.query_id
CROSS JOIN LATERAL jsonb_each(s.payload) e
WHERE s.date >= %(start)s AND s.date < %(end)s AND ({reason}) IS NULL"""

CELLS_SQL = """
SELECT rs, rt, ty,
       CASE WHEN GROUPING(geo) = 0 THEN 'geo' WHEN GROUPING(item) = 0 THEN 'item' ELSE 'query' END,
       COALESCE(geo::text, item, qh),
       count(*),
       sum(n)::bigint
FROM ({entries}) entries
GROUP BY GROUPING SETS ((rs, rt, ty, geo), (rs, rt, ty, item), (rs, rt, ty, qh))
HAVING GROUPING(geo) = 0 OR (GROUPING(item) = 0 AND item IS NOT NULL) OR (GROUPING(qh) = 0 AND qh IS NOT NULL)
ORDER BY rs COLLATE "C"
"""

SKIPS_SQL = """
SELECT reason, count(*), (array_agg(id ORDER BY id) FILTER (WHERE reason IS NOT NULL))[1:{examples}]
FROM (SELECT s.id, {reason} AS reason FROM {stats} s WHERE s.date >= %(start)s AND s.date < %(end)s) r
GROUP BY reason"""

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


class PostgresTelemetrySource:
    def __init__(self, config: Config, itersize: int = 20_000):
        self._conn = connect(config.source_dsn, "telemetry")
        self._conn.set_session(readonly=True, autocommit=False)
        self._itersize = itersize
        names = {"stats": config.stats_table, "queries": config.queries_table, "reason": SKIP_REASON_SQL}
        entries = ENTRIES_SQL.format(**names)
        self._cells_sql = CELLS_SQL.format(entries=entries)
        self._skips_sql = SKIPS_SQL.format(examples=EXAMPLE_IDS, **names)
        self._dates_sql = HARVEST_DATES_SQL.format(**names)

    def _window(self, harvest_date: date) -> dict[str, date]:
        start, end = event_window(harvest_date)
        return {"start": start, "end": end}

    def skip_report(self, harvest_date: date) -> SkipReport:
        report = SkipReport()
        with self._conn, self._conn.cursor() as cur:
            cur.execute(self._skips_sql, self._window(harvest_date))
            for reason, rows, examples in cur:
                report.rows += rows
                if reason is not None:
                    report.reasons[reason] = SkipReason(rows, list(examples or []))
        return report

    def cells(self, harvest_date: date) -> Iterator[Cell]:
        with self._conn:
            with self._conn.cursor() as cur:
                # Enough memory for PostgreSQL to hash the grouping sets instead of sorting each.
                cur.execute("SET LOCAL work_mem = '256MB'")
            with self._conn.cursor(name=f"cells_{harvest_date:%Y%m%d}") as cur:
                cur.itersize = self._itersize
                cur.execute(self._cells_sql, self._window(harvest_date))
                make = Cell._make
                for row in cur:
                    yield make(row)

    def harvest_dates(self) -> list[date]:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(self._dates_sql)
            return [row[0] for row in cur]

    def close(self) -> None:
        self._conn.close()
